"""Team set-up against real servers, started here on 127.0.0.1 (random free ports, temp dirs) and stopped after:

- PostgreSQL (Debian's package; a throwaway cluster made by initdb, run as the `postgres` user when we are root),
- an S3-compatible server (moto in server mode, with its IAM checks on: a wrong key is refused; production uses
  real S3 or MinIO),
- `mlflow server --app-name basic-auth` on them: runs and users in PostgreSQL, artifacts proxied to
  s3://team/mlflow; tools/team_users.py makes a writer (who runs the stages) and a viewer.

In a temp copy of the repo reduced to the passengers task (tiny epochs, one seed), the real `dvc repro` logs to
that server; the DVC remote is s3://team/dvc on the same S3 server. The stages get MLFLOW_TRACKING_URI and no
S3 credentials (the server proxies artifacts); only DVC and the bucket listing get them.
Tests run in file order: the failure modes stop the servers, so they come last. docs/team.md has the timings.
"""
import csv
import glob
import hashlib
import io
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.e2e import copy_project, only_passengers

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
BUCKET = "team"
TARGET = "log@passengers"  # the reduced pipeline: check, download, preprocess, baseline, train, evaluate, plot, log
MODELS = ("rnn", "lstm", "gru")
# Filled in by the s3 fixture with the access key of the IAM user that moto checks every request against.
S3_KEYS = {"AWS_DEFAULT_REGION": "us-east-1"}
# MLflow's client downloads large artifacts from S3 by URLs the server presigns; moto's IAM checks cannot verify
# such URLs (KeyError on the Authorization header), so in the tests every download goes through the server.
NO_PRESIGNED_DOWNLOADS = {"MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD": "false"}
ADMIN_PASSWORD = "team-admin-" + secrets.token_hex(8)  # the set-up's admin password (MLflow ships none)
pytestmark = [pytest.mark.team, pytest.mark.e2e]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(**extra) -> dict:
    """This interpreter's env without any tracking URI or cloud credentials from the machine, plus `extra`."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AWS_", "MLFLOW_TRACKING_", "MLFLOW_S3_")) and k not in ("DVC_ROOT", "DVC_EXP_NAME")}
    env |= {"MLFLOW_DISABLE_TELEMETRY": "true", "DVC_NO_ANALYTICS": "1", "PATH": f"{BIN}:{os.environ['PATH']}",
            **NO_PRESIGNED_DOWNLOADS,
            "GIT_AUTHOR_NAME": "team", "GIT_AUTHOR_EMAIL": "team@example.com",
            "GIT_COMMITTER_NAME": "team", "GIT_COMMITTER_EMAIL": "team@example.com"}
    return env | extra


def run(cmd, cwd, env, check=True, timeout=900):
    done = subprocess.run(cmd, cwd=cwd, env=env, shell=isinstance(cmd, str), capture_output=True, text=True,
                          timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"{cmd} failed ({done.returncode}):\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
    return done


def wait_for(url: str, proc: subprocess.Popen, log: Path, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{proc.args[:2]} exited ({proc.returncode}):\n{log.read_text()[-4000:]}")
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"{url} did not answer in {seconds} s:\n{log.read_text()[-4000:]}")


def stop(proc: subprocess.Popen) -> None:
    """The server and its workers: each server is started in a session of its own, so its group is all of them."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=15)
            time.sleep(0.5)  # the workers exit after their parent
        except subprocess.TimeoutExpired:
            continue


def pg_program(name: str) -> str | None:
    """Debian keeps initdb and pg_ctl off PATH, in /usr/lib/postgresql/<version>/bin."""
    versions = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(Path(p).parts[-3]))
    return shutil.which(name) or (versions[-1] if versions else None)


class Postgres:
    """A throwaway cluster; as root it runs as the `postgres` user (PostgreSQL refuses to run as root)."""

    def __init__(self):
        self.initdb, self.pg_ctl = pg_program("initdb"), pg_program("pg_ctl")
        if not (self.initdb and self.pg_ctl):
            pytest.skip("PostgreSQL is not installed (no initdb/pg_ctl on PATH or in /usr/lib/postgresql/*/bin): "
                        "apt-get install -y postgresql, as .ci/run does")
        self.base = Path(tempfile.mkdtemp(prefix="team-pg-"))  # not pytest's tmp: that is private to root
        self.as_user = []
        if os.geteuid() == 0:
            try:
                user = pwd.getpwnam("postgres")
            except KeyError:
                pytest.skip("running as root and there is no `postgres` user to run PostgreSQL as")
            os.chown(self.base, user.pw_uid, user.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self.data, self.port = self.base / "data", free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/mlflow"
        self.pg(self.initdb, "-D", self.data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "-N")

    def pg(self, *args):
        done = subprocess.run(self.as_user + [str(a) for a in args], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise AssertionError(f"{args[:2]} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")

    def start(self):
        self.pg(self.pg_ctl, "-D", self.data, "-l", self.base / "log", "-w", "-t", "60", "start",
                "-o", f"-p {self.port} -h 127.0.0.1 -k {self.base} -c fsync=off -c full_page_writes=off")

    def stop(self):
        self.pg(self.pg_ctl, "-D", self.data, "-m", "fast", "-w", "stop")

    def query(self, sql: str, dbname: str = "mlflow"):
        import psycopg

        db = psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", dbname=dbname, autocommit=True)
        try:
            with db.cursor() as cursor:
                cursor.execute(sql)
                return cursor.fetchall() if cursor.description else None
        finally:
            db.close()


@pytest.fixture(scope="module")
def postgres():
    server = Postgres()
    server.start()
    server.query("CREATE DATABASE mlflow", dbname="postgres")
    server.query("CREATE DATABASE mlflow_auth", dbname="postgres")  # the auth app's users and grants
    yield server
    subprocess.run(server.as_user + [server.pg_ctl, "-D", str(server.data), "-m", "immediate", "stop"],
                   capture_output=True)
    shutil.rmtree(server.base, ignore_errors=True)


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """moto's S3 in server mode with its IAM checks on; yields its endpoint URL, with the bucket made and S3_KEYS
    holding the key of an IAM user allowed s3:*."""
    port, log = free_port(), tmp_path_factory.mktemp("s3") / "moto.log"
    with log.open("w") as out:
        proc = subprocess.Popen([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], stdout=out,
                                stderr=subprocess.STDOUT, env=clean_env(),
                                start_new_session=True)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_for(endpoint + "/moto-api/", proc, log, 60)
        S3_KEYS.update(iam_user_key(endpoint))
        bucket_client(endpoint).create_bucket(Bucket=BUCKET)
        yield endpoint
    finally:
        stop(proc)


def iam_user_key(endpoint: str) -> dict:
    """Make an IAM user allowed s3:* and its access key, then switch moto's IAM checks on: from then on every
    request must be signed with a key moto issued, and be allowed by its user's policy."""
    import boto3

    iam = boto3.client("iam", endpoint_url=endpoint, aws_access_key_id="setup", aws_secret_access_key="setup",
                       region_name="us-east-1")
    iam.create_user(UserName="team")
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
    iam.put_user_policy(UserName="team", PolicyName="s3", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName="team")["AccessKey"]
    # moto's INITIAL_NO_AUTH_ACTION_COUNT, set at run time: 0 unauthenticated requests from now on
    urllib.request.urlopen(urllib.request.Request(endpoint + "/moto-api/reset-auth", data=b"0",
                                                  headers={"Content-Type": "text/plain"}), timeout=10).close()
    return {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}


def bucket_client(endpoint: str):
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=S3_KEYS["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=S3_KEYS["AWS_SECRET_ACCESS_KEY"], region_name="us-east-1")


AUTH_INI = """[mlflow]
default_permission = NO_PERMISSIONS
database_uri = {database_uri}
admin_username = admin
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
"""


class MlflowServer:
    """docs/team.md's server: the basic-auth app with its users in PostgreSQL, nothing readable without a login,
    only its own Host header and origin accepted."""

    def __init__(self, postgres: Postgres, s3: str, log: Path):
        self.port, self.log = free_port(), log
        self.uri = f"http://127.0.0.1:{self.port}"
        ini = log.parent / "basic_auth.ini"
        ini.write_text(AUTH_INI.format(database_uri=postgres.url.rsplit("/", 1)[0] + "/mlflow_auth"))
        self.cmd = [str(BIN / "mlflow"), "server", "--app-name", "basic-auth", "--backend-store-uri", postgres.url,
                    "--artifacts-destination", f"s3://{BUCKET}/mlflow", "--host", "127.0.0.1",
                    "--port", str(self.port), "--workers", "2", "--allowed-hosts", f"127.0.0.1:{self.port}",
                    "--cors-allowed-origins", self.uri]
        self.env = clean_env(MLFLOW_S3_ENDPOINT_URL=s3, MLFLOW_AUTH_CONFIG_PATH=str(ini),
                             MLFLOW_AUTH_ADMIN_PASSWORD=ADMIN_PASSWORD,
                             MLFLOW_FLASK_SERVER_SECRET_KEY=secrets.token_hex(32), **S3_KEYS)
        with log.open("w") as out:
            self.proc = subprocess.Popen(self.cmd, stdout=out, stderr=subprocess.STDOUT, env=self.env,
                                         start_new_session=True)
        wait_for(self.uri + "/health", self.proc, log, 180)  # the first start creates MLflow's tables

    def stop(self):
        stop(self.proc)


@pytest.fixture(scope="module")
def mlflow_server(postgres, s3, tmp_path_factory):
    server = MlflowServer(postgres, s3, tmp_path_factory.mktemp("mlflow") / "server.log")
    yield server
    server.stop()


def reduce_params(params: dict) -> dict:
    """Only passengers, its three models, two epochs, one seed: the team tests exercise the plumbing."""
    params = only_passengers(params)
    params["passengers"]["models"] = list(MODELS)
    params["passengers"]["train"] |= {"epochs": 2, "patience": 1, "seeds": 1}
    return params


@pytest.fixture(scope="module")
def team(tmp_path_factory, mlflow_server, s3):
    """A git repo with a bare `origin`, the DVC remote s3://team/dvc, after one `dvc repro` logged to the server
    and `dvc push`. Yields a namespace with the paths, the envs and the servers."""
    top = tmp_path_factory.mktemp("team")
    repo, origin = top / "repo", top / "origin.git"
    copy_project(repo)
    (repo / "dvc.lock").unlink()  # the lock of the full pipeline: not this one's
    params = reduce_params(yaml.safe_load((repo / "params.yaml").read_text()))
    (repo / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True, sort_keys=False))
    users = set_up_users(mlflow_server.uri)
    # The stages log as the writer, and hold no S3 credentials: artifacts go via the server.
    stage_env = clean_env(MLFLOW_TRACKING_URI=mlflow_server.uri, **login_env(*users["writer"]))
    dvc_env = clean_env(**S3_KEYS)  # DVC talks to S3 itself (here: for the other clones, which have no config.local)
    run(f"git init -q -b main && git add -A && git commit -qm tiny && git init -q --bare -b main {origin} "
        f"&& git remote add origin {origin}", repo, dvc_env)
    run(f"dvc remote add -d storage s3://{BUCKET}/dvc && dvc remote modify storage endpointurl {s3} "
        "&& git add .dvc/config && git commit -qm 'DVC remote on S3'", repo, dvc_env)
    # This clone's keys go to .dvc/config.local, which DVC's own .dvc/.gitignore keeps out of git (docs/team.md).
    run(f"dvc remote modify --local storage access_key_id {S3_KEYS['AWS_ACCESS_KEY_ID']} && dvc remote modify "
        f"--local storage secret_access_key {S3_KEYS['AWS_SECRET_ACCESS_KEY']}", repo, clean_env())
    started = time.perf_counter()
    run(["dvc", "repro", TARGET], repo, stage_env)
    print(f"\n[team] dvc repro {TARGET} against the server: {time.perf_counter() - started:.1f} s")
    run("git add -A && git commit -qm 'tiny run' && git push -q origin main", repo, dvc_env)
    run(["dvc", "push"], repo, clean_env())  # no keys in the environment: .dvc/config.local's
    return type("Team", (), dict(repo=repo, origin=origin, top=top, stage_env=stage_env, dvc_env=dvc_env,
                                 server=mlflow_server, s3=s3, users=users))


def login_env(user: str, password: str) -> dict:
    return {"MLFLOW_TRACKING_USERNAME": user, "MLFLOW_TRACKING_PASSWORD": password}


def team_users(uri: str, *args, password: str = ADMIN_PASSWORD, check=True):
    return run([sys.executable, str(ROOT / "tools/team_users.py"), uri, *args], ROOT,
               clean_env(**login_env("admin", password)), check=check, timeout=120)


def set_up_users(uri: str) -> dict:
    """docs/team.md's set-up step: the admin (whose password the server was started with) adds a writer and a
    viewer; each new password is printed once."""
    users = {}
    for role, name in (("writer", "wendy"), ("viewer", "victor")):
        line = team_users(uri, role, name).stdout.strip()
        assert line.startswith(f"{name}: {role} ") and "password: " in line, line
        users[role] = (name, line.rsplit("password: ", 1)[1])
    return users


@pytest.fixture(scope="module", autouse=True)
def global_tracking_uri(team):
    """MLflow resolves a run's logged models (runs:/<id>/model) through the global tracking URI, whatever the
    client's own: without this it would open ./mlflow.db of the current directory."""
    import mlflow

    mlflow.set_tracking_uri(team.server.uri)
    os.environ.update(login_env(*team.users["writer"]) | NO_PRESIGNED_DOWNLOADS)  # MLflow reads them per request
    yield
    mlflow.set_tracking_uri(None)
    for name in login_env("", "") | NO_PRESIGNED_DOWNLOADS:
        os.environ.pop(name, None)


def server_runs(uri: str, name_prefix: str = ""):
    import mlflow

    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("passengers")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    return client, [r for r in runs if r.info.run_name.startswith(name_prefix)]


def test_every_run_is_logged_to_the_server_with_params_curves_metrics_figures_and_model(team):
    client, runs = server_runs(team.server.uri)
    assert sorted(r.info.run_name for r in runs) == sorted(f"workspace-{m}" for m in MODELS)
    for r in runs:
        assert r.info.status == "FINISHED"
        assert r.info.artifact_uri.startswith("mlflow-artifacts:")  # proxied: the stages hold no S3 credentials
        assert r.data.params["passengers.train.lr"] == "0.01" and r.data.params["passengers.train.epochs"] == "2"
        assert len(client.get_metric_history(r.info.run_id, "val_loss")) >= 1
        assert {"test_rmse", "test_mae", "best_val_loss"} <= set(r.data.metrics)
        figures = [a.path for a in client.list_artifacts(r.info.run_id, "figures")]
        assert any(p.endswith(".png") for p in figures) and "figures/passengers.md" in figures
        assert "model/MLmodel" in [a.path for a in client.list_artifacts(r.info.run_id, "model")]
    print(f"\n[team] runs logged by dvc repro: {len(runs)}")


def test_artifacts_land_in_the_bucket(team):
    keys = [o["Key"] for page in bucket_client(team.s3).get_paginator("list_objects_v2").paginate(
        Bucket=BUCKET, Prefix="mlflow/") for o in page.get("Contents", [])]
    assert sum(k.endswith("/MLmodel") for k in keys) == len(MODELS)  # MLflow 3: <exp>/models/<model id>/artifacts
    assert sum(k.endswith(".png") and "/figures/" in k for k in keys) >= len(MODELS)
    print(f"\n[team] objects under s3://{BUCKET}/mlflow/: {len(keys)}")


def test_a_model_loads_back_through_the_server(team):
    import mlflow

    _, runs = server_runs(team.server.uri, "workspace-lstm")
    assert mlflow.get_tracking_uri() == team.server.uri  # no S3 credentials here: the server proxies the download
    model = mlflow.pyfunc.load_model(logged_model_uri(runs[0]))
    months = np.tile(np.linspace(300.0, 420.0, 25), (2, 1))  # 25 monthly counts, in thousands, per forecast
    assert model.predict(months).shape == (2,)


def test_the_champion_is_registered_on_the_server_and_loads_by_its_alias(team):
    """log@passengers, run by the writer, registers the model chosen on validation in PostgreSQL's registry; a
    client loads it by name and alias, knowing no run id."""
    import json

    import mlflow

    from stages.infra.files import content_sha256

    client = mlflow.MlflowClient(team.server.uri)
    chosen = json.loads((team.repo / "metrics/summary/passengers.json").read_text())["passengers"]["chosen"]
    champion = client.get_model_version_by_alias("passengers", "champion")
    checkpoint = content_sha256(team.repo / f"models/passengers/{chosen['model']}.pt")
    assert champion.tags["checkpoint_sha256"] == checkpoint and champion.tags["dvc_experiment"] == "workspace"
    assert champion.run_id == server_runs(team.server.uri, f"workspace-{chosen['model']}")[1][0].info.run_id
    months = np.tile(np.linspace(300.0, 420.0, 25), (2, 1))
    assert mlflow.pyfunc.load_model("models:/passengers@champion").predict(months).shape == (2,)
    again = run(["dvc", "repro", "-s", "-f", TARGET], team.repo, team.stage_env).stdout
    assert f"already version {champion.version}" in again  # the same checkpoint: no new version on the server
    assert len(client.search_model_versions("name = 'passengers'")) == 1


def logged_model_uri(run) -> str:
    """models:/<id>, not runs:/<id>/model: with proxied downloads only (NO_PRESIGNED_DOWNLOADS) MLflow first asks
    for a run artifact `model`, which the server answers with HTTP 500 (S3's 404), and retries for minutes."""
    return f"models:/{run.outputs.model_outputs[0].model_id}"


def digests(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for sub in ("data", "models") for p in sorted((folder / sub).rglob("*")) if p.is_file()}


def test_dvc_pull_in_a_fresh_clone_restores_data_and_models_byte_identical(team):
    clone = team.top / "clone"
    run(["git", "clone", "-q", str(team.origin), str(clone)], team.top, team.dvc_env)
    assert not (clone / "models/passengers/lstm.pt").exists()
    run(["dvc", "pull", "--with-deps", TARGET], clone, team.dvc_env)  # the reduced pipeline never ran transfer
    here, there = digests(team.repo), digests(clone)
    assert {"models/passengers/lstm.pt", "data/prepared/passengers/data.npz"} <= set(here)
    assert there == here
    dvc_objects = bucket_client(team.s3).list_objects_v2(Bucket=BUCKET, Prefix="dvc/")["KeyCount"]
    print(f"\n[team] files under data/ and models/ byte-identical after dvc pull: {len(here)} "
          f"({dvc_objects} objects under s3://{BUCKET}/dvc/)")


def test_two_queued_experiments_run_in_parallel_lose_no_run(team, dvc_queue):
    lrs = {"lr-a": "0.005", "lr-b": "0.02"}
    for name, lr in lrs.items():
        run(["dvc", "exp", "run", "--queue", "-n", name, "-S", f"passengers.train.lr={lr}", TARGET], team.repo,
            team.stage_env)
    started = time.perf_counter()
    status = dvc_queue(team.repo, team.stage_env, workers=2, deadline_s=600, logs=[team.server.log])
    print(f"\n[team] two queued experiments, -j 2: {time.perf_counter() - started:.1f} s")
    assert status.count("Success") == 2, status + run(["dvc", "queue", "logs", "lr-a"], team.repo, team.stage_env,
                                                      check=False).stdout[-3000:]
    _, runs = server_runs(team.server.uri)
    for name, lr in lrs.items():
        mine = [r for r in runs if r.info.run_name.startswith(f"{name}-")]
        assert sorted(r.info.run_name for r in mine) == sorted(f"{name}-{m}" for m in MODELS)
        for r in mine:
            assert r.info.status == "FINISHED" and r.data.params["passengers.train.lr"] == lr
            assert "test_rmse" in r.data.metrics
    assert len(runs) == 3 * len(MODELS)
    assert len(server_runs(team.server.uri)[0].search_model_versions("name = 'passengers'")) == 1  # candidates only
    shown = run(["dvc", "exp", "show", "--csv"], team.repo, team.stage_env).stdout
    assert "lr-a" in shown and "lr-b" in shown
    print(f"[team] runs on the server after the parallel queue: {len(runs)}, all FINISHED with test_rmse")


def test_exp_push_and_pull_share_the_experiment_with_another_clone(team):
    run(["dvc", "exp", "push", "origin", "lr-a"], team.repo, team.dvc_env)
    other = team.top / "other"
    run(["git", "clone", "-q", str(team.origin), str(other)], team.top, team.dvc_env)
    run(["dvc", "exp", "pull", "origin", "lr-a"], other, team.dvc_env)
    theirs, mine = (exp_row(folder, "lr-a", team.dvc_env) for folder in (other, team.repo))
    assert theirs["passengers.train.lr"] == "0.005" and theirs == mine  # same commit, params and metrics
    # its models came with it: every model its dvc.lock names is in the other clone's cache (dvc exp apply works)
    lock = yaml.safe_load(run(["git", "show", f"{theirs['rev']}:dvc.lock"], other, team.dvc_env).stdout)
    cache = other / ".dvc/cache/files/md5"
    listing = lock["stages"]["train@passengers"]["outs"][0]["md5"]  # models/passengers, a folder: <md5>.dir
    entries = json.loads((cache / listing[:2] / listing[2:]).read_text())
    assert sorted(e["relpath"] for e in entries) == sorted(f"{m}.pt" for m in MODELS)
    assert all((cache / e["md5"][:2] / e["md5"][2:]).is_file() for e in entries)


def test_an_optuna_study_on_the_team_postgresql_is_swept_by_two_clones_and_shared_through_the_remotes(team, postgres):
    """README "Scale out": two workers of tools/optuna_sweep.py, each in a clone of its own (two machines in
    practice), join one study in the team's PostgreSQL; each trial is a `dvc exp run` logged to the team server
    and pushed to the Git and DVC remotes (`--push origin`), so either clone can apply the winner."""
    import optuna

    postgres.query("CREATE DATABASE optuna", dbname="postgres")
    storage = postgres.url.rsplit("/", 1)[0] + "/optuna"
    other = team.top / "sweeper"  # the second machine: a clone of origin, its own DVC keys, `dvc pull`
    run(["git", "clone", "-q", str(team.origin), str(other)], team.top, team.dvc_env)
    run(f"dvc remote modify --local storage access_key_id {S3_KEYS['AWS_ACCESS_KEY_ID']} && dvc remote modify "
        f"--local storage secret_access_key {S3_KEYS['AWS_SECRET_ACCESS_KEY']} && dvc pull -q", other, clean_env())
    sweep = [sys.executable, "tools/optuna_sweep.py", "run", "--study", "team-lr", "--storage", storage,
             "--task", "passengers", "--trials", "4", "--push", "origin",
             "--space", "passengers.train.lr=log:0.001:0.03", "--space", "passengers.model.hidden_size=int:4:16"]
    env = team.stage_env | {"OMP_NUM_THREADS": "1"}
    workers = [subprocess.Popen(sweep, cwd=clone, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for clone in (team.repo, other)]
    said = [w.communicate(timeout=1200)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], [s[-3000:] for s in said]
    study = optuna.load_study(study_name="team-lr", storage=storage)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(study.trials) == len(done) == 8, [t.state for t in study.trials]
    names = {t.user_attrs["experiment"] for t in done}
    assert names == {f"team-lr-{i}" for i in range(8)}
    pushed = run(["git", "ls-remote", str(team.origin), "refs/exps/*"], team.top, team.dvc_env).stdout
    assert {line.rsplit("/", 1)[-1] for line in pushed.split()[1::2]} >= names  # every trial in the Git remote
    _, runs = server_runs(team.server.uri, "team-lr-")
    assert len(runs) == 8 * len(MODELS) and all(r.info.status == "FINISHED" and "test_rmse" in r.data.metrics
                                                for r in runs)
    assert {r.data.tags["optuna_study"] for r in runs} == {"team-lr"}
    assert {r.data.tags["optuna_trial"] for r in runs} == {str(t.number) for t in done}
    best = study.best_trial.user_attrs["experiment"]  # chosen on validation, made by either clone
    third = team.top / "third"
    run(["git", "clone", "-q", str(team.origin), str(third)], team.top, team.dvc_env)
    run(["dvc", "exp", "pull", "origin", best], third, team.dvc_env)
    assert float(exp_row(third, best, team.dvc_env)["passengers.chosen.val_rmse"]) == study.best_value


def exp_row(repo: Path, name: str, env: dict) -> dict:
    """An experiment's row of `dvc exp show --csv`, less what belongs to the machine that ran it and `typ`, how the
    row relates to that clone's checked-out branch (branch_base in one clone, branch_commit in another)."""
    rows = csv.DictReader(io.StringIO(run(["dvc", "exp", "show", "--csv"], repo, env).stdout))
    row = next(r for r in rows if r["Experiment"] == name)
    return {k: v for k, v in row.items() if k not in ("Created", "State", "Executor", "typ")}


# Who may do what on the authenticated server: the set-up step, the refusals, credentials kept out of git.

def http_status(uri: str, path: str, login: tuple | None = None, data: dict | None = None, **headers) -> int:
    """The HTTP status of one request (a POST when `data` is given), with a basic-auth login or none."""
    import base64

    if login:
        headers["Authorization"] = "Basic " + base64.b64encode(":".join(login).encode()).decode()
    body = json.dumps(data).encode() if data is not None else None
    request = urllib.request.Request(uri + path, data=body, headers={"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status
    except urllib.error.HTTPError as err:
        return err.code


def check_store_cmd(task: str = "passengers") -> list:
    """check_store alone, wrapped as a stage wraps it (one line on stderr, exit 2): no stage's name, they change."""
    code = ("from stages.infra import store; from stages.infra.errors import run_stage; "
            "run_stage(lambda argv: store.check_store(*argv), 'python -m stages.check <task>')")
    return [sys.executable, "-c", code, task]


def refusal(team, env: dict) -> str:
    started = time.perf_counter()
    done = run(check_store_cmd(), team.repo, env, check=False, timeout=120)
    seconds = time.perf_counter() - started
    line = one_line_error(done)
    assert seconds < 5, f"{seconds:.1f} s: {line}"
    print(f"\n[team] refused in {seconds:.1f} s: {line}")
    return line


def run_count(postgres) -> int:
    return postgres.query("SELECT count(*) FROM runs")[0][0]


SEARCH = "/api/2.0/mlflow/experiments/search?max_results=1"


def test_the_set_up_leaves_no_default_password_and_gives_each_user_its_grant(team):
    from mlflow.server.auth.client import AuthServiceClient

    uri = team.server.uri
    assert http_status(uri, SEARCH) == 401
    assert http_status(uri, SEARCH, ("admin", "password1234")) == 401  # older MLflow's default admin password
    assert http_status(uri, SEARCH, ("admin", ADMIN_PASSWORD)) == 200
    for name, password in team.users.values():
        assert http_status(uri, SEARCH, (name, password)) == 200
    os.environ.update(login_env("admin", ADMIN_PASSWORD))
    try:
        admin = AuthServiceClient(uri)
        granted = {role: admin.get_user_permission(name, "experiment", "*").permission
                   for role, (name, _) in team.users.items()}
    finally:
        os.environ.update(login_env(*team.users["writer"]))
    assert granted == {"writer": "EDIT", "viewer": "READ"}
    # Run again, the step changes the role only; run as a non-admin or with a wrong password, it says so in a line.
    again = team_users(uri, "viewer", "victor").stdout
    assert "existing user, now viewer" in again and "password unchanged" in again
    for password in ("wrong-password", team.users["viewer"][1]):
        done = team_users(uri, "writer", "mallory", password=password, check=False)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    # The admin's own password, replaced (and back, for the tests after this one).
    new = "team-admin-rotated-" + secrets.token_hex(4)
    run([sys.executable, str(ROOT / "tools/team_users.py"), uri, "admin"], ROOT,
        clean_env(TEAM_USER_PASSWORD=new, **login_env("admin", ADMIN_PASSWORD)))
    assert http_status(uri, SEARCH, ("admin", ADMIN_PASSWORD)) == 401
    assert http_status(uri, SEARCH, ("admin", new)) == 200
    run([sys.executable, str(ROOT / "tools/team_users.py"), uri, "admin"], ROOT,
        clean_env(TEAM_USER_PASSWORD=ADMIN_PASSWORD, **login_env("admin", new)))


def test_anonymous_and_wrong_logins_are_refused_in_one_line_before_any_work(team, postgres, tmp_path):
    uri, before = team.server.uri, run_count(postgres)
    experiment = server_runs(uri)[1][0].info.experiment_id
    assert http_status(uri, "/api/2.0/mlflow/runs/create", data={"experiment_id": experiment}) == 401
    assert http_status(uri, SEARCH, ("wendy", "wrong-password")) == 401
    home = tmp_path / "home"  # the machine's ~/.mlflow/credentials stays out of it
    anonymous = clean_env(MLFLOW_TRACKING_URI=uri, HOME=str(home))
    line = refusal(team, anonymous)
    assert "asks for a login and none is set" in line and "MLFLOW_TRACKING_USERNAME" in line
    line = refusal(team, anonymous | login_env("wendy", "wrong-password"))
    assert "refused user 'wendy' from the environment" in line and "MLFLOW_TRACKING_PASSWORD" in line
    # The same from ~/.mlflow/credentials, MLflow's other place for a login; with the right password it passes.
    (home / ".mlflow").mkdir(parents=True)
    credentials = home / ".mlflow/credentials"
    credentials.write_text("[mlflow]\nmlflow_tracking_username = wendy\nmlflow_tracking_password = wrong-password\n")
    assert "from ~/.mlflow/credentials" in refusal(team, anonymous)
    credentials.write_text(f"[mlflow]\nmlflow_tracking_username = wendy\n"
                           f"mlflow_tracking_password = {team.users['writer'][1]}\n")
    run(check_store_cmd(), team.repo, anonymous)
    assert run_count(postgres) == before


def test_the_viewer_reads_runs_and_loads_a_model_but_cannot_log(team, postgres, monkeypatch):
    import mlflow
    from mlflow.exceptions import MlflowException

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", team.users["viewer"][0])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", team.users["viewer"][1])
    client, runs = server_runs(team.server.uri, "workspace-")
    assert len(runs) == len(MODELS) and all("test_rmse" in r.data.metrics for r in runs)
    lstm = next(r for r in runs if r.info.run_name == "workspace-lstm")
    model = mlflow.pyfunc.load_model(logged_model_uri(lstm))
    assert model.predict(np.tile(np.linspace(300.0, 420.0, 25), (2, 1))).shape == (2,)
    before = run_count(postgres)
    for write in (lambda: client.create_run(lstm.info.experiment_id),
                  lambda: client.log_metric(lstm.info.run_id, "viewer_was_here", 1.0),
                  lambda: client.set_tag(lstm.info.run_id, "viewer", "yes")):
        with pytest.raises(MlflowException, match="403"):
            write()
    assert run_count(postgres) == before
    assert "viewer_was_here" not in client.get_run(lstm.info.run_id).data.metrics
    line = refusal(team, clean_env(MLFLOW_TRACKING_URI=team.server.uri, **login_env(*team.users["viewer"])))
    assert "user 'victor' has READ on experiment 'passengers': it cannot log runs to that experiment" in line


def test_a_foreign_host_header_or_origin_is_refused(team):
    writer = team.users["writer"]
    assert http_status(team.server.uri, SEARCH, writer, Host="mlflow.attacker.example") == 403  # DNS rebinding
    assert http_status(team.server.uri, "/api/2.0/mlflow/experiments/create", writer, data={"name": "cors"},
                       Origin="https://attacker.example") == 403
    assert http_status(team.server.uri, SEARCH, writer, Origin=team.server.uri) == 200


def test_no_tracked_file_of_a_configured_clone_holds_a_key_or_password(team):
    secret_values = [S3_KEYS["AWS_ACCESS_KEY_ID"], S3_KEYS["AWS_SECRET_ACCESS_KEY"], ADMIN_PASSWORD,
                     *(password for _, password in team.users.values())]
    assert S3_KEYS["AWS_SECRET_ACCESS_KEY"] in (team.repo / ".dvc/config.local").read_text()  # configured
    env = clean_env()
    # The local files a team machine holds credentials in are ignored by git.
    (team.repo / ".mlflow").mkdir(exist_ok=True)
    for name in (".dvc/config.local", "basic_auth.ini", ".env", ".mlflow/credentials"):
        (team.repo / name).write_text((team.repo / name).read_text() if (team.repo / name).exists() else "secret")
        assert run(["git", "check-ignore", "-q", name], team.repo, env, check=False).returncode == 0, name
    tracked = run(["git", "ls-files", "-z"], team.repo, env).stdout.split("\0")
    holding = [name for name in tracked if name and (team.repo / name).is_file()
               and any(value.encode() in (team.repo / name).read_bytes() for value in secret_values)]
    assert holding == []
    history = run(["git", "log", "-p", "--all"], team.origin, env).stdout  # what was pushed, every commit
    assert not any(value in history for value in secret_values)
    print(f"\n[team] tracked files checked for {len(secret_values)} keys and passwords: {len(tracked) - 1}, none")


# Failure modes: one line each, fast. They stop servers, so they run last (file order).

def one_line_error(done) -> str:
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), done.stderr[-3000:]
    return lines[0]


def test_dvc_push_to_an_unreachable_remote_fails(team):
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    run(f"dvc remote add --local dead s3://{BUCKET}/dvc && dvc remote modify --local dead endpointurl {dead}",
        team.repo, team.dvc_env)
    started = time.perf_counter()
    done = run(["dvc", "push", "-r", "dead"], team.repo, team.dvc_env, check=False, timeout=300)
    seconds = time.perf_counter() - started
    assert done.returncode != 0 and ("ERROR" in done.stderr or "ERROR" in done.stdout), done.stdout + done.stderr
    print(f"\n[team] dvc push to an unreachable S3 endpoint: exit {done.returncode} in {seconds:.1f} s")


def test_dvc_push_with_a_wrong_key_is_refused_in_one_line_and_a_later_push_completes(team):
    keys, env = S3_KEYS, clean_env()  # no keys in the environment: each try has its own in .dvc/config.local
    run(f"dvc remote add --local keyed s3://{BUCKET}/dvc-keyed && dvc remote modify --local keyed endpointurl "
        f"{team.s3}", team.repo, env)
    # S3 names the refusal in the body; a HEAD request has none, so DVC may only say "Forbidden" (403).
    wrong = ((keys["AWS_ACCESS_KEY_ID"], "wrong-secret", ("SignatureDoesNotMatch", "Forbidden")),
             ("AKIAWRONGWRONGWRONG0", keys["AWS_SECRET_ACCESS_KEY"], ("InvalidAccessKeyId", "Forbidden")))
    for key_id, secret, refusal_names in wrong:
        run(f"dvc remote modify --local keyed access_key_id {key_id} && dvc remote modify --local keyed "
            f"secret_access_key {secret}", team.repo, env)
        started = time.perf_counter()
        done = run(["dvc", "push", "-r", "keyed"], team.repo, env, check=False, timeout=300)
        seconds = time.perf_counter() - started
        errors = [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("ERROR")]
        assert done.returncode != 0 and len(errors) == 1, done.stdout + done.stderr
        assert any(name in errors[0] for name in refusal_names), errors[0]
        print(f"\n[team] dvc push with a wrong key: exit {done.returncode} in {seconds:.1f} s: {errors[0][:160]}")
    listed = bucket_client(team.s3).list_objects_v2(Bucket=BUCKET, Prefix="dvc-keyed/")
    assert listed["KeyCount"] == 0  # refused before any upload: nothing half there
    run(f"dvc remote modify --local keyed access_key_id {keys['AWS_ACCESS_KEY_ID']} && dvc remote modify --local "
        f"keyed secret_access_key {keys['AWS_SECRET_ACCESS_KEY']}", team.repo, env)
    run(["dvc", "push", "-r", "keyed"], team.repo, env)
    status = run(["dvc", "status", "-c", "-r", "keyed"], team.repo, env).stdout
    assert "in sync" in status, status
    pushed = bucket_client(team.s3).list_objects_v2(Bucket=BUCKET, Prefix="dvc-keyed/")["KeyCount"]
    assert pushed > 0
    print(f"[team] then the right key: {pushed} objects pushed, cache and remote in sync")


def test_postgres_down_fails_the_stage_in_one_line_and_logs_nothing(team, postgres):
    before = postgres.query("SELECT count(*) FROM runs")[0][0]
    postgres.stop()
    try:
        started = time.perf_counter()
        done = run([sys.executable, "-m", "stages.train", "passengers"], team.repo, team.stage_env,
                   check=False, timeout=300)
        seconds = time.perf_counter() - started
    finally:
        postgres.start()
    line = one_line_error(done)
    assert f"MLFLOW_TRACKING_URI={team.server.uri}: the tracking server cannot use its backend store" in line
    assert seconds < 60
    assert postgres.query("SELECT count(*) FROM runs")[0][0] == before
    assert postgres.query("SELECT count(*) FROM runs WHERE status <> 'FINISHED'")[0][0] == 0
    print(f"\n[team] PostgreSQL down: exit 2 in {seconds:.1f} s: {line}")


def test_an_unreachable_tracking_server_fails_the_stage_in_seconds(team):
    team.server.stop()
    started = time.perf_counter()
    done = run([sys.executable, "-m", "stages.train", "passengers"], team.repo, team.stage_env,
               check=False, timeout=300)
    seconds = time.perf_counter() - started
    line = one_line_error(done)
    assert f"MLFLOW_TRACKING_URI={team.server.uri}: the tracking server does not answer" in line
    assert seconds < 60
    print(f"\n[team] tracking server stopped: exit 2 in {seconds:.1f} s: {line}")
