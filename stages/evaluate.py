"""Stage evaluate: score one trained model on the test split, the first and only time the test split is used.

Forecasting: RMSE, MAE, MAPE in the series' units (inverse-scaled). Classification: accuracy, loss, per-class
precision/recall and the confusion matrix. Text: cross-entropy, perplexity, top-1/top-5 next-word accuracy.
Scores every model of the task (one process: torch and MLflow start once, not once per model).
Writes metrics/<task>/models/<model>.json and plots/<task>/predictions/<model>.csv, and adds the test metrics
to each model's MLflow training run.
Usage: python -m stages.evaluate <task>
"""
from pathlib import Path

import torch

import numpy as np

from stages import series, tracking
from stages.config import load_params
from stages.errors import run_stage
from stages.files import load_arrays, load_checkpoint, read_json, write_csv, write_json
from stages.models import build_model
from stages.preprocess import PREPARED
from stages.training import load_split, pick_device, predict


def load_model(path: Path, device: torch.device) -> tuple[torch.nn.Module, dict]:
    checkpoint = load_checkpoint(path)
    model = build_model(checkpoint["kind"], checkpoint["model"], checkpoint["config"])
    model.load_state_dict(checkpoint["state_dict"])
    return model.to(device).eval(), checkpoint


def evaluate_series(model, data: dict, meta: dict, device) -> tuple[dict, dict]:
    """Test metrics in the series' units, and the columns of the actual-vs-predicted plot."""
    scaled = predict(model, torch.from_numpy(data["x_test"]), 1024, device).numpy()[:, 0]
    predicted = series.unscale(scaled, meta["scaler"])
    actual = data["series"][data["index_test"]]
    columns = {"time": data["times"][data["index_test"]].tolist(), "actual": actual.tolist(),
               "predicted": predicted.tolist()}
    return series.forecast_metrics(actual, predicted), columns


def evaluate_classifier(model, data: dict, meta: dict, device) -> tuple[dict, dict]:
    """Test metrics of an image classifier or a next-word model, and the actual/predicted columns."""
    from stages import images, text

    x, y = load_split(data, meta, "test", device)
    logits = predict(model, x, 512, device)
    y = y.cpu()
    log_probs = torch.log_softmax(logits, dim=1)
    logp = log_probs.gather(1, y[:, None])[:, 0].numpy()
    top5 = log_probs.topk(min(5, log_probs.shape[1]), dim=1).indices.numpy()
    names = meta["vocab"] if meta["kind"] == "text" else meta["classes"]
    columns = {"actual": [names[i] for i in y.tolist()], "predicted": [names[i] for i in top5[:, 0].tolist()]}
    if meta["kind"] == "text":
        return text.language_metrics(logp, top5, y.numpy()), columns
    matrix = images.confusion_matrix(y.numpy(), top5[:, 0], len(names))
    precision, recall = images.per_class_precision_recall(matrix)
    metrics = {"accuracy": float(np.trace(matrix) / matrix.sum()), "loss": float(-logp.mean()),
               "precision": dict(zip(names, precision.round(4).tolist())), "recall": dict(zip(names, recall.round(4).tolist()))}
    return metrics, columns


def main(argv: list[str]) -> None:
    (task,) = argv
    params = load_params()
    device = pick_device(params.device)
    data, meta = load_arrays(PREPARED / task / "data.npz"), read_json(PREPARED / task / "meta.json")
    for name in params.trained_models(task):
        model, checkpoint = load_model(Path("models") / task / f"{name}.pt", device)
        if meta["kind"] == "series":
            metrics, columns = evaluate_series(model, data, meta, device)
        else:
            metrics, columns = evaluate_classifier(model, data, meta, device)
        write_json(Path("metrics") / task / "models" / f"{name}.json", metrics)
        write_csv(Path("plots") / task / "predictions" / f"{name}.csv", columns)
        with tracking.resume_run(checkpoint["mlflow_run_id"]) as run:
            if run is not None:
                tracking.log_metrics(metrics, prefix="test_")
        print(f"{task} {name} (test): " + "  ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float)))


if __name__ == "__main__":
    run_stage(main, "python -m stages.evaluate <task>")
