"""Set up the users of an authenticated team server (mlflow server --app-name basic-auth; docs/team.md).

    python tools/team_users.py URI writer NAME   # NAME may log runs and register models in every experiment
    python tools/team_users.py URI viewer NAME   # NAME may read every run and load every model, and log nothing
    python tools/team_users.py URI admin         # replace the admin's own password (the one the server started with)

Run it as the admin: MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD (or ~/.mlflow/credentials), as for any
MLflow client. A new password is generated and printed once on stdout (or taken from TEAM_USER_PASSWORD when set):
it goes into a password manager, never into a file of the repo. Run again on an existing user, it changes only the
user's role (writer <-> viewer) and leaves the password alone. Bad input or a refused login: one line, exit 2.
"""
import os
import secrets
import sys
import warnings

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

# Grants on every experiment and registered model ("*"). The server's default_permission (NO_PERMISSIONS in
# docs/team.md) is what anyone else gets; MLflow gives whoever creates an experiment or model MANAGE on it.
ROLES = {"writer": "EDIT", "viewer": "READ"}
RESOURCES = ("experiment", "registered_model")
USAGE = "usage: python tools/team_users.py URI writer|viewer NAME  |  python tools/team_users.py URI admin"


def new_password() -> str:
    """TEAM_USER_PASSWORD when the team chose one, else 24 random characters (MLflow wants at least 12)."""
    return os.environ.get("TEAM_USER_PASSWORD") or secrets.token_urlsafe(18)


def user_exists(client, name: str) -> bool:
    from mlflow.exceptions import RestException

    try:
        client.get_user(name)
    except RestException as err:
        if err.error_code == "RESOURCE_DOES_NOT_EXIST":
            return False
        raise
    return True


def grant(client, name: str, permission: str) -> None:
    """Set NAME's grant on every experiment and registered model; an existing grant is replaced, not added to."""
    from mlflow.exceptions import RestException

    for resource in RESOURCES:
        try:
            client.grant_user_permission(name, resource, "*", permission)
        except RestException as err:
            if err.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            client.revoke_user_permission(name, resource, "*")
            client.grant_user_permission(name, resource, "*", permission)


def add_user(client, role: str, name: str) -> None:
    if user_exists(client, name):
        grant(client, name, ROLES[role])
        print(f"{name}: existing user, now {role} ({ROLES[role]} on every experiment and model); password unchanged")
        return
    password = new_password()
    client.create_user(name, password)
    grant(client, name, ROLES[role])
    print(f"{name}: {role} ({ROLES[role]} on every experiment and model); password: {password}")


def rotate_admin(client) -> None:
    """MLflow asks for the current password when users change their own: it is the one this client logs in with."""
    from mlflow.utils.credentials import read_mlflow_creds

    creds = read_mlflow_creds()
    password = new_password()
    client.update_user_password(creds.username, password, current_password=creds.password)
    print(f"{creds.username}: new password: {password} (update MLFLOW_TRACKING_PASSWORD or ~/.mlflow/credentials)")


def main(argv: list[str]) -> None:
    if not (len(argv) == 3 and argv[1] in ROLES or len(argv) == 2 and argv[1] == "admin"):
        raise SystemExit(USAGE)
    uri = argv[0].rstrip("/")
    check_reachable(uri)
    with warnings.catch_warnings():  # the auth app's import warns about Starlette internals: noise for a user
        warnings.simplefilter("ignore")
        from mlflow.exceptions import MlflowException
        from mlflow.server.auth.client import (
            AuthServiceClient,  # what get_app_client("basic-auth") loads
        )
        from mlflow.utils.credentials import read_mlflow_creds

    if not read_mlflow_creds().username:
        raise SystemExit(f"error: {uri}: no admin login; set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD "
                         "(or ~/.mlflow/credentials) to the admin's")
    client = AuthServiceClient(uri)
    try:
        rotate_admin(client) if argv[1] == "admin" else add_user(client, argv[1], argv[2])
    except MlflowException as err:
        raise SystemExit(f"error: {uri}: {describe(err)}") from None


def check_reachable(uri: str) -> None:
    """/health needs no login: a server that does not answer stops here in seconds, not after MLflow's retries."""
    import urllib.request

    try:
        urllib.request.urlopen(uri + "/health", timeout=5).close()
    except OSError as err:
        raise SystemExit(f"error: {uri}: the tracking server does not answer ({' '.join(str(err).split())})") from None


def describe(err) -> str:
    """MLflow's message on one line; a refused login gets the settings to fix instead of the server's HTML."""
    message = " ".join(str(err.message).split())
    if "401" in message or "not authenticated" in message:
        return ("the admin login was refused (HTTP 401); check MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD "
                "(or ~/.mlflow/credentials)")
    if "403" in message or "PERMISSION_DENIED" in message:
        return "this login is not an admin (HTTP 403); run as the admin user"
    return message if len(message) <= 300 else message[:297] + "..."


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except SystemExit as stop:  # one line on stderr, exit 2, like the stages
        if isinstance(stop.code, str):
            print(stop.code, file=sys.stderr)
            sys.exit(2)
        raise
