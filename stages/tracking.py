"""MLflow tracking: where the store is, how runs are named and tagged. Only stage main()s call this module.

The store defaults to sqlite:///<repo>/mlflow.db, anchored at $DVC_ROOT: queued experiments run in a copy under
.dvc/tmp/exps/, and without the anchor their runs would land in that copy and be lost. MLFLOW_TRACKING_URI
overrides it (a team server).
"""
import logging
import os
import socket
import subprocess
from contextlib import contextmanager
from pathlib import Path

from stages.config import ROOT
from stages.errors import PipelineError, one_line

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# Read once, at import: mlflow.set_tracking_uri() writes this variable itself, so a later look would always find it.
TEAM_SERVER = os.environ.get("MLFLOW_TRACKING_URI")


def _store_root() -> Path:
    return Path(os.environ.get("DVC_ROOT", ROOT)).resolve()


def tracking_uri() -> str:
    if TEAM_SERVER:
        return TEAM_SERVER
    return f"sqlite:///{_store_root() / 'mlflow.db'}"


def check_store() -> None:
    """Stop in one line, before a stage does any work, when the store cannot be used: MLflow itself retries an
    unreachable server for about four minutes and then raises a traceback."""
    uri = tracking_uri()
    if uri.startswith(("http://", "https://")):
        import urllib.error
        import urllib.request

        try:
            urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=5).close()
        except OSError as err:
            raise PipelineError(f"MLFLOW_TRACKING_URI={uri}: the tracking server does not answer ({one_line(err)}); "
                                "start it, or unset MLFLOW_TRACKING_URI to log to mlflow.db") from None
        # /health answers even when the server's database is down; one cheap query reaches the backend store.
        try:
            urllib.request.urlopen(uri.rstrip("/") + "/api/2.0/mlflow/experiments/search?max_results=1",
                                   timeout=15).close()
        except urllib.error.HTTPError as err:
            if err.code >= 500:
                raise PipelineError(f"MLFLOW_TRACKING_URI={uri}: the tracking server cannot use its backend store "
                                    f"(HTTP {err.code}: {_server_message(err)}); check the server's database "
                                    "(e.g. PostgreSQL) and its log") from None
        except OSError as err:
            raise PipelineError(f"MLFLOW_TRACKING_URI={uri}: the tracking server does not answer a query "
                                f"({one_line(err)}); check the server and its database") from None
    elif uri.startswith("sqlite:///"):
        path = Path(uri[len("sqlite:///"):])
        if path.exists() and path.stat().st_size > 0:
            import sqlite3

            try:
                with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
                    db.execute("PRAGMA schema_version").fetchone()
            except sqlite3.DatabaseError as err:
                raise PipelineError(f"{path}: not a usable MLflow store ({err}); move it aside and a new one "
                                    "is made") from None


def _server_message(err) -> str:
    """The message of an MLflow server's error answer, on one line and short (a database error can be pages)."""
    import json

    try:
        message = json.loads(err.read().decode("utf-8", "replace")).get("message", "")
    except Exception:  # not MLflow's JSON (a proxy's error page, a cut body)
        message = ""
    message = one_line(message or err.reason or "no message")
    return message if len(message) <= 200 else message[:197] + "..."


def _use_experiment(mlflow, task: str) -> None:
    """Select the task's experiment. With the local store its artifacts go to <repo>/mlartifacts/<task>: MLflow's
    default (./mlruns of the current directory) would put a queued experiment's models in its temp copy."""
    if mlflow.get_experiment_by_name(task) is None:
        # A team server picks the artifact location itself (proxied: mlflow-artifacts:/, so stages need no S3
        # credentials).
        location = None if TEAM_SERVER else (_store_root() / "mlartifacts" / task).as_uri()
        try:
            mlflow.create_experiment(task, artifact_location=location)
        except mlflow.exceptions.MlflowException:  # a parallel queue worker created it first
            pass
    mlflow.set_experiment(task)


def _git_commit() -> str:
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    except OSError:  # no git on this machine
        return "unknown"
    return done.stdout.strip() if done.returncode == 0 else "unknown"


def _flatten(prefix: str, value) -> dict:
    if hasattr(value, "__dataclass_fields__"):
        value = {k: getattr(value, k) for k in value.__dataclass_fields__}
    if isinstance(value, dict):
        return {k: v for key, sub in value.items() for k, v in _flatten(f"{prefix}.{key}", sub).items()}
    return {prefix: value}


def _mlflow():
    import mlflow  # imported here: it costs ~2.5 s, and only stages that track pay for it

    mlflow.set_tracking_uri(tracking_uri())
    return mlflow


@contextmanager
def start_run(task: str, model: str, stage: str, params: dict, parent_run_id: str | None = None):
    """One MLflow run per trained model, in the task's experiment, named after the DVC experiment and model."""
    mlflow = _mlflow()
    _use_experiment(mlflow, task)
    name = f"{os.environ.get('DVC_EXP_NAME', 'workspace')}-{model}"
    _close_abandoned_runs(mlflow, task, stage)
    tags = {"git_commit": _git_commit(), "dvc_stage": stage, "task": task, "model": model,
            "host": socket.gethostname(), "pid": str(os.getpid())}
    if parent_run_id:
        tags["mlflow.parentRunId"] = parent_run_id
    with mlflow.start_run(run_name=name, tags=tags) as run:
        mlflow.log_params({k: v for key, value in params.items() for k, v in _flatten(key, value).items()})
        yield run


def _close_abandoned_runs(mlflow, task: str, stage: str) -> None:
    """Mark KILLED the RUNNING runs of this stage whose process on this machine is gone (killed by a signal or
    the OOM killer, it could not end its run), so the UI shows no phantom runs."""
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(task)
    running = client.search_runs([experiment.experiment_id],
                                 f"tags.dvc_stage = '{stage}' and attributes.status = 'RUNNING'")
    for run in running:
        tags = run.data.tags
        if tags.get("host") == socket.gethostname() and tags.get("pid", "").isdigit() and not _alive(int(tags["pid"])):
            client.set_terminated(run.info.run_id, status="KILLED")
            print(f"MLflow run {run.info.run_id} of {stage} was left RUNNING by a process that is gone: marked KILLED")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


@contextmanager
def resume_run(run_id: str | None):
    """Reopen the training run to add test metrics and figures; a run missing from this store gets a warning."""
    mlflow = _mlflow()
    try:
        mlflow.get_run(run_id)
    except Exception:
        print(f"warning: MLflow run {run_id} is not in {tracking_uri()}; not logging to MLflow")
        yield None
        return
    with mlflow.start_run(run_id=run_id) as run:
        yield run


def log_epoch(stats: dict, prefix: str = "") -> None:
    _mlflow().log_metrics({prefix + k: v for k, v in stats.items() if k != "epoch"}, step=stats["epoch"])


def log_metrics(metrics: dict, prefix: str = "") -> None:
    """Numbers only; nested dicts (per-class precision) become `precision.<class>`."""
    flat = {k.lstrip("."): v for key, value in metrics.items() for k, v in _flatten(f".{key}", value).items()}
    _mlflow().log_metrics({prefix + k: float(v) for k, v in flat.items() if isinstance(v, (int, float))})


def log_artifacts(paths: list[Path], folder: str = "figures") -> None:
    mlflow = _mlflow()
    for path in paths:
        mlflow.log_artifact(str(path), artifact_path=folder)


def log_training(model, best: dict, input_example) -> None:
    """What a finished training run adds: its best epoch and validation loss, and the model (best weights)."""
    log_metrics({"best_epoch": best["epoch"], "best_val_loss": best["val_loss"]})
    log_model(model, input_example=input_example)


def log_model(model, input_example) -> None:
    """Log the model so mlflow.pyfunc.load_model() can load it; pinned requirements skip a slow inference step."""
    import mlflow.pytorch
    import torch

    # pickle, not MLflow's default pt2: torch.export costs about 2 s more per model (3.3 s against 1.3 s for CNN2,
    # measured 2026-11-24), and the pickle's classes ship beside it (code_paths). MLflow warns about pickle on every
    # call; the loader is ourselves, so the warning is dropped rather than printed 15 times per `dvc repro`.
    logging.getLogger("mlflow.pytorch").addFilter(lambda record: "by Pickle or CloudPickle" not in record.getMessage())
    mlflow.pytorch.log_model(model.cpu().eval(), name="model", input_example=input_example,
                             serialization_format="pickle", code_paths=[str(ROOT / "stages")],
                             pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"])
