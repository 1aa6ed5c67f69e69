"""MLflow: the store is anchored at the repo root ($DVC_ROOT) whatever the working directory; evaluation adds to a
finished run without reopening it; the logged model takes and returns real units, as the pipeline computes them."""
import os
import socket
import subprocess
import sys
from types import SimpleNamespace

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch

from stages.core.models import SeedEnsemble, build_model
from stages.infra import store, tracking
from stages.infra.config import SeriesBaseline, SeriesPreprocess
from stages.infra.files import content_sha256, save_checkpoint
from stages.infra.serving import ServedModel
from stages.kinds.images import data as images
from stages.kinds.images import train as images_train
from stages.kinds.series import predict as series_predict
from stages.kinds.series import prepare as series_prepare
from stages.kinds.series import train as series_train
from stages.kinds.text import data as text
from stages.kinds.text import predict as text_predict
from stages.kinds.text import train as text_train


def test_runs_and_artifacts_land_under_dvc_root_from_another_directory(tmp_path, monkeypatch):
    root, elsewhere = tmp_path / "repo", tmp_path / "queued-copy"
    root.mkdir()
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # what a queued experiment does: run the stage in a temp copy
    monkeypatch.setenv("DVC_ROOT", str(root))
    monkeypatch.setattr(store, "TEAM_SERVER", None)
    with tracking.start_run("passengers", "lstm", "train@passengers", {"lr": 0.01}) as run:
        tracking.log_epoch({"epoch": 1, "train_loss": 0.5, "val_loss": 0.7})
    mlflow.set_tracking_uri(None)
    assert store.tracking_uri() == f"sqlite:///{root.resolve() / 'mlflow.db'}"
    assert run.info.artifact_uri.startswith((root.resolve() / "mlartifacts" / "passengers").as_uri())
    assert not (elsewhere / "mlruns").exists() and not (elsewhere / "mlflow.db").exists()
    client = mlflow.MlflowClient(store.tracking_uri())
    logged = client.get_run(run.info.run_id)
    assert logged.info.run_name == "workspace-lstm" and logged.data.params == {"lr": "0.01"}
    assert logged.data.tags["dvc_stage"] == "train@passengers"


def test_evaluation_adds_to_the_finished_run_without_reopening_it(local_store):
    checkpoint = local_store / "cnn.pt"
    checkpoint.write_bytes(b"the weights")
    with tracking.start_run("digits", "cnn", "train@digits", {}) as run:
        mlflow.set_tag("checkpoint_sha256", content_sha256(checkpoint))
    client = mlflow.MlflowClient(store.tracking_uri())
    ended = client.get_run(run.info.run_id).info.end_time
    figure = local_store / "accuracy.png"
    figure.write_bytes(b"png")
    run_id = tracking.training_run("digits", checkpoint)
    tracking.add_to_run(run_id, {"accuracy": 0.9, "precision": {"0": 0.8}}, "test_", artifacts=[figure])
    after = client.get_run(run.info.run_id)
    assert run_id == run.info.run_id and after.info.end_time == ended and after.info.status == "FINISHED"
    assert after.data.metrics == {"test_accuracy": 0.9, "test_precision.0": 0.8}
    assert [f.path for f in client.list_artifacts(run_id, "figures")] == ["figures/accuracy.png"]
    checkpoint.write_bytes(b"other weights")  # a checkpoint no run of this store wrote
    assert tracking.training_run("digits", checkpoint) is None


def test_every_epoch_reaches_the_store_in_batches_by_the_end_of_the_run(local_store, monkeypatch):
    writes = []
    monkeypatch.setattr(tracking, "FLUSH_SECONDS", 3600.0)  # nothing is due before the run ends
    log_batch = mlflow.MlflowClient.log_batch
    monkeypatch.setattr(mlflow.MlflowClient, "log_batch", lambda self, *a, **k: writes.append(k.get("metrics"))
                        or log_batch(self, *a, **k))
    with tracking.start_run("passengers", "gru", "train@passengers", {}) as run:
        for epoch in (1, 2, 3):
            tracking.log_epoch({"epoch": epoch, "train_loss": 1.0 / epoch, "val_loss": 2.0 / epoch}, "seed42_")
    history = mlflow.MlflowClient(store.tracking_uri()).get_metric_history(run.info.run_id, "seed42_val_loss")
    assert [(m.step, m.value) for m in history] == [(1, 2.0), (2, 1.0), (3, 2.0 / 3)]
    assert len([w for w in writes if w]) == 1  # one batch of metrics for the run, not one write per epoch


def test_experiments_open_on_their_runs_and_no_empty_default_is_left(local_store):
    with tracking.start_run("digits", "cnn", "train@digits", {}):
        pass
    client = mlflow.MlflowClient(store.tracking_uri())
    assert [e.name for e in client.search_experiments()] == ["digits"]
    assert client.get_experiment_by_name("digits").tags["mlflow.experimentKind"] == "custom_model_development"


def log_and_load(root, task: str, kind: str, name: str, config: dict, spec: dict, example):
    """Log a model as the train stage does; load it back as a client would."""
    torch.manual_seed(0)
    model = build_model(kind, name, config).eval()
    checkpoint = root / f"{name}.pt"
    save_checkpoint(checkpoint, {"model": name, "config": config, "state_dict": model.state_dict(), "epoch": 1})
    with tracking.start_run(task, name, f"train@{task}", {}) as run:
        tracking.log_training(model, {"epoch": 1, "val_loss": 0.5}, ServedModel(kind, spec), example, checkpoint)
    assert tracking.training_run(task, checkpoint) == run.info.run_id
    mlflow.set_tracking_uri(store.tracking_uri())
    return model, mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")


def test_the_logged_forecaster_takes_and_returns_real_values_as_the_pipeline_does(local_store):
    t = np.arange(96)
    values = (100 + 2 * t) * (1 + 0.2 * np.sin(2 * np.pi * t / 12))  # a season that grows with the level
    cfg = SeriesPreprocess(time="Month", value="Passengers", time_format="%Y-%m", frequency="MS", resample=False,
        unit="thousand passengers", seq_length=4, horizon=1, val_ratio=0.15, test_ratio=0.2, scaler="minmax", log=True,
                           differences=(1, 12))
    arrays, meta = series_prepare.windows(values, cfg, "passengers")
    spec, example = series_train.serving(arrays, meta, series_task())
    config = {"input_size": 1, "hidden_size": 4, "num_layers": 1, "dropout": 0.0, "output_size": 1}
    model, served = log_and_load(local_store, "passengers", "series", "gru", config, spec, example)
    pipeline = series_predict.forecast(model, arrays, meta, "test", torch.device("cpu"))  # what evaluate scores
    span = 4 + 13  # seq_length + sum(differences): the real values each forecast needs
    history = np.stack([values[t - span : t] for t in arrays["index_test"]])  # horizon 1: up to the step before
    assert np.allclose(served.predict(history), pipeline, rtol=1e-6)
    assert 50 < pipeline.min() and pipeline.max() < 1000  # real units, not scaled differences
    with pytest.raises(mlflow.exceptions.MlflowException, match="^expected rows of at least 17 values") as refused:
        served.predict(history[:, -10:])
    assert refused.value.error_code == "INVALID_PARAMETER_VALUE"  # what `mlflow models serve` answers with 400
    history[1, 3] = np.nan
    with pytest.raises(mlflow.exceptions.MlflowException, match=r"^expected finite values .*got nan in row 1 at position 3"):
        served.predict(history)


def series_task(ensemble: bool = False):
    """What serving and model_inputs read of a series task's params: the airline SARIMA, the ensemble choice."""
    baseline = SeriesBaseline(season=12, ridge_alpha=0.001, sarima_order=(0, 1, 1), sarima_seasonal_order=(0, 1, 1),
                              sarima_log=True, ets_seasonal="none")
    return SimpleNamespace(baseline=baseline, train=SimpleNamespace(ensemble=ensemble))


def test_the_logged_hybrid_seed_ensemble_forecasts_real_values_as_evaluate_scores_it(local_store):
    """A hybrid with two seeds, served as their mean: given the series up to each test step, the logged model
    answers what evaluate scores."""
    t = np.arange(120)
    values = (100 + 2 * t) * (1 + 0.2 * np.sin(2 * np.pi * t / 12)) * np.exp(np.random.default_rng(0).normal(0, 0.02, 120))
    cfg = SeriesPreprocess(time="Month", value="Passengers", time_format="%Y-%m", frequency="MS", resample=False,
        unit="thousand passengers", seq_length=4, horizon=1, val_ratio=0.15, test_ratio=0.1, scaler="minmax", log=True,
                           differences=(1, 12))
    arrays, meta = series_prepare.windows(values, cfg, "passengers")
    task = series_task(ensemble=True)
    spec, example = series_train.serving(arrays, meta, task)
    config, _ = series_train.model_inputs("hybrid_gru", {"input_size": 1, "hidden_size": 4, "num_layers": 1,
                                                         "dropout": 0.0, "output_size": 1}, arrays, meta, task)
    members = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        members.append(build_model("series", "hybrid_gru", config).eval())
        torch.nn.init.normal_(members[-1].head.weight)  # as if trained: each seed moves SARIMA's forecast its own way
    checkpoint = local_store / "hybrid_gru.pt"
    save_checkpoint(checkpoint, {"model": "hybrid_gru", "config": config, "state_dict": members[0].state_dict(),
                                 "epoch": 1, "seed": 0, "seed_state_dicts": [m.state_dict() for m in members]})
    with tracking.start_run("passengers", "hybrid_gru", "train@passengers", {}) as run:
        tracking.log_training(members[0], {"epoch": 1, "val_loss": 0.5}, ServedModel("series", spec), example, checkpoint)
    mlflow.set_tracking_uri(store.tracking_uri())
    served = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    pipeline = series_predict.forecast(SeedEnsemble(members), arrays, meta, "test", torch.device("cpu"))
    kept = series_predict.forecast(members[0], arrays, meta, "test", torch.device("cpu"))
    answers = [served.predict(values[None, :t])[0] for t in arrays["index_test"]]  # the series up to each step
    np.testing.assert_allclose(answers, pipeline, rtol=1e-6)
    assert not np.allclose(pipeline, kept)  # the mean of the seeds, not the kept seed
    assert 50 < min(answers) and max(answers) < 1000  # real units


def test_the_logged_classifier_takes_0_255_pixels_and_returns_the_class_and_probabilities(local_store):
    classes = [str(d) for d in range(10)]
    meta = {"classes": classes, "mean": [0.13], "std": [0.31], "shape": {"image_size": 28}}
    pixels = np.random.default_rng(0).integers(0, 256, (3, 28, 28)).astype(np.uint8)
    spec, example = images_train.serving({"x_train": pixels}, meta, None)
    model, served = log_and_load(local_store, "digits", "images", "cnn", {"in_channels": 1, "num_classes": 10,
                                                                    "image_size": 28}, spec, example)
    answer = served.predict(pixels)
    expected = torch.softmax(model(images.to_tensor(pixels, meta["mean"], meta["std"])), 1).detach().numpy()
    assert list(answer.columns) == ["class"] + [f"p_{c}" for c in classes]
    assert np.allclose(answer[[f"p_{c}" for c in classes]].to_numpy(), expected, atol=1e-6)
    assert list(answer["class"]) == [classes[i] for i in expected.argmax(1)]
    assert len(served.predict(pixels[:, ::2, ::2].astype(np.uint8))) == 3  # 14x14 digits are resized as preprocess does


VOCAB = ["<pad>", "<unk>", "국민은", "법률로", "정한다", "대한민국은"]


def logged_language_model(root, n_words: int):
    """A tiny GRU language model logged as the train stage does: (spec, example, model, served)."""
    task_cfg = SimpleNamespace(generate=SimpleNamespace(n_words=n_words, prompts=("국민은", "대한민국은")))
    spec, example = text_train.serving({}, {"vocab": VOCAB, "max_len": 4}, task_cfg)
    config = {"vocab_size": len(VOCAB), "embedding_dim": 4, "hidden_size": 4, "num_layers": 1, "dropout": 0.0}
    return spec, example, *log_and_load(root, "text", "text", "gru", config, spec, example)


def test_the_logged_language_model_takes_words_and_returns_the_next_words(local_store):
    vocab = VOCAB
    _, _, model, served = logged_language_model(local_store, 3)
    answer = served.predict(pd.DataFrame({"text": ["국민은 법률로", "모르는 말"]}))
    with torch.no_grad():
        greedy = text_predict.generate(model, [2, 3], 3, 0.0, None, 4)
    assert answer["continuation"][0] == text_predict.decode(greedy, vocab) and answer["next_word"][0] == vocab[greedy[0]]
    assert all(len(c.split()) == 3 and "<unk>" not in c for c in answer["continuation"])
    assert ((0 < answer["probability"]) & (answer["probability"] < 1)).all()


def test_the_logged_mixture_answers_with_the_network_and_kneser_ney_probabilities_mixed(local_store):
    vocab = VOCAB
    spec, example, model, network = logged_language_model(local_store, 2)
    kn = text.kneser_ney(np.array([2, 3, 4, 5, 3, 4]), np.array([3, 3]), len(vocab), 2)  # two lines: ... 법률로 정한다
    run_id, checkpoint = tracking.training_run("text", local_store / "gru.pt"), local_store / "gru.pt"
    ended = mlflow.MlflowClient().get_run(run_id).info.end_time
    tracking.add_model(run_id, "model_kn", model, ServedModel("text", spec | {"kn": kn, "kn_weight": 0.25}), example,
                       checkpoint)
    mixed = mlflow.pyfunc.load_model(f"runs:/{run_id}/model_kn")
    x = torch.tensor([text.left_padded([2], 4)])  # "국민은"
    with torch.no_grad():
        expected = 0.25 * torch.softmax(model(x).double(), 1)[0].numpy() + 0.75 * text.kn_probabilities(kn, x.numpy())[0]
    expected[[text.PAD, text.UNK]] = 0
    answer = mixed.predict(pd.DataFrame({"text": ["국민은"]}))
    assert answer["next_word"][0] == vocab[expected.argmax()] == "법률로"  # Kneser-Ney's word, weighted 0.75
    assert answer["probability"][0] == pytest.approx(expected.max(), rel=1e-5)
    assert network.predict(pd.DataFrame({"text": ["국민은"]}))["probability"][0] != pytest.approx(expected.max())
    assert mlflow.MlflowClient().get_run(run_id).info.end_time == ended  # added, not reopened


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
