"""Stage preprocess: raw files -> train/val/test arrays in data/prepared/<task>/ (data.npz + meta.json).

Forecasting: chronological split, scaler fitted on the training part only, windows of seq_length steps
predicting the value `horizon` steps ahead. Images: stratified seeded splits, kept as uint8 (normalised with
training statistics when loaded); flowers are decoded and resized once, here. Text: contiguous held-out
blocks, vocabulary from the training part only. Usage: python -m stages.preprocess <task>
"""
from pathlib import Path

import numpy as np

from stages import series
from stages.config import load_params
from stages.download import CIFAR_FOLDER, RAW, RAW_FILES
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


def split_images(images: np.ndarray, labels: np.ndarray, cfg, test=None) -> dict:
    """Stratified seeded train/val(/test) split; `test` is an official (images, labels) test set if there is one."""
    from stages import images as images_lib

    rng = np.random.default_rng(cfg.split_seed)
    if test is None:
        keep, held = images_lib.stratified_split(labels, cfg.test_ratio, rng)
        test, (images, labels) = (images[held], labels[held]), (images[keep], labels[keep])
    keep, held = images_lib.stratified_split(labels, cfg.val_ratio, rng)
    return {"x_train": images[keep], "y_train": labels[keep], "x_val": images[held], "y_val": labels[held],
            "x_test": test[0], "y_test": test[1]}


def prepare_images(task: str, cfg) -> tuple[dict, dict]:
    from stages import images as images_lib

    folder, skipped, classes = RAW / task, [], [str(d) for d in range(10)]
    if task == "digits":
        train = images_lib.read_idx(folder / RAW_FILES[task]), images_lib.read_idx(folder / "train-labels-idx1-ubyte.gz")
        test = None
        if (folder / "t10k-images-idx3-ubyte.gz").exists():  # the official files have a test set of their own
            test = images_lib.read_idx(folder / "t10k-images-idx3-ubyte.gz"), images_lib.read_idx(folder / "t10k-labels-idx1-ubyte.gz")
        arrays = split_images(*train, cfg, test)
        arrays = {k: images_lib.resize(v, cfg.image_size) if k.startswith("x") else v for k, v in arrays.items()}
    elif task == "flowers":
        images, labels, classes, skipped = images_lib.build_image_cache(folder / RAW_FILES[task], cfg.image_size)
        if skipped:
            print(f"skipped {len(skipped)} files that are not decodable images: {', '.join(skipped[:10])}")
        arrays = split_images(images, labels, cfg)
    elif (folder / CIFAR_FOLDER).exists():  # transfer, online: CIFAR-10 and its official test batch
        (images, labels), test, classes = images_lib.read_cifar10(folder / CIFAR_FOLDER)
        arrays = few_labels_split(images, labels, cfg, test)
    else:  # transfer, offline: the UCI 8x8 digits, upsampled to look like MNIST
        images, labels = read_uci_digits(folder / RAW_FILES[task], cfg.image_size)
        arrays = few_labels_split(images, labels, cfg)
    arrays = {k: v.astype(np.int64) if k.startswith("y") else v for k, v in arrays.items()}
    mean, std = images_lib.channel_stats(arrays["x_train"])  # training images only
    meta = {"kind": "images", "classes": classes, "mean": mean, "std": std, "in_channels": len(mean),
            "image_size": int(arrays["x_train"].shape[1]), "skipped": skipped,
            "sizes": {s: int(len(arrays[f"y_{s}"])) for s in ("train", "val", "test")}}
    return arrays, meta


def few_labels_split(images: np.ndarray, labels: np.ndarray, cfg, test=None) -> dict:
    """train_per_class labelled images per class, val_per_class more for early stopping, and the rest (or the
    official `test` set when there is one) for the test."""
    from stages import images as images_lib

    smallest, labelled = int(np.bincount(labels).min()), cfg.train_per_class + cfg.val_per_class
    if labelled > smallest or (test is None and labelled == smallest):
        raise PipelineError(f"params.yaml: transfer.preprocess.train_per_class + val_per_class is {labelled}, but the "
                            f"smallest class has {smallest} images" + ("" if test is not None else
                                                                      " and some must be left for the test split"))
    rng = np.random.default_rng(cfg.split_seed)
    train, rest = images_lib.few_per_class(labels, cfg.train_per_class, rng, keep_rest=test is None)
    val, unused = images_lib.few_per_class(labels[rest], cfg.val_per_class, rng, keep_rest=test is None)
    val = rest[val]
    test_images, test_labels = test if test is not None else (images[rest[unused]], labels[rest[unused]])
    return {"x_train": images[train], "y_train": labels[train], "x_val": images[val], "y_val": labels[val],
            "x_test": test_images, "y_test": test_labels}


def read_uci_digits(path: Path, image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """UCI optdigits rows (64 pixels 0-16, label) -> uint8 images of image_size px, digit in the centre 5/7."""
    import torch
    import torch.nn.functional as F

    try:
        table = np.loadtxt(path, delimiter=",", dtype=np.float32)
    except (OSError, ValueError, EOFError) as err:
        raise PipelineError(f"{path}: corrupt or unreadable ({str(err).splitlines()[0]})") from None
    if table.ndim != 2 or table.shape[1] != 65:
        raise PipelineError(f"{path}: expected rows of 64 pixels and a label, got shape {table.shape}")
    pixels = torch.from_numpy(table[:, :64].reshape(-1, 1, 8, 8) / 16 * 255)
    # MNIST centres each digit in a 20x20 box inside 28x28 (LeCun et al.); doing the same keeps the strokes
    # where the pretrained filters expect them.
    inner = round(image_size * 20 / 28)
    scaled = F.interpolate(pixels, size=(inner, inner), mode="bilinear", align_corners=False)
    pad = (image_size - inner) // 2
    images = F.pad(scaled, (pad, image_size - inner - pad, pad, image_size - inner - pad))
    return images[:, 0].round().clamp(0, 255).to(torch.uint8).numpy(), table[:, 64].astype(np.int64)


def prepare_text(task: str, cfg) -> tuple[dict, dict]:
    from stages import text as text_lib

    documents = text_lib.read_documents(sorted((RAW / task / RAW_FILES[task]).glob("*")))
    splits = text_lib.split_blocks(documents, cfg.val_ratio, cfg.test_ratio)
    vocab = text_lib.build_vocab(splits["train"], cfg.min_count, cfg.max_vocab)  # training words only
    arrays = {}
    for split, lines in splits.items():
        encoded = text_lib.encode(lines, vocab)
        if cfg.sequences == "prefix":
            arrays[f"x_{split}"], arrays[f"y_{split}"] = text_lib.prefix_sequences(encoded, cfg.max_len)
        else:
            arrays[f"x_{split}"], arrays[f"y_{split}"] = text_lib.window_sequences(encoded, cfg.max_len)
        if split == "train":  # the n-gram baselines count words in these lines
            arrays["train_tokens"] = np.array([i for line in encoded for i in line], dtype=np.int64)
            arrays["train_line_lengths"] = np.array([len(line) for line in encoded], dtype=np.int64)
    empty = [split for split in splits if len(arrays[f"y_{split}"]) == 0]
    if empty:
        raise PipelineError(f"params.yaml: {task}.preprocess.max_len={cfg.max_len} leaves no {'/'.join(empty)} "
                            f"sequences ({cfg.sequences} mode): lower max_len or raise val_ratio/test_ratio")
    meta = {"kind": "text", "vocab": vocab, "max_len": cfg.max_len, "documents": len(documents),
            "sizes": {s: int(len(arrays[f"y_{s}"])) for s in ("train", "val", "test")}}
    return arrays, meta


def main(argv: list[str]) -> None:
    (task,) = argv
    task_cfg = load_params().task(task)
    cfg = task_cfg.preprocess
    if task_cfg.kind == "series":
        times, values = read_series(RAW / task / RAW_FILES[task], task)
        arrays, meta = prepare_series(values, cfg, task)
        arrays["times"] = times
    elif task_cfg.kind == "images":
        arrays, meta = prepare_images(task, cfg)
    else:
        arrays, meta = prepare_text(task, cfg)
    out = PREPARED / task
    save_arrays(out / "data.npz", **arrays)
    write_json(out / "meta.json", meta)
    print(f"{task}: examples per split {meta['sizes']}")


if __name__ == "__main__":
    run_stage(main, "python -m stages.preprocess <task>")
