"""Model registries: dvc.yaml's `artifacts:` declares every trained model (read back with DVC's API); the summary
metrics choose each task's model on validation, never on test; MLflow's registry gets the chosen model as the
task's `champion`, and only a checkpoint that differs from the champion's moves the alias."""
from types import SimpleNamespace

import mlflow
import numpy as np
import torch

from stages import plot
from stages.core import figures
from stages.core.models import build_model
from stages.infra import paths, store, tracking
from stages.infra.config import ROOT, SeriesBaseline, SeriesPreprocess, load_params
from stages.infra.files import content_sha256, save_checkpoint
from stages.infra.serving import ServedModel
from stages.kinds.series import prepare as series_prepare
from stages.kinds.series import train as series_train


def test_dvc_artifacts_declare_every_tasks_models_as_a_stage_output():
    """DVC's model registry convention: `dvc artifacts get . <task>` fetches a task's checkpoints (a transfer task's
    phases, one stage each, are one artifact each); dvc.api.artifacts_show finds them by these names."""
    from dvc.repo import Repo

    params = load_params()
    with Repo(str(ROOT)) as repo:
        declared = repo.artifacts.read()["dvc.yaml"]
        outputs = {o.def_path for s in repo.index.stages for o in s.outs}
    expected = {task: str(paths.checkpoints(task)) for task in params.runs}
    expected |= {f"{task}-{phase}": str(paths.checkpoint(task, phase)) for task in params.transfer_tasks
                 for phase in params.trained_models(task)}
    assert {name: a.path for name, a in declared.items()} == expected
    for name, artifact in declared.items():
        task = name.split("-")[0]
        assert artifact.type == "model" and artifact.desc and artifact.labels == [params.task(task).kind]
        assert artifact.path in outputs, name


def results(validation: dict[str, float], test: dict[str, float]) -> figures.Results:
    metrics = {m: {"rmse": test[m], "validation": {"rmse": v}} for m, v in validation.items()}
    return figures.Results(task="passengers", metrics=metrics, baselines={"naive": {"rmse": 50.0}, "sarima": {"rmse": 15.0}},
                           histories={}, predictions={}, baseline_predictions={})


def test_the_summary_chooses_on_validation_even_when_the_test_says_otherwise():
    summary = plot.summary(results({"rnn": 7.2, "lstm": 7.4, "gru": 7.3}, {"rnn": 19.6, "lstm": 19.5, "gru": 19.8}),
                           "rmse", lower_is_better=True)["passengers"]
    assert summary["rmse"] == {"rnn": 19.6, "lstm": 19.5, "gru": 19.8, "baseline_sarima": 15.0}
    assert summary["val_rmse"] == {"rnn": 7.2, "lstm": 7.4, "gru": 7.3}
    assert summary["chosen"] == {"model": "rnn", "val_rmse": 7.2}  # lstm has the better test rmse: not looked at
    accuracy = plot.summary(results({"a": 0.9, "b": 0.95}, {"a": 0.99, "b": 0.9}), "rmse", lower_is_better=False)
    assert accuracy["passengers"]["chosen"]["model"] == "b"


def trained(root, seed: int) -> tuple[str, str]:
    """A tiny GRU forecaster initialised from `seed` and logged as the train stage logs it: (run id, checkpoint
    hash)."""
    t = np.arange(60)
    arrays, meta = series_prepare.windows(100 + 2 * t + 10 * np.sin(2 * np.pi * t / 12), SeriesPreprocess(
        time="Month", value="Passengers", time_format="%Y-%m", frequency="MS", resample=False, unit="thousand passengers",
        seq_length=4, horizon=1, val_ratio=0.15, test_ratio=0.2, scaler="minmax", log=False, differences=(1,)),
        "passengers")
    plain = SimpleNamespace(baseline=SeriesBaseline(season=12, ridge_alpha=0.0, sarima_order=(), sarima_seasonal_order=(),
                                                    sarima_log=False, ets_seasonal="none"),
                            train=SimpleNamespace(ensemble=False))  # what serving reads of a series task's params
    spec, example = series_train.serving(arrays, meta, plain)
    torch.manual_seed(seed)
    config = {"input_size": 1, "hidden_size": 4, "num_layers": 1, "dropout": 0.0, "output_size": 1}
    model = build_model("series", "gru", config).eval()
    checkpoint = root / f"gru-{seed}.pt"
    save_checkpoint(checkpoint, {"model": "gru", "config": config, "state_dict": model.state_dict(), "epoch": 1})
    with tracking.start_run("passengers", "gru", "train@passengers", {}) as run:
        tracking.log_training(model, {"epoch": 1, "val_loss": 0.5}, ServedModel("series", spec), example, checkpoint)
    return run.info.run_id, content_sha256(checkpoint)


def test_the_champion_moves_only_to_another_checkpoint_and_serves_it(local_store):
    client = mlflow.MlflowClient(store.tracking_uri())
    first, first_hash = trained(local_store, 0)
    assert tracking.promote("passengers", first, first_hash, {"val_rmse": 7.2}) == \
        "passengers@champion -> version 1 (was none)"
    version = client.get_model_version_by_alias("passengers", "champion")
    assert version.run_id == first and version.tags["checkpoint_sha256"] == first_hash
    assert version.tags["dvc_experiment"] == "workspace" and version.tags["val_rmse"] == "7.2"
    assert version.tags["git_commit"] == client.get_run(first).data.tags["git_commit"]
    # a rerun that wrote the same checkpoint: no new version
    assert "already version 1" in tracking.promote("passengers", first, first_hash, {"val_rmse": 7.2})
    second, second_hash = trained(local_store, 1)
    assert tracking.promote("passengers", second, second_hash, {"val_rmse": 7.0}).endswith("version 2 (was version 1)")
    mlflow.set_tracking_uri(store.tracking_uri())
    served = mlflow.pyfunc.load_model("models:/passengers@champion")
    assert client.get_model_version_by_alias("passengers", "champion").run_id == second
    history = np.arange(100.0, 110.0)[None]
    assert np.allclose(served.predict(history), mlflow.pyfunc.load_model(f"runs:/{second}/model").predict(history))
    # back to the first checkpoint (git checkout of an older commit): its version again, none added
    assert tracking.promote("passengers", first, first_hash, {"val_rmse": 7.2}).endswith("version 1 (was version 2)")
    assert len(client.search_model_versions("name = 'passengers'")) == 2
