"""A trained forecaster's predictions in the series' units: the test scores (stage evaluate) and the logged MLflow
model's answers (`serve`, run by stages/infra/serving.py)."""
import numpy as np
import torch

from stages.core.inference import predict
from stages.kinds.series.data import hybrid_invert, hybrid_windows, invert, make_windows, scale, tensors, transform
from stages.kinds.series.metrics import forecast_metrics


def forecast(model, data: dict, meta: dict, split: str, device) -> np.ndarray:
    """The model's forecasts of a split's targets, in the series' units. A hybrid (a model with a `classical`
    part) adds its network's residual forecast to the fixed classical one-step forecast."""
    targets = data[f"index_{split}"]
    classical = getattr(model, "classical", None)
    if classical is not None:
        x, _ = hybrid_windows(data["series"], classical, targets, int(data["x_train"].shape[1]))
        return hybrid_invert(predict(model, torch.from_numpy(x), 1024, device).numpy()[:, 0], data["series"],
                             targets, classical)
    x, _ = tensors(data, meta, split)
    return invert(predict(model, x, 1024, device).numpy()[:, 0], data["series"], targets, meta)


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
    row's last seq_length + sum(differences) values are used (the differences need that much history). A hybrid
    filters each whole row with its fixed SARIMA: it needs seq_length steps after SARIMA's differences, and its
    forecast equals the pipeline's when the row holds the series from its start."""
    history = np.asarray(history, dtype=np.float64)
    classical = getattr(model, "classical", None)
    span, horizon = spec["seq_length"] + sum(spec["differences"]), spec["horizon"]
    if classical is not None:
        span = spec["seq_length"] + classical["burn_in"]
    if history.ndim != 2 or history.shape[1] < span:
        raise ValueError(f"expected rows of at least {span} values ({spec['unit']}), got shape {history.shape}")
    if not np.isfinite(history).all():
        row, column = np.argwhere(~np.isfinite(history))[0]
        raise ValueError(f"expected finite values ({spec['unit']}), got {history[row, column]} in row {row} at "
                         f"position {column}")
    if classical is not None:
        return serve_hybrid(model, history, spec["seq_length"], classical)
    # each row, then `horizon` placeholders for the steps to forecast: invert's z_t - d_t cancels them out
    rows = np.concatenate([history[:, -span:], np.repeat(history[:, -1:], horizon, axis=1)], axis=1)
    target = np.array([span + horizon - 1])
    x = np.concatenate([make_windows(scale(transform(row, spec["log"], spec["differences"]), spec["scaler"])[:, None],
                                     target, spec["seq_length"], horizon)[0] for row in rows])
    forecast = predict(model, torch.from_numpy(x), 1024, torch.device("cpu")).numpy()[:, 0]
    return np.array([invert(f[None], row, target, spec)[0] for f, row in zip(forecast, rows)])


def serve_hybrid(model, history: np.ndarray, seq_length: int, classical: dict) -> np.ndarray:
    """A hybrid's next-step forecast after each (checked) row: the row and a placeholder for the step to
    forecast, whose one-step SARIMA forecast and residual window use the row's values only."""
    forecasts = []
    for row in history:
        row = np.append(row, row[-1])  # the placeholder: forecast t reads values before t only
        target = np.array([len(row) - 1])
        x, _ = hybrid_windows(row, classical, target, seq_length)
        residual = predict(model, torch.from_numpy(x), 1024, torch.device("cpu")).numpy()[:, 0]
        forecasts.append(hybrid_invert(residual, row, target, classical)[0])
    return np.array(forecasts)
