"""Stage preprocess: raw file -> train/val/test arrays in data/prepared/<task>/ (data.npz + meta.json).

Forecasting: chronological split, scaler fitted on the training part only, windows of seq_length steps
predicting the value `horizon` steps ahead. Usage: python -m stages.preprocess <task>
"""
from pathlib import Path

import numpy as np

from stages import series
from stages.config import load_params
from stages.download import RAW, RAW_FILES
from stages.errors import PipelineError, run_stage
from stages.files import save_arrays, write_json

PREPARED = Path("data/prepared")
# (time column, value column, time format, resampling rule, unit) of each forecasting task's raw CSV.
SERIES_COLUMNS = {
    "passengers": ("Month", "Passengers", "%Y-%m", None, "passengers"),
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
    if values.isna().any():
        raise PipelineError(f"{path}: {int(values.isna().sum())} NaN values in column {value_col!r}")
    values.index = times
    if resample:
        hourly = values.resample(resample).mean()
        gaps = int(hourly.isna().sum())
        if gaps:  # hours with no record at all: fill from their neighbours in time, and say how many
            print(f"{path}: interpolated {gaps} empty {resample} steps")
            hourly = hourly.interpolate("time")
        values = hourly
    return values.index.strftime(time_format).to_numpy(dtype=str), values.to_numpy()


def prepare_series(values: np.ndarray, cfg, task: str) -> tuple[dict, dict]:
    """Split, scale (training statistics only) and window one series; returns (arrays, meta)."""
    train_end, val_end = series.chronological_split(len(values), cfg.val_ratio, cfg.test_ratio)
    if train_end < cfg.seq_length + cfg.horizon + 1:
        raise PipelineError(f"params.yaml: {task}.preprocess.seq_length={cfg.seq_length} is too long: the training "
                            f"part has only {train_end} steps (needs seq_length + horizon + 1)")
    scaler = series.fit_scaler(values[:train_end], cfg.scaler)
    scaled = series.scale(values, scaler)[:, None]  # (T, F=1)
    arrays = {"series": values, "scaler": np.array([scaler["offset"], scaler["scale"]])}
    for split, (start, end) in {"train": (0, train_end), "val": (train_end, val_end), "test": (val_end, len(values))}.items():
        targets = series.target_indices(start, end, cfg.seq_length, cfg.horizon)
        arrays[f"x_{split}"], arrays[f"y_{split}"] = series.make_windows(scaled, targets, cfg.seq_length, cfg.horizon)
        arrays[f"index_{split}"] = targets
    meta = {"kind": "series", "unit": SERIES_COLUMNS[task][4], "scaler": scaler, "n_features": 1,
            "horizon": cfg.horizon, "seq_length": cfg.seq_length,
            "sizes": {s: int(len(arrays[f"y_{s}"])) for s in ("train", "val", "test")}}
    return arrays, meta


def main(argv: list[str]) -> None:
    (task,) = argv
    cfg = load_params().task(task).preprocess
    times, values = read_series(RAW / task / RAW_FILES[task], task)
    arrays, meta = prepare_series(values, cfg, task)
    out = PREPARED / task
    save_arrays(out / "data.npz", times=times, **arrays)
    write_json(out / "meta.json", meta)
    print(f"{task}: {len(values)} steps -> windows {meta['sizes']} (seq_length {cfg.seq_length}, horizon {cfg.horizon})")


if __name__ == "__main__":
    run_stage(main)
