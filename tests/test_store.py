"""stages/infra/store.py: a store this machine cannot use stops a stage before any work, in one line naming it (an
unreachable server, a corrupt or unwritable mlflow.db, an unwritable folder)."""
import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest

from stages.infra import store, tracking
from stages.infra.errors import PipelineError

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_tracking_server_fails_in_seconds_naming_the_variable(monkeypatch):
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setattr(store, "TEAM_SERVER", uri)
    started = time.perf_counter()
    with pytest.raises(PipelineError, match=rf"MLFLOW_TRACKING_URI={uri}: the tracking server does not answer"):
        store.check_store()
    assert time.perf_counter() - started < 10


def test_a_corrupt_mlflow_db_is_one_line_naming_it(tmp_path, monkeypatch):
    (tmp_path / "mlflow.db").write_bytes(b"this is not sqlite" * 100)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.setattr(store, "TEAM_SERVER", None)
    with pytest.raises(PipelineError, match=r"mlflow\.db: not a usable MLflow store"):
        store.check_store()


@contextlib.contextmanager
def read_only(path: Path):
    """`path` unwritable even for root (CI runs as root): the immutable flag where the filesystem has it, else
    the mode bits (enough for other users)."""
    if os.geteuid() == 0:
        if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
            pytest.skip(f"chattr +i does not work on {path}'s filesystem")
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", str(path)], check=True)
    else:
        mode = path.stat().st_mode
        path.chmod(mode & ~0o222)
        try:
            yield
        finally:
            path.chmod(mode)


@pytest.mark.parametrize("target", ["mlflow.db", "mlartifacts/passengers", "."])
def test_an_unwritable_store_stops_the_stage_before_training(tmp_path, monkeypatch, target):
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.setattr(store, "TEAM_SERVER", None)
    with tracking.start_run("passengers", "lstm", "train@passengers", {}):
        pass  # makes mlflow.db and the experiment
    mlflow.set_tracking_uri(None)
    (tmp_path / "mlartifacts" / "passengers").mkdir(parents=True, exist_ok=True)
    store.check_store("passengers")  # writable: passes
    with read_only(tmp_path / target), pytest.raises(PipelineError, match=r"cannot write the MLflow store"):
        store.check_store("passengers")


def test_an_unwritable_checkpoint_folder_is_named(tmp_path):
    folder = tmp_path / "models" / "passengers"
    folder.mkdir(parents=True)
    with read_only(folder), pytest.raises(PipelineError, match=rf"{folder}: cannot write checkpoints"):
        store.writable_folder(folder, "checkpoints and histories")


# What a queue worker's train stage does first, with MLflow imported before an agreed start time so that the
# processes reach the new store together (imports take seconds and would spread them out).
AT_ONCE = """
import sys, time
import mlflow.store.tracking.sqlalchemy_store
from stages.infra import store, tracking
time.sleep(max(0, float(sys.argv[2]) - time.time()))
store.check_store("passengers")
with tracking.start_run("passengers", sys.argv[1], "train@passengers", {}):
    pass
"""


def test_experiments_that_start_together_on_a_fresh_clone_share_one_new_store(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"} | {"DVC_ROOT": str(tmp_path)}
    start = str(time.time() + 8)
    procs = [subprocess.Popen([sys.executable, "-c", AT_ONCE, model, start], cwd=ROOT, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for model in ("rnn", "lstm", "gru")]
    outputs = [proc.communicate(timeout=120)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0, 0], "\n".join(out[-1500:] for out in outputs)
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("passengers").experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["workspace-gru", "workspace-lstm", "workspace-rnn"]


# A stage that finds mlflow.db while another process still makes it: prints "checking", then joins the store.
HALF_MADE = """
import sys
import mlflow.store.tracking.sqlalchemy_store
from stages.infra import store, tracking
print("checking", flush=True)
store.check_store("passengers")
with tracking.start_run("passengers", "lstm", "train@passengers", {}):
    pass
"""


def test_a_store_another_process_is_still_making_is_waited_for(tmp_path):
    """The CI failure of 2026-12-07: a process that found mlflow.db half made (its maker still migrating under the
    lock) went on and migrated it too. Now every logging stage takes the lock: it waits for the maker."""
    import fcntl
    import sqlite3

    sqlite3.connect(tmp_path / "mlflow.db").execute("CREATE TABLE half_made (x)").connection.close()  # size > 0
    folder = os.open(tmp_path, os.O_RDONLY)
    fcntl.flock(folder, fcntl.LOCK_EX)  # the maker's lock (stages/infra/store.py _create_local_store)
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"} | {"DVC_ROOT": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-c", HALF_MADE], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert proc.stdout.readline().strip() == "checking"
        time.sleep(3)
        assert proc.poll() is None  # waiting at the lock, not migrating beside its holder
    finally:
        os.close(folder)  # the maker is done
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 0, out[-2000:]
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert [r.info.run_name for r in client.search_runs([client.get_experiment_by_name("passengers").experiment_id])] == [
        "workspace-lstm"]
