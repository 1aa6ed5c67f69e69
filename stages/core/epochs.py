"""One training step, and the eager epoch runner that loops it (CPU and MPS, and every device under DDP).

stages/core/cuda_graph.py captures this same step as a CUDA graph; stages/core/training.py picks the runner from the
device. A runner has one interface: `stats()` trains one epoch and returns (mean loss, accuracy or None) as
floats, `describe()` says how it runs (None when there is nothing to say), `eval_batch` is the batch size that
validation should use.

With several ranks (params.yaml `scale`), every rank draws the same global order and augments the whole global
batch, so each image gets the draw it gets in one process; each then trains its contiguous slice of the batch, its
loss weighted by its share, and DDP's averaged gradient is the one process's gradient of the batch mean (up to
float summation order). Dropout masks are each rank's own, and BatchNorm normalises each rank's slice (DDP's
default), so models with either match one process only in distribution.
"""
import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from stages.core.inference import autocast


def prepare(model: nn.Module, x: torch.Tensor) -> None:
    """Image batches in channels-last memory: oneDNN's CPU convolutions run faster on it (docs/speed.md) and it is
    the layout tensor cores want under autocast on CUDA. Changes results only by float rounding."""
    if x.dim() == 4:
        model.to(memory_format=torch.channels_last)


def rank_slice(xb: torch.Tensor, yb: torch.Tensor, rank: int, world: int):
    """This rank's contiguous slice of a global batch and its loss weight, len(slice) * world / len(batch), so that
    DDP's mean over ranks of the weighted gradients is the batch mean's gradient. A rank whose slice is empty (a
    ragged last batch shorter than the world) trains on one row with weight 0: it must still join the all-reduce."""
    rows = torch.tensor_split(torch.arange(len(xb), device=xb.device), world)[rank]
    weight = len(rows) * world / len(xb)
    return (xb[rows], yb[rows], weight) if len(rows) else (xb[:1], yb[:1], 0.0)


def train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor, loss_fn, optimizer,
               totals: tuple[torch.Tensor, torch.Tensor], augment=None, generator: torch.Generator | None = None,
               part: tuple[int, int] = (0, 1)) -> None:
    """Train on the rows `index` of (x, y): gather, augment, forward, backward, optimiser step; add the summed loss
    and the correct count to `totals` in place, on the device (no host sync). Captured as is in a CUDA graph, so it
    allocates no host tensors and reads nothing back. `part` is (rank, world size): with several ranks, this rank
    trains its slice of the batch (rank_slice)."""
    xb, yb = x.index_select(0, index), y.index_select(0, index)
    if augment is not None:
        xb = augment(xb, generator)  # the whole global batch, on every rank: the random draws stay in step
    rank, world = part
    weight = 1.0
    if world > 1:
        xb, yb, weight = rank_slice(xb, yb, rank, world)
    if xb.dim() == 4:
        xb = xb.contiguous(memory_format=torch.channels_last)
    with autocast(x.device, xb, cache_enabled=False):  # no weight-cast cache: it must not outlive a captured region
        out = model(xb)  # (B, classes) or (B, outputs)
        loss = loss_fn(out.float(), yb)
    optimizer.zero_grad(set_to_none=True)  # backward writes fresh gradients (in a graph: the same memory)
    (loss * weight if world > 1 else loss).backward()
    optimizer.step()
    total, correct = totals
    if world == 1:
        total += loss.detach() * len(index)
        if yb.dtype == torch.long:
            correct += (out.argmax(1) == yb).sum()
    elif weight > 0:  # this rank's rows only: stats() sums the ranks
        total += loss.detach() * len(yb)
        if yb.dtype == torch.long:
            correct += (out.argmax(1) == yb).sum()


def world() -> tuple[int, int]:
    """(rank, world size) of the process group this process is in; (0, 1) outside one."""
    return (dist.get_rank(), dist.get_world_size()) if dist.is_available() and dist.is_initialized() else (0, 1)


class EagerEpochs:
    """Epochs of `train_step` in a seeded random order, every batch including the ragged last one, random numbers
    from `generator` (the CPU generator of seed_everything: CPU results are identical from run to run). In a
    process group the model trains wrapped in DDP, each rank on its slice of every batch."""

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn, optimizer, batch_size: int,
                 generator: torch.Generator, augment=None):
        prepare(model, x)
        self.part = world()
        if self.part[1] > 1:  # DDP copies rank 0's weights to every rank here, and averages gradients in backward
            model = nn.parallel.DistributedDataParallel(model, device_ids=[x.device] if x.device.type == "cuda" else None)
        self.model, self.x, self.y, self.loss_fn, self.optimizer = model, x, y, loss_fn, optimizer
        self.batch, self.generator, self.augment = batch_size, generator, augment
        self.eval_batch = batch_size

    def describe(self) -> str | None:
        rank, size = self.part
        if size == 1:
            return None
        graphs = "; CUDA graph capture off under DDP (the step runs eagerly)" if self.x.device.type == "cuda" else ""
        return f"DDP: {size} ranks, each training its slice of every batch of {self.batch}{graphs}"

    def stats(self) -> tuple[float, float | None]:
        """One pass over the training split; mean loss (and accuracy for class ids), one host sync at the end."""
        self.model.train()
        device = self.x.device
        totals = torch.zeros((), device=device), torch.zeros((), device=device)
        order = torch.randperm(len(self.x), generator=self.generator).to(device)
        for start in tqdm(range(0, len(order), self.batch), leave=False, disable=None):
            train_step(self.model, self.x, self.y, order[start : start + self.batch], self.loss_fn, self.optimizer,
                       totals, self.augment, self.generator, self.part)
        if self.part[1] > 1:  # every rank's share of the epoch's loss and hits
            for t in totals:
                dist.all_reduce(t)
        total, correct = (t / len(self.x) for t in totals)
        return total.item(), correct.item() if self.y.dtype == torch.long else None
