"""Pure functions for the forecasting tasks: split, scale, window, baselines, metrics. NumPy in, NumPy out."""
import numpy as np

from stages.errors import PipelineError


def chronological_split(n: int, val_ratio: float, test_ratio: float) -> tuple[int, int]:
    """Boundaries (train_end, val_end): train = [0, train_end), val = [train_end, val_end), test = [val_end, n).

    Time series are split in time order, never at random: a random split over overlapping windows lets the
    model see the future of the months it is tested on (the original temperature exercise did that).
    """
    n_test = int(round(n * test_ratio))
    n_val = int(round(n * val_ratio))
    train_end, val_end = n - n_test - n_val, n - n_test
    if min(train_end, n_val, n_test) < 1:
        raise PipelineError(f"series of {n} steps is too short for val_ratio={val_ratio}, test_ratio={test_ratio}")
    return train_end, val_end


def fit_scaler(train_values: np.ndarray, kind: str) -> dict:
    """Scaler statistics from the training part only, so held-out values cannot leak into training data."""
    if kind == "minmax":
        offset, scale = float(train_values.min()), float(train_values.max() - train_values.min())
    elif kind == "standard":
        offset, scale = float(train_values.mean()), float(train_values.std())
    else:
        raise PipelineError(f"unknown scaler {kind!r} (known: minmax, standard)")
    return {"kind": kind, "offset": offset, "scale": scale if scale > 0 else 1.0}


def scale(values: np.ndarray, scaler: dict) -> np.ndarray:
    return (values - scaler["offset"]) / scaler["scale"]


def unscale(values: np.ndarray, scaler: dict) -> np.ndarray:
    return values * scaler["scale"] + scaler["offset"]


def target_indices(start: int, end: int, seq_length: int, horizon: int) -> np.ndarray:
    """Indices t in [start, end) that have a full input window series[t-horizon-seq_length+1 : t-horizon+1].

    The window of a held-out target may reach back before `start`: its inputs are observed history, and this
    way every held-out step is predicted exactly once.
    """
    first = max(start, seq_length + horizon - 1)
    return np.arange(first, end)


def make_windows(series: np.ndarray, targets: np.ndarray, seq_length: int, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """Inputs (N, seq_length, F) and targets (N, F) for the target indices given; series is (T, F)."""
    offsets = np.arange(-horizon - seq_length + 1, -horizon + 1)  # (seq_length,) relative to the target
    x = series[targets[:, None] + offsets[None, :]]  # (N, seq_length, F)
    y = series[targets]  # (N, F)
    return x.astype(np.float32), y.astype(np.float32)


def naive_forecast(series: np.ndarray, targets: np.ndarray, horizon: int) -> np.ndarray:
    """Last observed value: the persistence baseline."""
    return series[targets - horizon]


def seasonal_naive_forecast(series: np.ndarray, targets: np.ndarray, horizon: int, season: int) -> np.ndarray:
    """Value one season (or as many seasons as the horizon needs) before the target: same month last year."""
    lag = season * int(np.ceil(horizon / season))
    if targets.min() - lag < 0:
        raise PipelineError(f"seasonal baseline needs {lag} steps of history before the first target")
    return series[targets - lag]


def forecast_metrics(actual: np.ndarray, predicted: np.ndarray) -> dict:
    """RMSE, MAE and MAPE (percent) in the series' own units."""
    error = predicted - actual
    metrics = {"rmse": float(np.sqrt(np.mean(error**2))), "mae": float(np.mean(np.abs(error)))}
    if np.all(actual != 0):
        metrics["mape"] = float(np.mean(np.abs(error / actual)) * 100)
    return metrics
