"""The forecasting kind's baselines (stage baseline): the classical forecasts every model must beat, each fitted on
the steps before the test part only and scored on the same test steps as the models."""
import numpy as np

from stages.infra.errors import PipelineError
from stages.kinds.series.data import invert, sarima_fit, sarima_one_step
from stages.kinds.series.metrics import forecast_metrics


def baselines(data: dict, meta: dict, cfg) -> tuple[dict, dict]:
    """The classical forecasts of the test steps, each fitted on the steps before the test part only; (metrics,
    forecast columns). Naive (persistence), seasonal naive, a ridge autoregression on the models' own windows,
    SARIMA and Holt-Winters (one step ahead, parameters fixed before the test part), and the mean of those two."""
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
        if "sarima" in forecasts and "ets" in forecasts:
            # the classic combination: the M competitions found a mean of forecasts often beats its members
            # (Makridakis & Hibon 2000, IJF 16; Bates & Granger 1969)
            forecasts["sarima_ets_mean"] = (forecasts["sarima"] + forecasts["ets"]) / 2
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
    z = np.log(values) if log else values.astype(np.float64)
    predicted = sarima_one_step(z, sarima_fit(z[:fit_end], order, seasonal_order), order, seasonal_order)
    return np.exp(predicted[targets]) if log else predicted[targets]


def ets_forecast(values: np.ndarray, fit_end: int, targets: np.ndarray, seasonal: str, season: int) -> np.ndarray:
    """One-step-ahead Holt-Winters forecasts (additive trend, `seasonal` season) of values[targets]: fitted on
    values[:fit_end], then the whole series smoothed with those parameters fixed."""
    import warnings

    from statsmodels.tsa.exponential_smoothing.ets import ETSModel

    spec = {"error": "add", "trend": "add", "seasonal": seasonal, "seasonal_periods": season}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        params = ets_fit(ETSModel(values[:fit_end].astype(np.float64), **spec))
        smoothed = ETSModel(values.astype(np.float64), **spec).smooth(params)
    return np.asarray(smoothed.fittedvalues)[targets]


def ets_fit(model) -> np.ndarray:
    """Holt-Winters parameters (smoothing weights, initial states) fitted by L-BFGS-B to a tight tolerance, then
    rounded to ETS_DIGITS significant digits. statsmodels' default tolerance stopped at points that moved with the
    BLAS kernels (passengers' alpha 0.9999 with Haswell's, another optimum with Sandybridge's); tight, the two agree
    to ~1e-6 relative, and the rounding leaves that noise below the last digit kept."""
    return np.array([float(f"{p:.{ETS_DIGITS}g}") for p in _ets_mle(model)])


ETS_DIGITS = 3  # moves a weight by <= 0.5% and the initial level by <= 0.25% (forgotten at alpha ~0.9); passengers'
# test RMSE with the rounded parameters: 18.88. The kernels' ~1e-6 straddles a 3rd digit in ~1% of fits


def _ets_mle(model) -> np.ndarray:
    return np.asarray(model.fit(disp=False, maxiter=10000, pgtol=1e-12, factr=10).params)


def naive_forecast(series: np.ndarray, targets: np.ndarray, horizon: int) -> np.ndarray:
    """Last observed value: the persistence baseline."""
    return series[targets - horizon]


def seasonal_naive_forecast(series: np.ndarray, targets: np.ndarray, horizon: int, season: int) -> np.ndarray:
    """Value one season (or as many seasons as the horizon needs) before the target: same month last year."""
    lag = season * int(np.ceil(horizon / season))
    if targets.min() - lag < 0:
        raise PipelineError(f"seasonal baseline needs {lag} steps of history before the first target")
    return series[targets - lag]
