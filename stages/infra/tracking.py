"""MLflow tracking: how runs are named, tagged, logged and promoted. Only stage main()s call this module; where
the store is and whether this machine may use it is stages/infra/store.py.
"""
import logging
import os
import socket
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

from stages.infra import store
from stages.infra.config import ROOT
from stages.infra.errors import PipelineError, one_line

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a bar per logged model: noise in stage logs


def _use_experiment(mlflow, task: str) -> None:
    """Select the task's experiment. With the local store its artifacts go to <repo>/mlartifacts/<task>: MLflow's
    default (./mlruns of the current directory) would put a queued experiment's models in its temp copy."""
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(task)
    if experiment is None:
        # A team server picks the artifact location itself (proxied: mlflow-artifacts:/, so stages need no S3
        # credentials).
        location = None if store.TEAM_SERVER else (store.store_root() / "mlartifacts" / task).as_uri()
        try:
            client.create_experiment(task, artifact_location=location)
        except mlflow.exceptions.MlflowException:  # a parallel queue worker created it first
            pass
        experiment = client.get_experiment_by_name(task)
    # What the experiment is (MLflow 3's kinds: this is model training, not GenAI) and a description, set once:
    # a description edited in the UI stays.
    for key, value in ((EXPERIMENT_KIND, "custom_model_development"), ("mlflow.note.content", EXPERIMENT_NOTE)):
        if key not in experiment.tags:
            client.set_experiment_tag(experiment.experiment_id, key, value)
    if not store.TEAM_SERVER:  # a shared server's Default experiment is its users' business
        _drop_empty_default(client)
    mlflow.set_experiment(task)


EXPERIMENT_KIND = "mlflow.experimentKind"
EXPERIMENT_NOTE = ("One run per trained model, named after the DVC experiment and the model (workspace-lstm): "
                   "params, per-epoch curves, test_* metrics (added by evaluate), figures and a model that serves "
                   "real units. Headline test metric: test_rmse (forecasts), test_accuracy (images), "
                   "test_perplexity (text): add it with Columns.")


def _drop_empty_default(client) -> None:
    """A new store starts with an experiment `Default` that the pipeline never uses: the UI would open on it."""
    try:
        default = client.get_experiment("0")
    except Exception:  # noqa: BLE001 - a server whose store has no experiment 0
        return
    if default.name == "Default" and default.lifecycle_stage == "active" and not client.search_runs(["0"], max_results=1):
        client.delete_experiment("0")


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
    import mlflow  # imported here: only stages that track pay for its import (docs/speed.md)

    mlflow.set_tracking_uri(store.tracking_uri())
    return mlflow


def dvc_experiment() -> str:
    """The DVC experiment this stage runs in (`dvc exp run` and the queue's workers set DVC_EXP_NAME), or
    `workspace` under a plain `dvc repro`."""
    return os.environ.get("DVC_EXP_NAME", "workspace")


_muted = {"muted": False}


def mute() -> None:
    """Log nothing from this process: a data-parallel worker other than global rank 0 (stages/infra/launch.py).
    start_run then opens no run, and the log_* functions of a training run do nothing."""
    _muted["muted"] = True


@contextmanager
def start_run(task: str, model: str, stage: str, params: dict, parent_run_id: str | None = None):
    """One MLflow run per trained model, in the task's experiment, named after the DVC experiment and model."""
    if _muted["muted"]:
        yield None
        return
    mlflow = _mlflow()
    _use_experiment(mlflow, task)
    name = f"{dvc_experiment()}-{model}"
    close_abandoned_runs()
    tags = {"git_commit": _git_commit(), "dvc_stage": stage, "dvc_experiment": dvc_experiment(), "task": task,
            "model": model, "host": socket.gethostname(), "pid": str(os.getpid())}
    if parent_run_id:
        tags["mlflow.parentRunId"] = parent_run_id
    if os.environ.get("OPTUNA_STUDY"):  # a trial of tools/optuna_sweep.py
        tags |= {"optuna_study": os.environ["OPTUNA_STUDY"], "optuna_trial": os.environ.get("OPTUNA_TRIAL", "")}
    with mlflow.start_run(run_name=name, tags=tags) as run:
        mlflow.log_params({k: v for key, value in params.items() for k, v in _flatten(key, value).items()})
        _epochs["flushed"] = time.time()
        try:
            yield run
        finally:
            _flush_epochs()  # the curves so far, even when training failed: they show where it went wrong


def close_abandoned_runs() -> None:
    """Mark KILLED the RUNNING runs, of any stage and task, whose process on this machine is gone (killed by a
    signal or the OOM killer, it could not end its run), so the UI shows no phantom runs."""
    client = _mlflow().MlflowClient()
    experiments = [e.experiment_id for e in client.search_experiments()]
    running = client.search_runs(experiments, "attributes.status = 'RUNNING'") if experiments else []
    for run in running:
        tags = run.data.tags
        if tags.get("host") == socket.gethostname() and tags.get("pid", "").isdigit() and not _alive(int(tags["pid"])):
            client.set_terminated(run.info.run_id, status="KILLED")
            print(f"MLflow run {run.info.run_id} ({tags.get('dvc_stage')}) was left RUNNING by a process that is gone: "
                  "marked KILLED")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def training_run(task: str, checkpoint: Path) -> str | None:
    """The id of the newest training run that wrote this checkpoint (found by its content hash, which
    log_training tags), or None with a warning when this store has none (a checkpoint from `dvc pull`).
    Inside a DVC experiment, a run of that experiment comes first: experiments that run at once can write the same checkpoint (a
    hybrid that keeps its untrained start), and each must add its numbers to its own run."""
    from stages.infra.files import content_sha256

    client = _mlflow().MlflowClient()
    experiment = client.get_experiment_by_name(task)
    digest = content_sha256(checkpoint)
    runs = []
    inside = [f" and tags.dvc_experiment = '{dvc_experiment()}'"] if "DVC_EXP_NAME" in os.environ else []
    for where in (*inside, ""):  # in the workspace (a winner applied, a fresh clone): the newest run
        if experiment is not None and not runs:
            runs = client.search_runs([experiment.experiment_id], f"tags.checkpoint_sha256 = '{digest}'{where}",
                                      max_results=1, order_by=["start_time DESC"])
    if not runs:
        print(f"warning: no MLflow run in {store.tracking_uri()} wrote {checkpoint}; not logging to MLflow")
        return None
    return runs[0].info.run_id


def add_to_run(run_id: str, metrics: dict | None = None, prefix: str = "", artifacts: list[Path] = (),
               folder: str = "figures") -> None:
    """Add test metrics or figures to a finished run without reopening it: reopening would move its end time,
    and the UI would show evaluation and plotting as training time."""
    from mlflow.entities import Metric

    client = _mlflow().MlflowClient()
    now = int(time.time() * 1000)
    flat = _numbers(metrics or {})
    client.log_batch(run_id, metrics=[Metric(prefix + k, v, now, 0) for k, v in flat.items()])
    for path in artifacts:
        client.log_artifact(run_id, str(path), artifact_path=folder)


# Per-epoch metrics wait here and go to the store in one batch every FLUSH_SECONDS, and when the run ends: one
# write per epoch cost more than the epochs of a small model (a sqlite transaction each; an HTTP call each on a
# team server), while a slow model's curves still appear in the UI as it trains.
FLUSH_SECONDS = 5.0
_epochs = {"metrics": [], "flushed": 0.0}


def log_epoch(stats: dict, prefix: str = "") -> None:
    if _muted["muted"]:
        return
    from mlflow.entities import Metric

    now = time.time()
    _epochs["metrics"] += [Metric(prefix + k, float(v), int(now * 1000), stats["epoch"])
                           for k, v in stats.items() if k != "epoch"]
    if now - _epochs["flushed"] >= FLUSH_SECONDS:
        _flush_epochs()


def _flush_epochs() -> None:
    metrics, _epochs["metrics"], _epochs["flushed"] = _epochs["metrics"], [], time.time()
    if not metrics:
        return
    mlflow = _mlflow()
    run_id = mlflow.active_run().info.run_id
    for start in range(0, len(metrics), 1000):  # MLflow takes at most 1,000 metrics per batch
        mlflow.MlflowClient().log_batch(run_id, metrics=metrics[start : start + 1000])


def _numbers(metrics: dict) -> dict:
    """Numbers only; nested dicts (per-class precision) become `precision.<class>`."""
    flat = {k.lstrip("."): v for key, value in metrics.items() for k, v in _flatten(f".{key}", value).items()}
    return {k: float(v) for k, v in flat.items() if isinstance(v, (int, float))}


def log_metrics(metrics: dict, prefix: str = "") -> None:
    if _muted["muted"]:
        return
    _mlflow().log_metrics({prefix + k: v for k, v in _numbers(metrics).items()})


def log_training(model, best: dict, served, example, checkpoint: Path) -> None:
    """What a finished training run adds: its best epoch and validation loss, the hash of the checkpoint it wrote
    (how the log stage finds this run again), and `served` (a stages.serving.ServedModel) with the checkpoint: a
    pyfunc that takes and returns real units."""
    from stages.infra.files import content_sha256

    if _muted["muted"]:
        return
    log_metrics({"best_epoch": best["epoch"], "best_val_loss": best["val_loss"]})
    _mlflow().set_tag("checkpoint_sha256", content_sha256(checkpoint))
    log_model(model, served, example, checkpoint)


def log_model(model, served, example, checkpoint: Path) -> None:
    """Log `served` with the checkpoint as the active run's model "model"."""
    _mlflow().pyfunc.log_model(name="model", **_pyfunc(model, served, example, checkpoint))


def add_model(run_id: str, name: str, model, served, example, checkpoint: Path) -> None:
    """Add `served` with the checkpoint to a finished run as the model `name` (runs:/<run id>/<name>), without
    reopening the run (see add_to_run)."""
    import tempfile

    mlflow = _mlflow()
    with tempfile.TemporaryDirectory() as folder:
        mlflow.pyfunc.save_model(path=f"{folder}/{name}", **_pyfunc(model, served, example, checkpoint))
        mlflow.MlflowClient().log_artifacts(run_id, f"{folder}/{name}", artifact_path=name)


def _pyfunc(model, served, example, checkpoint: Path) -> dict:
    """What a pyfunc model is made of: `served`, the checkpoint as an artifact, a signature and an input example
    in real units (its output from `model`, the trained network); pinned requirements skip a slow inference step."""
    import numpy
    import pandas
    import torch
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types import Schema, TensorSpec

    output = served.serve(model.cpu().eval(), example)
    signature = infer_signature(example, output)
    if isinstance(example, numpy.ndarray):  # any history length or image size: serve() checks and says what it needs
        signature = ModelSignature(Schema([TensorSpec(example.dtype, (-1,) * example.ndim)]), signature.outputs)
    # The served model is our own class, pickled and loaded by ourselves: MLflow's warning about pickle, printed
    # once per trained model, would tell a user nothing.
    logging.getLogger("mlflow.pyfunc").addFilter(lambda record: "CloudPickle" not in record.getMessage())
    return dict(python_model=served, artifacts={"checkpoint": str(checkpoint)}, code_paths=[str(ROOT / "stages")],
                signature=signature, input_example=example,
                pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", f"numpy=={numpy.__version__}",
                                  f"pandas=={pandas.__version__}", f"mlflow=={_mlflow().__version__}"])


CHAMPION = "champion"  # the alias a server loads: models:/<task>@champion


def promote(task: str, run_id: str, checkpoint_sha256: str, validation: dict, served: str = "model") -> str:
    """Make the model `served` of run `run_id` ("model", or a text network's "model_kn", its Kneser-Ney mixture)
    the champion of the registered model named after the task, and say what happened. The alias moves only when
    the checkpoint differs from the current champion's: a rerun that wrote
    the same bytes adds no version, and a checkpoint registered before (going back to an earlier commit) gets its
    old version back. The version's tags say where it came from: the DVC experiment and git commit of its
    training run, the checkpoint's hash, the model, and `validation`, the metric it was chosen on
    ({"val_rmse": 7.08})."""
    from mlflow.exceptions import MlflowException

    client = _mlflow().MlflowClient()
    try:
        # created first: a team server's auth app refuses (403) to read a model that does not exist yet, and makes
        # its creator the model's manager
        client.create_registered_model(task, description=REGISTERED_NOTE)
    except MlflowException as err:
        if err.error_code == "PERMISSION_DENIED":
            raise PipelineError(f"MLFLOW_TRACKING_URI={store.tracking_uri()}: this login may not register models ("
                                f"{one_line(err.message)}); an admin grants it with `python tools/team_users.py "
                                f"{store.tracking_uri()} writer <user>`") from None
        if err.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
            raise
    try:
        current = client.get_model_version_by_alias(task, CHAMPION)
    except MlflowException as err:
        if err.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            raise
        current = None  # no champion yet
    if current is not None and current.tags.get("checkpoint_sha256") == checkpoint_sha256:
        return f"{task}@{CHAMPION} is already version {current.version} (the same checkpoint)"
    earlier = [v for v in client.search_model_versions(f"name = '{task}'")
               if v.tags.get("checkpoint_sha256") == checkpoint_sha256]
    if earlier:
        version = max(earlier, key=lambda v: int(v.version))
    else:
        run = client.get_run(run_id)
        tags = {"dvc_experiment": run.data.tags.get("dvc_experiment", "unknown"),
                "git_commit": run.data.tags.get("git_commit", "unknown"), "checkpoint_sha256": checkpoint_sha256,
                "model": run.data.tags.get("model", "unknown"), "served": served}
        tags |= {k: str(v) for k, v in validation.items()}
        if served == "model":
            (model_id,) = [m.model_id for m in run.outputs.model_outputs]  # train logs one model per run
            version = client.create_model_version(task, f"models:/{model_id}", run_id=run_id, tags=tags,
                                                  model_id=model_id)
        else:  # added to the finished run as artifacts (tracking.add_model)
            version = client.create_model_version(task, f"runs:/{run_id}/{served}", run_id=run_id, tags=tags)
    client.set_registered_model_alias(task, CHAMPION, version.version)
    was = f"version {current.version}" if current is not None else "none"
    return f"{task}@{CHAMPION} -> version {version.version} (was {was})"


REGISTERED_NOTE = ("The task's model with the best validation metric, registered by the log stage of a plain `dvc "
                   "repro` (an experiment's runs are candidates until `dvc exp apply`); serve it with `mlflow models "
                   "serve -m models:/<task>@champion`.")
