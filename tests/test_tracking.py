"""The MLflow store is anchored at the repo root ($DVC_ROOT), artifacts included, whatever the working directory."""
import mlflow

from stages import tracking


def test_runs_and_artifacts_land_under_dvc_root_from_another_directory(tmp_path, monkeypatch):
    root, elsewhere = tmp_path / "repo", tmp_path / "queued-copy"
    root.mkdir()
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # what a queued experiment does: run the stage in a temp copy
    monkeypatch.setenv("DVC_ROOT", str(root))
    monkeypatch.setattr(tracking, "TEAM_SERVER", None)
    with tracking.start_run("passengers", "lstm", "train@passengers-lstm", {"lr": 0.01}) as run:
        tracking.log_epoch({"epoch": 1, "train_loss": 0.5, "val_loss": 0.7})
    mlflow.set_tracking_uri(None)
    assert tracking.tracking_uri() == f"sqlite:///{root.resolve() / 'mlflow.db'}"
    assert run.info.artifact_uri.startswith((root.resolve() / "mlartifacts" / "passengers").as_uri())
    assert not (elsewhere / "mlruns").exists() and not (elsewhere / "mlflow.db").exists()
    client = mlflow.MlflowClient(tracking.tracking_uri())
    logged = client.get_run(run.info.run_id)
    assert logged.info.run_name == "workspace-lstm" and logged.data.params == {"lr": "0.01"}
    assert logged.data.tags["dvc_stage"] == "train@passengers-lstm"


def test_log_model_round_trips_without_the_pickle_warning(tmp_path, monkeypatch, capfd):
    import torch

    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.setattr(tracking, "TEAM_SERVER", None)
    model = torch.nn.Linear(3, 2)
    example = torch.ones(2, 3)
    with tracking.start_run("passengers", "lstm", "train@passengers-lstm", {}) as run:
        tracking.log_model(model, input_example=example.numpy())
    mlflow.set_tracking_uri(tracking.tracking_uri())
    loaded = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    mlflow.set_tracking_uri(None)
    assert torch.allclose(torch.as_tensor(loaded.predict(example.numpy())), model(example).detach())
    assert "Pickle" not in capfd.readouterr().err
