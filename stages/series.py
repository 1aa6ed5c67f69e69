"""The forecasting kind (passengers, temperature): prepare, baselines, tensors, score and figures, the functions
every kind module has, plus the pure NumPy functions they use (split, scale, window, baselines, metrics)."""
from pathlib import Path

import numpy as np

from stages import figures as draw
from stages import paths
from stages.errors import PipelineError

HEADLINE, LOWER_IS_BETTER = "rmse", True  # the test metric metrics/summary/<task>.json lists per model

# (time column, value column, time format, resampling rule, unit) of each forecasting task's raw CSV.
SERIES_COLUMNS = {
    "passengers": ("Month", "Passengers", "%Y-%m", None, "thousand passengers"),  # Box & Jenkins' series is in thousands
    "temperature": ("Date Time", "T (degC)", "%d.%m.%Y %H:%M:%S", "1h", "degC"),  # Jena logs every 10 min
}


def read_series(path: Path, task: str) -> tuple[np.ndarray, np.ndarray]:
    """(times as strings, values as float64) from a raw CSV; NaN or a bad column is an error naming the file."""
    import pandas as pd

    time_col, value_col, time_format, resample, _ = SERIES_COLUMNS[task]
    try:
        frame = pd.read_csv(path, usecols=[time_col, value_col])
        times = pd.to_datetime(frame[time_col], format=time_format)
        values = pd.to_numeric(frame[value_col], errors="raise").astype(float)
    except FileNotFoundError:
        raise PipelineError(f"{path}: file not found (run: dvc repro download@{task})") from None
    except (ValueError, KeyError, pd.errors.ParserError, UnicodeDecodeError) as err:
        raise PipelineError(f"{path}: corrupt or unexpected CSV ({str(err).splitlines()[0]})") from None
    if len(values) == 0:
        raise PipelineError(f"{path}: no data rows (only a header)")
    if values.isna().any():
        raise PipelineError(f"{path}: {int(values.isna().sum())} NaN values in column {value_col!r}")
    if not np.isfinite(values).all():
        raise PipelineError(f"{path}: {int((~np.isfinite(values)).sum())} infinite values in column {value_col!r}")
    if not times.is_monotonic_increasing or times.duplicated().any():  # else the split would not be chronological
        raise PipelineError(f"{path}: column {time_col!r} is not in increasing time order without repeats")
    values.index = times
    if resample:
        hourly = values.resample(resample).mean()
        gaps = int(hourly.isna().sum())
        if gaps:  # hours with no record at all: fill from their neighbours in time, and say how many
            print(f"{path}: interpolated {gaps} empty {resample} steps")
            hourly = hourly.interpolate("time")
        values = hourly
    # times in ISO 8601, whatever the source's format: vega (dvc plots) and pandas read it; hourly series keep the hour
    iso = "%Y-%m-%dT%H:%M" if resample else "%Y-%m"
    return values.index.strftime(iso).to_numpy(dtype=str), values.to_numpy()


def windows(values: np.ndarray, cfg, task: str) -> tuple[dict, dict]:
    """Transform (log, differences), split, scale (training statistics only) and window one series; returns
    (arrays, meta). The models see windows of the transformed series; `invert` turns their forecasts back."""
    train_end, val_end = chronological_split(len(values), cfg.val_ratio, cfg.test_ratio)
    lost = sum(cfg.differences)  # the first steps have no differenced value
    if train_end < cfg.seq_length + cfg.horizon + lost + 1:
        raise PipelineError(f"params.yaml: {task}.preprocess.seq_length={cfg.seq_length} is too long: the training "
                            f"part has only {train_end} steps (needs seq_length + horizon + sum(differences) + 1)")
    if cfg.log and values.min() <= 0:
        raise PipelineError(f"params.yaml: {task}.preprocess.log is true but the series has values <= 0")
    transformed = transform(values, cfg.log, cfg.differences)
    scaler = fit_scaler(transformed[lost:train_end], cfg.scaler)
    scaled = scale(transformed, scaler)[:, None]  # (T, F=1)
    arrays = {"series": values, "scaler": np.array([scaler["offset"], scaler["scale"]])}
    for split, (start, end) in {"train": (0, train_end), "val": (train_end, val_end), "test": (val_end, len(values))}.items():
        targets = target_indices(start, end, cfg.seq_length + lost, cfg.horizon)
        arrays[f"x_{split}"], arrays[f"y_{split}"] = make_windows(scaled, targets, cfg.seq_length, cfg.horizon)
        arrays[f"index_{split}"] = targets
    meta = {"unit": SERIES_COLUMNS[task][4], "scaler": scaler, "horizon": cfg.horizon, "log": cfg.log,
            "differences": list(cfg.differences), "shape": {"input_size": 1, "output_size": 1},  # one variable in, its next value out
            "sizes": {s: int(len(arrays[f"y_{s}"])) for s in ("train", "val", "test")}}
    return arrays, meta


def transform(values: np.ndarray, log: bool, differences) -> np.ndarray:
    """log (if asked), then each lag differenced away in turn; the first sum(differences) steps become NaN."""
    z = np.log(values) if log else values.astype(np.float64)
    for lag in differences:
        z = np.concatenate([np.full(lag, np.nan), z[lag:] - z[:-lag]])
    return z


def invert(forecast: np.ndarray, values: np.ndarray, targets: np.ndarray, meta: dict) -> np.ndarray:
    """Forecasts of the transformed, scaled series at `targets` -> forecasts in the series' units.

    Differencing is undone with observed values only: z_t = d_t + (z_t - d_t), and z_t - d_t is a sum of z at
    lags >= min(differences) >= horizon, all observed when the forecast is made (config checks the lags).
    """
    z = np.log(values) if meta["log"] else values.astype(np.float64)
    known = (z - transform(values, meta["log"], meta["differences"]))[targets]  # 0 without differences
    level = unscale(forecast, meta["scaler"]) + known
    return np.exp(level) if meta["log"] else level


def prepare(task: str, cfg) -> tuple[dict, dict]:
    """Chronological split, scaler fitted on the training part only, windows of seq_length steps predicting the
    value `horizon` steps ahead."""
    times, values = read_series(paths.raw_file(task), task)
    arrays, meta = windows(values, cfg, task)
    return arrays | {"times": times}, meta


def baselines(data: dict, meta: dict, cfg) -> tuple[dict, dict]:
    """The classical forecasts of the test steps, each fitted on the steps before the test part only; (metrics,
    forecast columns). Naive (persistence), seasonal naive, a ridge autoregression on the models' own windows,
    SARIMA and Holt-Winters (one step ahead, parameters fixed before the test part)."""
    targets, values, horizon = data["index_test"], data["series"], meta["horizon"]
    fit_end = int(data["index_val"][-1]) + 1  # train + validation: everything before the test part
    forecasts = {"naive": naive_forecast(values, targets, horizon)}
    if cfg.season:
        forecasts["seasonal_naive"] = seasonal_naive_forecast(values, targets, horizon, cfg.season)
    fit_x = np.concatenate([data["x_train"], data["x_val"]])
    fit_y = np.concatenate([data["y_train"], data["y_val"]])
    forecasts["linear_ar"] = invert(ridge_forecast(fit_x, fit_y, data["x_test"], cfg.ridge_alpha), values, targets, meta)
    if cfg.sarima_order or cfg.ets_seasonal != "none":
        if horizon != 1:
            raise PipelineError("params.yaml: the SARIMA and ETS baselines forecast one step ahead: set "
                                "preprocess.horizon 1, or baseline.sarima_order [] and ets_seasonal none")
        if cfg.sarima_order:
            forecasts["sarima"] = sarima_forecast(values, fit_end, targets, cfg.sarima_order,
                                                  (*cfg.sarima_seasonal_order, cfg.season) if cfg.sarima_seasonal_order
                                                  else (0, 0, 0, 0), cfg.sarima_log)
        if cfg.ets_seasonal != "none":
            forecasts["ets"] = ets_forecast(values, fit_end, targets, cfg.ets_seasonal, cfg.season)
    actual = values[targets]
    metrics = {name: forecast_metrics(actual, predicted) for name, predicted in forecasts.items()}
    columns = {"time": data["times"][targets].tolist(), "actual": actual.tolist()}
    return metrics, columns | {name: predicted.tolist() for name, predicted in forecasts.items()}


def ridge_forecast(x_fit: np.ndarray, y_fit: np.ndarray, x: np.ndarray, alpha: float) -> np.ndarray:
    """A linear autoregression: ridge regression of the next (transformed, scaled) value on the same windows the
    recurrent models see, fitted on the training and validation windows. What an RNN must beat to earn its cost."""
    from sklearn.linear_model import Ridge

    model = Ridge(alpha=alpha).fit(x_fit.reshape(len(x_fit), -1), y_fit[:, 0])
    return model.predict(x.reshape(len(x), -1))


def sarima_forecast(values: np.ndarray, fit_end: int, targets: np.ndarray, order, seasonal_order,
                    log: bool) -> np.ndarray:
    """One-step-ahead SARIMA forecasts of values[targets] (all >= fit_end): the parameters are fitted on
    values[:fit_end] only, then the whole series is filtered with them fixed, never refitted, so each
    forecast uses only earlier values. On the log scale the forecast is exp(mean): the median."""
    import warnings

    from statsmodels.tsa.statespace.sarimax import SARIMAX

    z = np.log(values) if log else values.astype(np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # statsmodels' convergence chatter; the metrics say how well it did
        fitted = SARIMAX(z[:fit_end], order=tuple(order), seasonal_order=tuple(seasonal_order)).fit(disp=False)
        predicted = fitted.apply(z).get_prediction().predicted_mean  # one step ahead at every t
    return np.exp(predicted[targets]) if log else predicted[targets]


def ets_forecast(values: np.ndarray, fit_end: int, targets: np.ndarray, seasonal: str, season: int) -> np.ndarray:
    """One-step-ahead Holt-Winters forecasts (additive trend, `seasonal` season) of values[targets]: fitted on
    values[:fit_end], then the whole series smoothed with those parameters fixed."""
    import warnings

    from statsmodels.tsa.exponential_smoothing.ets import ETSModel

    spec = {"error": "add", "trend": "add", "seasonal": seasonal, "seasonal_periods": season}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fitted = ETSModel(values[:fit_end].astype(np.float64), **spec).fit(disp=False)
        smoothed = ETSModel(values.astype(np.float64), **spec).smooth(fitted.params)
    return np.asarray(smoothed.fittedvalues)[targets]


def augmenter(task_cfg, meta: dict):
    """Forecasting windows are never augmented."""
    return None


def tensors(data: dict, meta: dict, split: str):
    """One split as float32 windows (N, seq_length, F) and targets (N, F), scaled."""
    import torch

    return torch.from_numpy(data[f"x_{split}"]), torch.from_numpy(data[f"y_{split}"])


def forecast(model, data: dict, meta: dict, split: str, device) -> np.ndarray:
    """The model's forecasts of a split's targets, in the series' units."""
    from stages.training import predict

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


def serving(data: dict, meta: dict, task_cfg) -> tuple[dict, np.ndarray]:
    """What the logged model needs to forecast from real values (`spec`), and an input example: the real values
    before the first two training targets."""
    seq_length = int(data["x_train"].shape[1])
    spec = {k: meta[k] for k in ("scaler", "log", "differences", "horizon", "unit")} | {"seq_length": seq_length}
    span = seq_length + sum(meta["differences"])
    ends = data["index_train"][:2] - meta["horizon"] + 1  # each window's last input is `horizon` steps before its target
    return spec, np.stack([data["series"][end - span : end] for end in ends])


def serve(model, history, spec: dict) -> np.ndarray:
    """The forecast, in the series' units, of the value `horizon` steps after each row of real values (N, L); a
    row's last seq_length + sum(differences) values are used (the differences need that much history)."""
    import torch

    from stages.training import predict

    history = np.asarray(history, dtype=np.float64)
    span, horizon = spec["seq_length"] + sum(spec["differences"]), spec["horizon"]
    if history.ndim != 2 or history.shape[1] < span or not np.isfinite(history).all():
        raise ValueError(f"expected finite rows of at least {span} values ({spec['unit']}), got shape {history.shape}")
    # each row, then `horizon` placeholders for the steps to forecast: invert's z_t - d_t cancels them out
    rows = np.concatenate([history[:, -span:], np.repeat(history[:, -1:], horizon, axis=1)], axis=1)
    target = np.array([span + horizon - 1])
    x = np.concatenate([make_windows(scale(transform(row, spec["log"], spec["differences"]), spec["scaler"])[:, None],
                                     target, spec["seq_length"], horizon)[0] for row in rows])
    forecast = predict(model, torch.from_numpy(x), 1024, torch.device("cpu")).numpy()[:, 0]
    return np.array([invert(f[None], row, target, spec)[0] for f, row in zip(forecast, rows)])


def figures(results: draw.Results, data: dict, meta: dict, task_cfg, seed: int) -> dict:
    """The test steps: actual values, each baseline's forecast (dotted) and each model's (solid)."""
    base = results.baseline_predictions
    lines = {f"{b} baseline (RMSE {v['rmse']:.3g})": ([float(x) for x in base[b]], ":") for b, v in results.baselines.items()}
    for m, columns in results.predictions.items():
        lines[f"{m} (RMSE {results.metrics[m]['rmse']:.3g})"] = ([float(x) for x in columns["predicted"]], "-")
    actual = [float(x) for x in base["actual"]]
    return {"forecasts.png": draw.forecasts(base["time"], actual, lines, meta["unit"],
                                            f"{results.task}: test split, actual vs predicted")}



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
