"""One training step, and the eager epoch runner that loops it (CPU and MPS).

stages/cuda_graph.py captures this same step as a CUDA graph; stages/training.py picks the runner from the
device. A runner has one interface: `stats()` trains one epoch and returns (mean loss, accuracy or None) as
floats, `describe()` says how it runs (None when there is nothing to say), `eval_batch` is the batch size that
validation should use.
"""
import torch
from torch import nn
from tqdm import tqdm

from stages.inference import autocast


def prepare(model: nn.Module, x: torch.Tensor) -> None:
    """Image batches in channels-last memory: oneDNN's CPU convolutions run faster on it (docs/speed.md) and it is
    the layout tensor cores want under autocast on CUDA. Changes results only by float rounding."""
    if x.dim() == 4:
        model.to(memory_format=torch.channels_last)


def train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor, loss_fn, optimizer,
               totals: tuple[torch.Tensor, torch.Tensor], augment=None, generator: torch.Generator | None = None) -> None:
    """Train on the rows `index` of (x, y): gather, augment, forward, backward, optimiser step; add the summed loss
    and the correct count to `totals` in place, on the device (no host sync). Captured as is in a CUDA graph, so it
    allocates no host tensors and reads nothing back."""
    xb, yb = x.index_select(0, index), y.index_select(0, index)
    if augment is not None:
        xb = augment(xb, generator)
    if xb.dim() == 4:
        xb = xb.contiguous(memory_format=torch.channels_last)
    with autocast(x.device, xb, cache_enabled=False):  # no weight-cast cache: it must not outlive a captured region
        out = model(xb)  # (B, classes) or (B, outputs)
        loss = loss_fn(out.float(), yb)
    optimizer.zero_grad(set_to_none=True)  # backward writes fresh gradients (in a graph: the same memory)
    loss.backward()
    optimizer.step()
    total, correct = totals
    total += loss.detach() * len(index)
    if yb.dtype == torch.long:
        correct += (out.argmax(1) == yb).sum()


class EagerEpochs:
    """Epochs of `train_step` in a seeded random order, every batch including the ragged last one, random numbers
    from `generator` (the CPU generator of seed_everything: CPU results are identical from run to run)."""

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn, optimizer, batch_size: int,
                 generator: torch.Generator, augment=None):
        prepare(model, x)
        self.model, self.x, self.y, self.loss_fn, self.optimizer = model, x, y, loss_fn, optimizer
        self.batch, self.generator, self.augment = batch_size, generator, augment
        self.eval_batch = batch_size

    def describe(self) -> str | None:
        return None

    def stats(self) -> tuple[float, float | None]:
        """One pass over the training split; mean loss (and accuracy for class ids), one host sync at the end."""
        self.model.train()
        device = self.x.device
        totals = torch.zeros((), device=device), torch.zeros((), device=device)
        order = torch.randperm(len(self.x), generator=self.generator).to(device)
        for start in tqdm(range(0, len(order), self.batch), leave=False, disable=None):
            train_step(self.model, self.x, self.y, order[start : start + self.batch], self.loss_fn, self.optimizer,
                       totals, self.augment, self.generator)
        total, correct = (t / len(self.x) for t in totals)
        return total.item(), correct.item() if self.y.dtype == torch.long else None
