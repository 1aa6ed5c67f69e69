"""The forecasting kind's figures (stage plot): actual values beside every forecast on the test steps."""
from stages import figures as draw

HEADLINE, LOWER_IS_BETTER = "rmse", True  # the test metric metrics/summary/<task>.json lists per model


def figures(results: draw.Results, data: dict, meta: dict, task_cfg, seed: int) -> dict:
    """The test steps: actual values, each baseline's forecast (dotted) and each model's (solid)."""
    base = results.baseline_predictions
    lines = {f"{b} baseline (RMSE {v['rmse']:.3g})": ([float(x) for x in base[b]], ":") for b, v in results.baselines.items()}
    for m, columns in results.predictions.items():
        lines[f"{m} (RMSE {results.metrics[m]['rmse']:.3g})"] = ([float(x) for x in columns["predicted"]], "-")
    actual = [float(x) for x in base["actual"]]
    return {"forecasts.png": draw.forecasts(base["time"], actual, lines, meta["unit"],
                                            f"{results.task}: test split, actual vs predicted")}
