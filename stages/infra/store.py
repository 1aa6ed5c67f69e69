"""Where MLflow's store is, and whether this machine may log to it, checked before a stage does any work.

The store defaults to sqlite:///<repo>/mlflow.db, anchored at $DVC_ROOT: queued experiments run in a copy under
.dvc/tmp/exps/, and without the anchor their runs would land in that copy and be lost. MLFLOW_TRACKING_URI
overrides it (a team server, which may ask for a login). Nothing here imports mlflow but the creation of a new
mlflow.db: a refusal costs no import.
"""
import os
from pathlib import Path
from typing import NamedTuple

from stages.infra.config import ROOT
from stages.infra.errors import PipelineError, one_line

# Read once, at import: mlflow.set_tracking_uri() writes this variable itself, so a later look would always find it.
TEAM_SERVER = os.environ.get("MLFLOW_TRACKING_URI")


def store_root() -> Path:
    return Path(os.environ.get("DVC_ROOT", ROOT)).resolve()


def tracking_uri() -> str:
    if TEAM_SERVER:
        return TEAM_SERVER
    return f"sqlite:///{store_root() / 'mlflow.db'}"


def check_store(task: str | None = None) -> None:
    """Stop in one line, before a stage does any work, when the store cannot be used: MLflow itself retries an
    unreachable server for about four minutes and then raises a traceback. With `task`, the local store must also
    take that task's runs (mlflow.db, its folder, mlartifacts/<task> writable). On a server that asks for a login
    (docs/team.md), a missing or refused login stops here too, and with `task` so does a login that may not log
    runs to the task's experiment: MLflow would raise an HTTP 401/403 traceback only when the run starts."""
    uri = tracking_uri()
    if uri.startswith(("http://", "https://")):
        import urllib.error
        import urllib.request

        try:
            urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=5).close()
        except OSError as err:
            raise PipelineError(f"MLFLOW_TRACKING_URI={uri}: the tracking server does not answer ({one_line(err)}); "
                                "start it, or unset MLFLOW_TRACKING_URI to log to mlflow.db") from None
        # /health answers even when the server's database is down (and needs no login); one cheap query reaches
        # the backend store, and the login.
        login = _login()
        try:
            _ask(uri, "/api/2.0/mlflow/experiments/search?max_results=1", login, timeout=15)
        except urllib.error.HTTPError as err:
            if err.code == 401:
                raise PipelineError(_login_refused(uri, login)) from None
            if err.code >= 500:
                raise PipelineError(f"MLFLOW_TRACKING_URI={uri}: the tracking server cannot use its backend store "
                                    f"(HTTP {err.code}: {_server_message(err)}); check the server's database "
                                    "(e.g. PostgreSQL) and its log") from None
        except OSError as err:
            raise PipelineError(f"MLFLOW_TRACKING_URI={uri}: the tracking server does not answer a query "
                                f"({one_line(err)}); check the server and its database") from None
        if task:
            _check_can_log(uri, task, login)
    elif uri.startswith("sqlite:///"):
        _check_local_store(Path(uri[len("sqlite:///"):]), task)


def _check_local_store(path: Path, task: str | None) -> None:
    """mlflow.db must be a database and, for a stage that logs a task's runs, writable with its folder (sqlite
    needs both) and the task's artifact folder: MLflow would otherwise fail after training."""
    import sqlite3

    if task:
        for folder in (path.parent, path.parent / "mlartifacts" / task):
            writable_folder(folder, "the MLflow store")
    if task:  # also when mlflow.db exists: it may be another process's store still being made
        _create_local_store(path)
    if not path.exists() or path.stat().st_size == 0:
        return
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            db.execute("PRAGMA schema_version").fetchone()
    except sqlite3.DatabaseError as err:
        raise PipelineError(f"{path}: not a usable MLflow store ({err}); move it aside and a new one is made") from None
    if task:
        try:
            with sqlite3.connect(path, timeout=30) as db:
                db.execute("BEGIN IMMEDIATE")
                version = db.execute("PRAGMA user_version").fetchone()[0]
                db.execute(f"PRAGMA user_version = {version}")  # a write, rolled back: sqlite opens a read-only
                db.rollback()                                   # file without a word
        except sqlite3.OperationalError as err:
            raise PipelineError(f"{path}: cannot write the MLflow store ({err}); make it writable, or set "
                                "MLFLOW_TRACKING_URI to another store") from None


def _create_local_store(path: Path) -> None:
    """A new mlflow.db with MLflow's tables, made under a lock on its folder: queued experiments started together on
    a fresh clone would otherwise each run MLflow's schema migrations on the same file, and all but one fail
    (sqlite3.OperationalError: duplicate column name). The second process finds the tables and migrates nothing.
    Every stage that logs takes the lock, also when the file exists: one that found it half made and went on
    migrated it beside its maker (alembic: "expected to match one row", CI 2026-12-07); on a finished store the
    call only reads its schema version (0.03-0.2 s)."""
    import fcntl

    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    folder = os.open(path.parent, os.O_RDONLY)
    try:
        fcntl.flock(folder, fcntl.LOCK_EX)  # released when the descriptor closes
        SqlAlchemyStore(f"sqlite:///{path}", (path.parent / "mlartifacts").as_uri()).engine.dispose()
    finally:
        os.close(folder)


def writable_folder(folder: Path, what: str) -> None:
    """Make `folder` if needed and prove it takes a new file; else one line naming it."""
    import tempfile

    try:
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as err:
        raise PipelineError(f"{folder}: cannot write {what} there ({err.strerror}); make it writable") from None


CREDENTIALS_FILE = Path("~/.mlflow/credentials")
LOGIN_SETTINGS = "MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD (or ~/.mlflow/credentials)"


class Login(NamedTuple):
    user: str | None
    source: str  # where the login came from, for the message when it is refused
    header: str | None  # the Authorization header, None when no login is set


def _login() -> Login:
    """The login MLflow's client sends, found in its order: each of MLFLOW_TRACKING_USERNAME and
    MLFLOW_TRACKING_PASSWORD from the environment, else from ~/.mlflow/credentials ([mlflow] section), else
    MLFLOW_TRACKING_TOKEN. Read here rather than asked of mlflow: its import costs seconds."""
    import base64
    import configparser

    saved = configparser.ConfigParser()
    saved.read(CREDENTIALS_FILE.expanduser())
    section = saved["mlflow"] if saved.has_section("mlflow") else {}
    found = {}
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        found[name] = (os.environ.get(name), "the environment") if os.environ.get(name) else \
            (section.get(name.lower()), str(CREDENTIALS_FILE))
    (user, user_source), (password, password_source) = found.values()
    if user and password:
        source = user_source if user_source == password_source else f"{user_source} and {password_source}"
        return Login(user, source, "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
    if os.environ.get("MLFLOW_TRACKING_TOKEN"):
        return Login(None, "MLFLOW_TRACKING_TOKEN", f"Bearer {os.environ['MLFLOW_TRACKING_TOKEN']}")
    return Login(user, user_source, None)


def _ask(uri: str, path: str, login: Login, timeout: float = 15) -> dict:
    """One GET to the server with the login, its JSON answer ({} when the answer is not JSON)."""
    import json
    import urllib.request

    headers = {"Authorization": login.header} if login.header else {}
    request = urllib.request.Request(uri.rstrip("/") + path, headers=headers)
    with urllib.request.urlopen(request, timeout=timeout) as answer:
        try:
            return json.loads(answer.read())
        except ValueError:  # a server without the auth app answers its UI page for unknown paths
            return {}


def _login_refused(uri: str, login: Login) -> str:
    if not login.header:
        return (f"MLFLOW_TRACKING_URI={uri}: the tracking server asks for a login and none is set (HTTP 401); set "
                f"{LOGIN_SETTINGS}")
    who = f"user '{login.user}'" if login.user else "the token"
    return (f"MLFLOW_TRACKING_URI={uri}: the tracking server refused {who} from {login.source} (HTTP 401: wrong "
            f"username or password); check {LOGIN_SETTINGS}")


def _check_can_log(uri: str, task: str, login: Login) -> None:
    """Whether this login may log runs to the task's experiment, asked of the auth app without writing anything:
    the permission it resolves for the current user is the one it checks when a run is created."""
    import urllib.error
    from urllib.parse import quote

    try:
        me = _ask(uri, "/api/2.0/mlflow/users/current", login).get("user")
        if not me or me.get("is_admin"):  # no auth app (every client may log), or an admin (may do anything)
            return
        user = me["username"]
        try:
            experiment = _ask(uri, f"/api/2.0/mlflow/experiments/get-by-name?experiment_name={quote(task)}", login)
            resource = experiment["experiment"]["experiment_id"]
        except urllib.error.HTTPError as err:
            if err.code == 403:
                raise PipelineError(_cannot_log(uri, user, f"no access to experiment '{task}'")) from None
            if err.code != 404:
                raise
            resource = "*"  # not there yet: the stage would create it, and log under the user's team-wide grant
        permission = _ask(uri, f"/api/3.0/mlflow/users/permissions/get?username={quote(user)}"
                               f"&resource_type=experiment&resource_id={quote(resource)}", login)["permission"]
    except urllib.error.HTTPError as err:
        if err.code == 404:  # an auth app without these endpoints: leave the decision to the server
            return
        raise PipelineError(f"MLFLOW_TRACKING_URI={uri}: could not ask the tracking server whether this login may "
                            f"log runs (HTTP {err.code}: {_server_message(err)})") from None
    except OSError as err:
        raise PipelineError(f"MLFLOW_TRACKING_URI={uri}: the tracking server does not answer a query "
                            f"({one_line(err)}); check the server and its database") from None
    if permission not in ("EDIT", "MANAGE"):  # READ and USE may read runs, not create them
        where = f"experiment '{task}'" if resource != "*" else f"experiments (and '{task}' does not exist yet)"
        raise PipelineError(_cannot_log(uri, user, f"{permission} on {where}"))


def _cannot_log(uri: str, user: str, grant: str) -> str:
    return (f"MLFLOW_TRACKING_URI={uri}: user '{user}' has {grant}: it cannot log runs to that experiment; an admin "
            f"grants EDIT with `python tools/team_users.py {uri} writer {user}`, or log in as a writer with "
            "MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD")


def _server_message(err) -> str:
    """The message of an MLflow server's error answer, on one line and short (a database error can be pages)."""
    import json

    try:
        message = json.loads(err.read().decode("utf-8", "replace")).get("message", "")
    except Exception:  # noqa: BLE001 - not MLflow's JSON (a proxy's error page, a cut body)
        message = ""
    message = one_line(message or err.reason or "no message")
    return message if len(message) <= 200 else message[:197] + "..."
