"""Stage baseline: the simple predictors every model must beat, scored on the same test split as the models.

Forecasting: naive (last observed value: persistence) and seasonal naive (same step one season earlier).
Classification: the majority class, and logistic regression on the pixels. Text: unigram and bigram models.
Writes metrics/<task>/baselines.json and plots/<task>/baselines/predictions.csv.
Usage: python -m stages.baseline <task>
"""
from pathlib import Path

import numpy as np

from stages import series
from stages.config import load_params
from stages.errors import run_stage
from stages.files import load_arrays, read_json, write_csv, write_json
from stages.preprocess import PREPARED


def series_baselines(data: dict, meta: dict, cfg) -> tuple[dict, dict]:
    targets, values = data["index_test"], data["series"]
    forecasts = {"naive": series.naive_forecast(values, targets, meta["horizon"])}
    if cfg.season:
        forecasts["seasonal_naive"] = series.seasonal_naive_forecast(values, targets, meta["horizon"], cfg.season)
    actual = values[targets]
    metrics = {name: series.forecast_metrics(actual, predicted) for name, predicted in forecasts.items()}
    columns = {"time": data["times"][targets].tolist(), "actual": actual.tolist()}
    return metrics, columns | {name: predicted.tolist() for name, predicted in forecasts.items()}


def pixels(images: np.ndarray, side: int = 32) -> np.ndarray:
    """Flattened pixels in [0, 1], average-pooled down to at most side x side so large photos stay cheap."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(images).float() / 255
    x = x[:, None] if x.ndim == 3 else x.permute(0, 3, 1, 2)  # (N, C, H, W)
    if x.shape[-1] > side:
        x = F.adaptive_avg_pool2d(x, side)
    return x.flatten(1).numpy()


def classifier_baselines(data: dict, meta: dict, cfg) -> tuple[dict, dict]:
    from sklearn.linear_model import LogisticRegression

    y_train, y_test = data["y_train"], data["y_test"]
    majority = np.full_like(y_test, np.bincount(y_train).argmax())
    logistic = LogisticRegression(max_iter=cfg.max_iter).fit(pixels(data["x_train"]), y_train)
    predictions = {"majority": majority, "logistic_pixels": logistic.predict(pixels(data["x_test"]))}
    metrics = {name: {"accuracy": float((p == y_test).mean())} for name, p in predictions.items()}
    names = meta["classes"]
    columns = {"actual": [names[i] for i in y_test]}
    return metrics, columns | {k: [names[i] for i in p] for k, p in predictions.items()}


def text_baselines(data: dict, meta: dict, cfg) -> tuple[dict, dict]:
    from stages import text

    ends = np.cumsum(data["train_line_lengths"])
    train_lines = [line.tolist() for line in np.split(data["train_tokens"], ends[:-1])]
    scores = text.ngram_baselines(train_lines, data["x_test"], data["y_test"], len(meta["vocab"]), cfg.bigram_weight)
    metrics = {name: text.language_metrics(s["logp"], s["top5"], data["y_test"]) for name, s in scores.items()}
    vocab = meta["vocab"]
    columns = {"actual": [vocab[i] for i in data["y_test"]]}
    return metrics, columns | {name: [vocab[i] for i in s["top5"][:, 0]] for name, s in scores.items()}


def main(argv: list[str]) -> None:
    (task,) = argv
    cfg = load_params().task(task).baseline
    data, meta = load_arrays(PREPARED / task / "data.npz"), read_json(PREPARED / task / "meta.json")
    baselines = {"series": series_baselines, "images": classifier_baselines, "text": text_baselines}[meta["kind"]]
    metrics, columns = baselines(data, meta, cfg)
    write_json(Path("metrics") / task / "baselines.json", metrics)
    write_csv(Path("plots") / task / "baselines" / "predictions.csv", columns)
    for name, values in metrics.items():
        print(f"{task} {name}: " + "  ".join(f"{k} {v:.4f}" for k, v in values.items()))


if __name__ == "__main__":
    run_stage(main, "python -m stages.baseline <task>")
