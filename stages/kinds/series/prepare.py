"""The forecasting kind's readers, run by preprocess alone: a raw CSV -> checked values -> transformed, split,
scaled windows (data.npz + meta.json)."""
from pathlib import Path

import numpy as np

from stages.infra import paths
from stages.infra.errors import PipelineError
from stages.kinds.series.data import fit_scaler, make_windows, scale, split_fits, target_indices, transform


def the_csv(folder: Path, task: str) -> Path:
    """The one table file in a task's raw folder (a download, a bundled data set or a copy of your own)."""
    found = sorted(p for p in Path(folder).rglob("*") if p.is_file() and not p.name.startswith("."))
    if len(found) != 1:
        names = ", ".join(str(p.relative_to(folder)) for p in found[:5]) or "nothing"
        raise PipelineError(f"{folder}: a series task reads one CSV file, found {names}"
                            + (f" (run: dvc repro {'download' if not found else 'copy'}@{task})" if not found else ""))
    return found[0]


def read_series(path: Path, cfg, task: str) -> tuple[np.ndarray, np.ndarray]:
    """(times as ISO 8601 strings, values as float64) of the CSV at `path`, read as `cfg` (the task's preprocess
    section) declares: its time and value columns, the time format, the frequency (resampled to it, or the rows as
    they are). A missing column, a time that does not parse, NaN, or times out of order or repeated is one line
    naming the file and the key."""
    import csv

    import pandas as pd

    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            head = f.read(1 << 16)
        delimiter = csv.Sniffer().sniff(head, delimiters=",;\t|").delimiter if head.strip() else ","
    except csv.Error:
        delimiter = ","  # one column, or a file the sniffer cannot tell: pandas' default
    except UnicodeDecodeError as err:
        raise PipelineError(f"{path}: not UTF-8 text (bad byte at offset {err.start})") from None
    try:
        columns = list(pd.read_csv(path, sep=delimiter, nrows=0).columns)
        for key, column in (("time", cfg.time), ("value", cfg.value)):
            if column not in columns:
                raise PipelineError(f"params.yaml: {task}.preprocess.{key}: no column {column!r} in {path} "
                                    f"(its columns: {', '.join(map(str, columns))})")
        frame = pd.read_csv(path, sep=delimiter, usecols=[cfg.time, cfg.value])
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise PipelineError(f"{path}: corrupt or unexpected CSV ({str(err).splitlines()[0]})") from None
    try:
        times = pd.to_datetime(frame[cfg.time], format=None if cfg.time_format == "auto" else cfg.time_format)
    except (ValueError, TypeError) as err:
        raise PipelineError(f"params.yaml: {task}.preprocess.time_format {cfg.time_format!r} does not read column "
                            f"{cfg.time!r} of {path} ({str(err).splitlines()[0]})") from None
    try:
        values = pd.to_numeric(frame[cfg.value], errors="raise").astype(float)
    except (ValueError, TypeError) as err:
        raise PipelineError(f"{path}: column {cfg.value!r} holds a value that is not a number "
                            f"({str(err).splitlines()[0]})") from None
    if len(values) == 0:
        raise PipelineError(f"{path}: no data rows (only a header)")
    if values.isna().any():
        raise PipelineError(f"{path}: {int(values.isna().sum())} empty or NaN values in column {cfg.value!r}")
    if not np.isfinite(values).all():
        raise PipelineError(f"{path}: {int((~np.isfinite(values)).sum())} infinite values in column {cfg.value!r}")
    if not times.is_monotonic_increasing or times.duplicated().any():  # else the split would not be chronological
        raise PipelineError(f"{path}: column {cfg.time!r} is not in increasing time order without repeats")
    values.index = pd.DatetimeIndex(times)
    layout = iso_format(cfg.frequency, values.index, task)
    if cfg.resample:
        steps = values.resample(cfg.frequency).mean()
        gaps = int(steps.isna().sum())
        if gaps:  # steps with no record at all: fill from their neighbours in time, and say how many
            print(f"{path}: interpolated {gaps} empty {cfg.frequency} steps")
            steps = steps.interpolate("time")
        values = steps
    # times in ISO 8601, whatever the source's format: vega (dvc plots) and pandas read it
    return values.index.strftime(layout).to_numpy(dtype=str), values.to_numpy()


def iso_format(frequency: str, times, task: str) -> str:
    """How the times are written: to the hour below a day, to the day for days and weeks, to the month above;
    without a frequency, to the hour only where some time has one."""
    import pandas as pd

    if frequency == "none":
        return "%Y-%m-%dT%H:%M" if (times != times.normalize()).any() else "%Y-%m-%d"
    try:
        offset = pd.tseries.frequencies.to_offset(frequency)
    except ValueError:
        raise PipelineError(f"params.yaml: {task}.preprocess.frequency {frequency!r} is not a pandas frequency "
                            f"(MS monthly, QS quarterly, W weekly, D daily, h hourly, 15min), or none") from None
    try:
        fixed = pd.Timedelta(offset)
    except ValueError:  # months, quarters, years have no fixed length
        return "%Y-%m"
    return "%Y-%m-%dT%H:%M" if fixed < pd.Timedelta(days=1) else "%Y-%m-%d"


def windows(values: np.ndarray, cfg, task: str) -> tuple[dict, dict]:
    """Transform (log, differences), split, scale (training statistics only) and window one series; returns
    (arrays, meta). The models see windows of the transformed series; `invert` turns their forecasts back."""
    train_end, val_end = split_fits(len(values), cfg, task)
    lost = sum(cfg.differences)  # the first steps have no differenced value
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
    meta = {"unit": cfg.unit, "scaler": scaler, "horizon": cfg.horizon, "log": cfg.log,
            "differences": list(cfg.differences),
            "shape": {"input_size": 1, "output_size": 1},  # one variable in, its next value out
            "sizes": {s: int(len(arrays[f"y_{s}"])) for s in ("train", "val", "test")}}
    return arrays, meta


def prepare(task: str, cfg) -> tuple[dict, dict]:
    """Chronological split, scaler fitted on the training part only, windows of seq_length steps predicting the
    value `horizon` steps ahead."""
    times, values = read_series(the_csv(paths.raw(task), task), cfg, task)
    arrays, meta = windows(values, cfg, task)
    return arrays | {"times": times}, meta
