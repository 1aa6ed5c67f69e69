"""Bad input and broken surroundings end in one line that names the file or param, fast, and leave nothing
behind: a task-first slip in params.yaml, an unreachable tracking server, a corrupt store, a killed run."""
import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest
import yaml

from stages import series, store, tracking
from stages.config import ROOT, load_params
from stages.errors import PipelineError
from stages.files import content_sha256, load_arrays, load_checkpoint


def test_a_top_level_stage_key_says_keys_are_task_first(tmp_path):
    raw = yaml.safe_load((ROOT / "params.yaml").read_text()) | {"train": {"lr": 0.01}}  # `dvc exp run -S +train.lr=0.01`
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(PipelineError, match=r"unknown top-level key train: keys are task-first, <task>\.train\.<key> "
                                            r"\(e\.g\. passengers\.train.*tasks: passengers, temperature"):
        load_params(tmp_path / "params.yaml")


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


def test_a_run_left_running_by_a_killed_process_is_marked_killed(tmp_path, monkeypatch):
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.setattr(store, "TEAM_SERVER", None)
    with tracking.start_run("passengers", "lstm", "train@passengers", {}):
        pass  # creates the experiment
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # its pid now names no process
    client = mlflow.MlflowClient(store.tracking_uri())
    experiment = client.get_experiment_by_name("passengers")
    abandoned = client.create_run(experiment.experiment_id, tags={
        "dvc_stage": "train@passengers", "host": socket.gethostname(), "pid": str(dead.pid)})
    other = client.create_run(experiment.experiment_id, tags={  # another stage's, of a gone process: closed too
        "dvc_stage": "scratch", "host": socket.gethostname(), "pid": str(dead.pid)})
    alive = client.create_run(experiment.experiment_id, tags={  # a process still running: kept
        "dvc_stage": "train@passengers", "host": socket.gethostname(), "pid": str(os.getpid())})
    with tracking.start_run("passengers", "lstm", "train@passengers", {}):
        pass
    mlflow.set_tracking_uri(None)
    assert client.get_run(abandoned.info.run_id).info.status == "KILLED"
    assert client.get_run(other.info.run_id).info.status == "KILLED"
    assert client.get_run(alive.info.run_id).info.status == "RUNNING"


def test_a_header_only_series_csv_names_the_file(tmp_path):
    path = tmp_path / "airline-passengers.csv"
    path.write_text("Month,Passengers\n")
    with pytest.raises(PipelineError, match=rf"{path}: no data rows"):
        series.read_series(path, "passengers")


def test_corrupt_checkpoint_and_arrays_do_not_advise_unsafe_loading(tmp_path):
    (tmp_path / "m.pt").write_bytes(b"garbage")
    (tmp_path / "d.npz").write_bytes(b"garbage")
    for load, name in ((load_checkpoint, "m.pt"), (load_arrays, "d.npz")):
        with pytest.raises(PipelineError) as caught:
            load(tmp_path / name)
        message = str(caught.value)
        assert message.startswith(f"{tmp_path / name}: corrupt") and "weights_only" not in message
        assert "allow_pickle" not in message


@pytest.mark.parametrize("argv, message", [
    (["generate", "passengers"], "error: generate continues text; passengers is a series task\n"),
    (["interpolate", "temperature"], "error: interpolate mixes language models; temperature is a series task\n"),
    (["evaluate", "foo"], "error: unknown task 'foo' (known: passengers, temperature, digits, flowers, transfer, text)\n"),
])
def test_stage_called_with_the_wrong_task_says_so_in_one_line(argv, message, tmp_path):
    env = os.environ | {"DVC_ROOT": str(tmp_path), "MLFLOW_DISABLE_TELEMETRY": "true"}
    env.pop("MLFLOW_TRACKING_URI", None)
    done = subprocess.run([sys.executable, "-m", f"stages.{argv[0]}", *argv[1:]], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr == message


def test_every_prepared_series_keeps_its_transform_in_meta():
    """invert() needs log and differences from meta.json: preprocess writes them (a tiny series here)."""
    values = np.arange(1.0, 41.0)
    cfg = load_params().passengers.preprocess
    _, meta = series.windows(values, cfg, "passengers")
    assert meta["log"] == cfg.log and meta["differences"] == list(cfg.differences)


@pytest.mark.parametrize("task", ["passengers", "temperature", "digits", "transfer", "text"])
def test_the_bundled_sources_write_exactly_the_pinned_data(task, tmp_path, monkeypatch):
    """preprocess refuses raw data whose digest differs from the pin: the pin must be what download writes."""
    from stages import download, paths
    from stages.preprocess import BUNDLED_SHA256

    monkeypatch.chdir(tmp_path)
    paths.raw_file(task).parent.mkdir(parents=True)
    download.BUNDLED[task](paths.raw_file(task))
    assert content_sha256(paths.raw(task)) == BUNDLED_SHA256[task]


def test_content_digest_of_gzip_files_ignores_how_they_were_compressed(tmp_path):
    import gzip

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "x.gz").write_bytes(gzip.compress(b"digits" * 100, compresslevel=9, mtime=0))
    (tmp_path / "b" / "x.gz").write_bytes(gzip.compress(b"digits" * 100, compresslevel=1, mtime=123))
    assert content_sha256(tmp_path / "a") == content_sha256(tmp_path / "b")
    (tmp_path / "b" / "x.gz").write_bytes(gzip.compress(b"digits" * 99))
    assert content_sha256(tmp_path / "a") != content_sha256(tmp_path / "b")


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
