"""Readers (and the one writer) of the image file formats the tasks use: MNIST's IDX, the CIFAR-10 python
batches, an ImageFolder of photos, the UCI 8x8 digits CSV. Each returns uint8 arrays; a damaged file is a
PipelineError naming it."""
import gzip
import math
from pathlib import Path

import numpy as np

from stages.errors import PipelineError
from stages.files import atomic_path


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


def write_idx(path: Path, array: np.ndarray) -> None:
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    with atomic_path(path) as tmp:
        tmp.write_bytes(gzip.compress(header + array.tobytes(), mtime=0))  # mtime 0: same bytes, same DVC hash


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
