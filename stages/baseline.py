"""Stage baseline: the simple forecasts every model must beat, scored on the same held-out steps as the models.

Forecasting: naive (last observed value, i.e. persistence) and seasonal naive (same step one season earlier).
Writes metrics/<task>/baselines.json and plots/<task>/baselines/predictions.csv.
Usage: python -m stages.baseline <task>
"""
from pathlib import Path

from stages import series
from stages.config import load_params
from stages.errors import run_stage
from stages.files import load_arrays, read_json, write_csv, write_json
from stages.preprocess import PREPARED


def series_baselines(data: dict, horizon: int, season: int) -> dict[str, "np.ndarray"]:
    """Predictions of each baseline for the test targets, in the series' units."""
    targets = data["index_test"]
    forecasts = {"naive": series.naive_forecast(data["series"], targets, horizon)}
    if season:
        forecasts["seasonal_naive"] = series.seasonal_naive_forecast(data["series"], targets, horizon, season)
    return forecasts


def main(argv: list[str]) -> None:
    (task,) = argv
    cfg = load_params().task(task).baseline
    data, meta = load_arrays(PREPARED / task / "data.npz"), read_json(PREPARED / task / "meta.json")
    actual = data["series"][data["index_test"]]
    forecasts = series_baselines(data, meta["horizon"], cfg.season)
    metrics = {name: series.forecast_metrics(actual, predicted) for name, predicted in forecasts.items()}
    write_json(Path("metrics") / task / "baselines.json", metrics)
    write_csv(Path("plots") / task / "baselines" / "predictions.csv",
              {"time": data["times"][data["index_test"]].tolist(), "actual": actual.tolist(),
               **{name: predicted.tolist() for name, predicted in forecasts.items()}})
    for name, values in metrics.items():
        print(f"{task} {name}: " + "  ".join(f"{k} {v:.3f}" for k, v in values.items()))


if __name__ == "__main__":
    run_stage(main)
