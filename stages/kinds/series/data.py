"""The forecasting kind's shared data functions: `tensors` for train and evaluate, and the pure NumPy functions
every role of the kind uses (chronological split, transform, scale, window, invert) and the hybrid's SARIMA part.
The reader is in prepare.py (preprocess alone), the scores in metrics.py."""

import numpy as np

from stages.infra.errors import PipelineError


def split_fits(n: int, cfg, task: str) -> tuple[int, int]:
    """The chronological split of n steps, (train_end, val_end), if the training part holds at least one window
    of the task's settings; else the one-line error naming the param."""
    train_end, val_end = chronological_split(n, cfg.val_ratio, cfg.test_ratio)
    if train_end < cfg.seq_length + cfg.horizon + sum(cfg.differences) + 1:
        raise PipelineError(f"params.yaml: {task}.preprocess.seq_length={cfg.seq_length} is too long: the training "
                            f"part has only {train_end} steps (needs seq_length + horizon + sum(differences) + 1)")
    return train_end, val_end


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




def tensors(data: dict, meta: dict, split: str):
    """One split as float32 windows (N, seq_length, F) and targets (N, F), scaled."""
    import torch

    return torch.from_numpy(data[f"x_{split}"]), torch.from_numpy(data[f"y_{split}"])


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




# A hybrid forecaster (Zhang 2003, "Time series forecasting using a hybrid ARIMA and neural network model",
# Neurocomputing 50): a classical model, fitted once and then fixed, forecasts one step ahead; a recurrent network,
# trained on windows of the classical model's past one-step errors (residuals), forecasts the next error; the
# forecast is the sum. The classical part is the SARIMA of the task's baseline settings, on its scale (log or not).

_ONE_STEP: dict = {}  # the filter's answers in this process: every hybrid and seed of a task asks the same question


def sarima_one_step(z: np.ndarray, params: np.ndarray, order, seasonal_order) -> np.ndarray:
    """The one-step-ahead SARIMA forecast of every z[t] from z[:t] alone: the Kalman filter run with `params`
    fixed, never refitted. The first d + D*season forecasts have no differenced history and are unreliable.
    A question asked before in this process (same z, params and orders) gets the same answer from memory."""
    key = (z.astype(np.float64).tobytes(), tuple(map(float, params)), tuple(order), tuple(seasonal_order))
    if key not in _ONE_STEP:
        _ONE_STEP[key] = _filter(z, params, order, seasonal_order)
    return _ONE_STEP[key].copy()


def _filter(z: np.ndarray, params, order, seasonal_order) -> np.ndarray:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # statsmodels' chatter about dates and starting values
        model = sarimax(z, order, seasonal_order)
        # cov_type "none": the parameters are fixed, and their covariance (statsmodels' default, by numerical
        # derivatives of the likelihood) was most of the time of every call while changing no forecast
        fitted = model.filter(np.asarray(params, dtype=np.float64), cov_type="none")
        return np.asarray(fitted.get_prediction().predicted_mean)


def sarimax(z: np.ndarray, order, seasonal_order):
    """statsmodels' SARIMAX of z, the innovation variance concentrated out of the likelihood: it changes no one-step
    forecast, and the parameters left are the coefficients alone, the ones sarima_fit puts on its grid."""
    from statsmodels.tsa.statespace.sarimax import SARIMAX

    return SARIMAX(z.astype(np.float64), order=tuple(order), seasonal_order=tuple(seasonal_order),
                   concentrate_scale=True)


# SARIMA coefficients are kept on a grid of this step. The likelihood is so flat at its maximum that L-BFGS, on
# numerical gradients, stops 1e-4 to 1e-3 away from it, at a point that moves with the BLAS kernels (measured on
# passengers: theta -0.32700 with OpenBLAS's Haswell kernels, -0.32723 with Sandybridge's). Their standard errors
# are ~0.09, so digits past the 3rd decimal carry no information; the grid's best point is chosen by comparing
# likelihoods, which the kernels move by ~1e-12 relative, not by where an optimizer happened to stop.
GRID = 1e-3


def sarima_fit(z: np.ndarray, order, seasonal_order) -> np.ndarray:
    """SARIMA coefficients fitted (maximum likelihood) on z, all of it: pass the part before the test only. The
    optimizer's answer is settled on GRID: the best grid point near it, the same on every machine."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter; the scores say how well it did
        model = sarimax(z, order, seasonal_order)
        return best_on_grid(model.loglike, _mle(model), GRID)


def _mle(model) -> np.ndarray:
    """The optimizer's maximum-likelihood coefficients (a test perturbs this to show sarima_fit absorbs it)."""
    return np.asarray(model.fit(disp=False).params)


def best_on_grid(loglike, start: np.ndarray, step: float) -> np.ndarray:
    """The grid point (multiples of `step`) reached by climbing from the one nearest `start` to the best of its
    3^k neighbours until none is better. Only a tie between two grid points' likelihoods, within the kernels'
    1e-12, could make two machines disagree; NaN (outside the stationary, invertible region) never wins."""
    import itertools

    moves = [np.array(m) for m in itertools.product((-1, 0, 1), repeat=len(start)) if any(m)]
    at = np.round(np.asarray(start, dtype=np.float64) / step).astype(np.int64)
    best = loglike(at * step)
    while True:
        scores = [loglike((at + m) * step) for m in moves]
        i = int(np.nanargmax(np.where(np.isnan(scores), -np.inf, scores)))
        if not scores[i] > best:
            return at * step
        at, best = at + moves[i], scores[i]


def classical_scale(values: np.ndarray, classical: dict) -> np.ndarray:
    return np.log(values) if classical["log"] else values.astype(np.float64)


def fit_classical(values: np.ndarray, train_end: int, fit_end: int, baseline) -> dict:
    """The hybrid's classical part as plain data (saved in the checkpoint): the baseline's SARIMA fitted on
    values[:fit_end] (train + validation, as the SARIMA baseline is), and the spread of its one-step residuals
    over the training part, which scales the network's inputs and target."""
    if not baseline.sarima_order:
        raise PipelineError("params.yaml: a hybrid model needs the task's baseline.sarima_order (its classical part)")
    seasonal = (*baseline.sarima_seasonal_order, baseline.season) if baseline.sarima_seasonal_order else (0, 0, 0, 0)
    classical = {"order": list(baseline.sarima_order), "seasonal_order": list(seasonal), "log": baseline.sarima_log}
    classical["burn_in"] = classical["order"][1] + seasonal[1] * seasonal[3]  # steps with no differenced value
    z = classical_scale(values[:fit_end], classical)
    classical["params"] = sarima_fit(z, classical["order"], seasonal).tolist()
    residuals = residual_series(values[:train_end], classical)[classical["burn_in"]:]
    classical["scale"] = float(residuals.std()) or 1.0
    return classical


def residual_series(values: np.ndarray, classical: dict) -> np.ndarray:
    """z[t] minus the classical one-step forecast of it, on the classical scale, for every t of `values`."""
    z = classical_scale(values, classical)
    return z - sarima_one_step(z, classical["params"], classical["order"], classical["seasonal_order"])


def hybrid_targets(index: np.ndarray, classical: dict, seq_length: int) -> np.ndarray:
    """The targets of a split that have seq_length residuals after the burn-in before them."""
    return index[index >= classical["burn_in"] + seq_length]


def hybrid_windows(values: np.ndarray, classical: dict, targets: np.ndarray, seq_length: int) -> tuple[np.ndarray, np.ndarray]:
    """The network's inputs (N, seq_length, 1): the scaled residuals of the seq_length steps before each target,
    and its targets (N, 1): the scaled residual at the target. Residual t uses values[:t+1] only."""
    residuals = (residual_series(values, classical) / classical["scale"])[:, None]
    return make_windows(residuals, targets, seq_length, 1)


def hybrid_invert(residual_forecast: np.ndarray, values: np.ndarray, targets: np.ndarray, classical: dict) -> np.ndarray:
    """The hybrid forecast of values[targets] in the series' units: the classical one-step forecast plus the
    network's (scaled) residual forecast, on the classical scale, then back (exp of a log forecast: the median)."""
    z = classical_scale(values, classical)
    level = sarima_one_step(z, classical["params"], classical["order"], classical["seasonal_order"])[targets]
    level = level + residual_forecast * classical["scale"]
    return np.exp(level) if classical["log"] else level
