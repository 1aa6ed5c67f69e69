"""Image data functions: IDX files, an ImageFolder decoded once into a uint8 cache, splits, normalisation,
per-image augmentation on whole batches, and the confusion matrix. Arrays in, arrays out; stages do the I/O."""
import gzip
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from stages.errors import PipelineError
from stages.files import atomic_path

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"}


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


def to_tensor(images: np.ndarray, mean: list[float], std: list[float]) -> torch.Tensor:
    """uint8 (N, H, W) or (N, H, W, C) -> float (N, C, H, W), normalised with the training mean and std."""
    x = torch.from_numpy(np.ascontiguousarray(images))
    x = x[:, None] if x.ndim == 3 else x.permute(0, 3, 1, 2)
    mean, std = torch.tensor(mean)[:, None, None], torch.tensor(std)[:, None, None]
    return ((x.float() / 255 - mean) / std).contiguous()


def resize(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 (N, H, W) images -> (N, size, size), bilinear with antialiasing; unchanged when already that size."""
    if images.shape[1:3] == (size, size):
        return images
    x = torch.from_numpy(np.ascontiguousarray(images)).float()[:, None]
    x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x[:, 0].round().clamp(0, 255).to(torch.uint8).numpy()


def augment(x: torch.Tensor, generator: torch.Generator, *, flip: bool, crop_scale: tuple[float, float],
            rotation: float, elastic: float, elastic_sigma: float, jitter: float, mean: list[float],
            std: list[float]) -> torch.Tensor:
    """A new random flip, resized crop, rotation, elastic warp and colour jitter for every image of the batch
    x (B, C, H, W).

    torchvision's v2 transforms on a batched tensor draw once for the whole batch; here each image gets its own
    draw, and all geometry is one affine_grid/grid_sample call. Random numbers come from `generator` on the CPU,
    so runs are reproducible on any device.
    """
    b, device = x.shape[0], x.device
    u = torch.rand(b, 9, generator=generator).to(device)
    area = crop_scale[0] + (crop_scale[1] - crop_scale[0]) * u[:, 0]  # fraction of the image the crop keeps
    # aspect ratio in RandomResizedCrop's default 3/4..4/3, narrowed so the crop fits inside the image
    aspect = torch.exp((u[:, 1] * 2 - 1) * torch.clamp(-area.log(), max=math.log(4 / 3)))
    width, height = (area * aspect).sqrt(), (area / aspect).sqrt()
    angle = (u[:, 2] * 2 - 1) * math.radians(rotation)
    shift_x, shift_y = (u[:, 3] * 2 - 1) * (1 - width), (u[:, 4] * 2 - 1) * (1 - height)  # crop stays inside
    mirror = torch.where((u[:, 5] < 0.5) & flip, -1.0, 1.0)
    cos, sin = angle.cos(), angle.sin()
    theta = torch.stack([torch.stack([width * cos * mirror, -height * sin, shift_x], 1),
                         torch.stack([width * sin * mirror, height * cos, shift_y], 1)], 1)  # (B, 2, 3)
    mean_ = torch.tensor(mean, device=device)[:, None, None]
    std_ = torch.tensor(std, device=device)[:, None, None]
    pixels = x * std_ + mean_  # back to [0, 1], so corners rotated in are black and jitter acts on real colours
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)  # (B, H, W, 2)
    if elastic > 0:
        grid = grid + elastic_field(b, x.shape[2], x.shape[3], elastic, elastic_sigma, generator).to(device, x.dtype)
    pixels = F.grid_sample(pixels, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if jitter > 0:  # ColorJitter(brightness, contrast, saturation = jitter), one factor per image
        brightness, contrast, saturation = (1 + (u[:, 6:9] * 2 - 1) * jitter).T[:, :, None, None, None]
        pixels = pixels * brightness
        level = pixels.mean(dim=(1, 2, 3), keepdim=True)  # contrast scales around the image's mean grey
        pixels = (pixels - level) * contrast + level
        if pixels.shape[1] == 3:
            gray = pixels.mean(dim=1, keepdim=True)
            pixels = gray + (pixels - gray) * saturation
    return (pixels.clamp(0, 1) - mean_) / std_


def elastic_field(b: int, height: int, width: int, alpha: float, sigma: float, generator: torch.Generator) -> torch.Tensor:
    """Random smooth displacements (B, H, W, 2) in affine_grid's [-1, 1] units: uniform noise in [-1, 1] per pixel,
    blurred with a Gaussian of `sigma` pixels and scaled to `alpha` pixels (Simard et al., ICDAR 2003, who used
    alpha 34 and sigma 4 on MNIST; their blur kept the field's scale, ours is normalised to a peak of 1 instead)."""
    noise = torch.rand(b, 2, height, width, generator=generator) * 2 - 1
    radius = max(1, round(3 * sigma))
    kernel = torch.exp(-0.5 * (torch.arange(-radius, radius + 1) / sigma) ** 2)
    kernel = kernel / kernel.sum()
    smooth = F.conv2d(noise.reshape(-1, 1, height, width), kernel[None, None, :, None], padding=(radius, 0))
    smooth = F.conv2d(smooth, kernel[None, None, None, :], padding=(0, radius)).reshape(b, 2, height, width)
    smooth = smooth / smooth.abs().amax(dim=(1, 2, 3), keepdim=True).clamp(min=1e-8)
    scale = torch.tensor([2 / width, 2 / height])  # one pixel in grid units, x then y
    return smooth.permute(0, 2, 3, 1) * alpha * scale


def confusion_matrix(actual: np.ndarray, predicted: np.ndarray, n: int) -> np.ndarray:
    """(n, n) counts; row = actual class, column = predicted class."""
    return np.bincount(np.asarray(actual) * n + np.asarray(predicted), minlength=n * n).reshape(n, n)


def per_class_precision_recall(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Precision (of each predicted column) and recall (of each actual row); 0 where nothing was predicted."""
    hits = np.diag(matrix).astype(np.float64)
    predicted, actual = matrix.sum(axis=0), matrix.sum(axis=1)
    return (np.divide(hits, predicted, out=np.zeros_like(hits), where=predicted > 0),
            np.divide(hits, actual, out=np.zeros_like(hits), where=actual > 0))

