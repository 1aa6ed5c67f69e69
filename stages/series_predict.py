"""A trained forecaster's predictions in the series' units: the test scores (stage evaluate) and the logged MLflow
model's answers (`serve`, run by stages/serving.py)."""
import numpy as np

from stages.inference import predict
from stages.series import (
    forecast_metrics,
    invert,
    make_windows,
    scale,
    tensors,
    transform,
)


def forecast(model, data: dict, meta: dict, split: str, device) -> np.ndarray:
    """The model's forecasts of a split's targets, in the series' units."""
    x, _ = tensors(data, meta, split)
    return invert(predict(model, x, 1024, device).numpy()[:, 0], data["series"], data[f"index_{split}"], meta)


def score(model, data: dict, meta: dict, device) -> tuple[dict, dict]:
    """Test RMSE, MAE and MAPE in the series' units (transforms undone), plus the same on the validation split
    (`validation`: what settings may be chosen on); the actual and forecast value of every test step."""
    predicted, targets = forecast(model, data, meta, "test", device), data["index_test"]
    actual = data["series"][targets]
    columns = {"time": data["times"][targets].tolist(), "actual": actual.tolist(), "predicted": predicted.tolist()}
    validation = forecast_metrics(data["series"][data["index_val"]], forecast(model, data, meta, "val", device))
    return forecast_metrics(actual, predicted) | {"validation": validation}, columns


def serve(model, history, spec: dict) -> np.ndarray:
    """The forecast, in the series' units, of the value `horizon` steps after each row of real values (N, L); a
    row's last seq_length + sum(differences) values are used (the differences need that much history)."""
    import torch

    history = np.asarray(history, dtype=np.float64)
    span, horizon = spec["seq_length"] + sum(spec["differences"]), spec["horizon"]
    if history.ndim != 2 or history.shape[1] < span:
        raise ValueError(f"expected rows of at least {span} values ({spec['unit']}), got shape {history.shape}")
    if not np.isfinite(history).all():
        row, column = np.argwhere(~np.isfinite(history))[0]
        raise ValueError(f"expected finite values ({spec['unit']}), got {history[row, column]} in row {row} at "
                         f"position {column}")
    # each row, then `horizon` placeholders for the steps to forecast: invert's z_t - d_t cancels them out
    rows = np.concatenate([history[:, -span:], np.repeat(history[:, -1:], horizon, axis=1)], axis=1)
    target = np.array([span + horizon - 1])
    x = np.concatenate([make_windows(scale(transform(row, spec["log"], spec["differences"]), spec["scaler"])[:, None],
                                     target, spec["seq_length"], horizon)[0] for row in rows])
    forecast = predict(model, torch.from_numpy(x), 1024, torch.device("cpu")).numpy()[:, 0]
    return np.array([invert(f[None], row, target, spec)[0] for f, row in zip(forecast, rows)])
