"""The forecasting kind's figures (stage plot): actual values beside every forecast on the test steps."""
import numpy as np

from stages.core import figures as draw
from stages.core.significance import diebold_mariano, verdict
from stages.infra.errors import PipelineError

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


def versus(results: draw.Results, best: str) -> dict[str, str]:
    """Each model's Diebold-Mariano test (squared error, HLN correction) against baseline `best` on the same test
    steps, in words: "beats" only where p < 0.05."""
    base = results.baseline_predictions
    actual = np.array([float(x) for x in base["actual"]])
    reference = np.array([float(x) for x in base[best]]) - actual
    out = {}
    for m, columns in results.predictions.items():
        if columns["time"] != base["time"]:
            raise PipelineError(f"{results.task}: {m}'s test steps are not the baselines': re-run evaluate and baseline")
        errors = np.array([float(x) for x in columns["predicted"]]) - actual
        statistic, p = diebold_mariano(errors, reference)
        out[m] = verdict(p, statistic < 0, len(actual), "steps")
    return out


def test_table(results: draw.Results) -> dict[str, list]:
    """`dvc plots show`'s test picture (.dvc/plots/series_test.json): the actual series, every baseline's and
    every model's forecast of the test part, one row per forecast and step: model, x (time), y (value)."""
    baseline = results.baseline_predictions
    times, rows = baseline["time"], {name: baseline[name] for name in baseline if name != "time"}
    rows |= {m: p["predicted"] for m, p in results.predictions.items()}
    return {"model": [n for n, v in rows.items() for _ in v], "x": [t for v in rows.values() for t in times[:len(v)]],
            "y": [y for v in rows.values() for y in v]}
