"""How forecasts are scored (baseline, evaluate): an edit here re-scores, and retrains nothing."""

import numpy as np


def forecast_metrics(actual: np.ndarray, predicted: np.ndarray) -> dict:
    """RMSE, MAE and MAPE (percent) in the series' own units."""
    error = predicted - actual
    metrics = {"rmse": float(np.sqrt(np.mean(error**2))), "mae": float(np.mean(np.abs(error)))}
    if np.all(actual != 0):
        metrics["mape"] = float(np.mean(np.abs(error / actual)) * 100)
    return metrics
