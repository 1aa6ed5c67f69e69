"""The training loop every task shares: whole data set as tensors on the device, early stopping on validation.

The test split never comes here: early stopping and the choice of the best epoch see only validation data.

Two ways to run an epoch, picked from the device (no param):
- CPU and MPS: `train_epoch`, eager, every batch including the ragged last one, random numbers from the CPU
  generator `seed_everything` returns (CPU results are identical from run to run).
- CUDA: `CudaEpochs`, the whole train step (batch gather, augmentation, forward, backward, fused Adam) captured
  once as a CUDA graph and replayed, batches of one fixed size (the ragged last batch of each shuffled epoch is
  dropped), random numbers from a CUDA generator: no host sync and one launch per step.
"""
import copy
import random
import re
import time
import warnings
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from stages import paths
from stages.errors import PipelineError, one_line
from stages.files import save_checkpoint, write_csv
from stages.inference import autocast


def seed_everything(seed: int) -> torch.Generator:
    """Seed every library; return the generator that shuffles batches (passed around, not global)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def evaluate(model: nn.Module, loss_fn, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> tuple[float, float | None]:
    """Mean loss (and accuracy for class ids) over a whole split, with one host sync at the end."""
    model.eval()
    device = x.device
    total, correct = torch.zeros((), device=device), torch.zeros((), device=device)
    with torch.no_grad(), autocast(device, x):
        for start in range(0, len(x), batch_size):
            xb, yb = x[start : start + batch_size], y[start : start + batch_size]
            out = model(xb)
            total += loss_fn(out.float(), yb) * len(xb)
            if yb.dtype == torch.long:
                correct += (out.argmax(1) == yb).sum()
    accuracy = (correct / len(x)).item() if y.dtype == torch.long else None
    return (total / len(x)).item(), accuracy


def loss_for(y: torch.Tensor) -> nn.Module:
    """Cross-entropy for class ids (images, next words), mean squared error for real-valued targets (forecasts)."""
    return nn.CrossEntropyLoss() if y.dtype == torch.long else nn.MSELoss()


def make_optimizer(parameters, cfg, device: torch.device) -> torch.optim.Optimizer:
    """Adam; on CUDA the fused kernel (one launch for every tensor), capturable so it can sit in a CUDA graph."""
    if device.type == "cuda":
        return torch.optim.Adam(parameters, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True, capturable=True)
    return torch.optim.Adam(parameters, lr=cfg.lr, weight_decay=cfg.weight_decay)


def train_epoch(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn, optimizer, batch_size: int,
                generator: torch.Generator, augment=None) -> tuple[float, float | None]:
    """One pass over the training split in a seeded random order; mean loss (and accuracy for class ids), with
    one host sync at the end. `augment(x, generator)` transforms each batch."""
    model.train()
    device, channels_last = x.device, x.dim() == 4
    total, correct = torch.zeros((), device=device), torch.zeros((), device=device)
    order = torch.randperm(len(x), generator=generator).to(device)
    for start in tqdm(range(0, len(order), batch_size), leave=False, disable=None):
        index = order[start : start + batch_size]
        xb, yb = x[index], y[index]
        if augment is not None:
            xb = augment(xb, generator)
        if channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        with autocast(device, xb):
            out = model(xb)
            loss = loss_fn(out.float(), yb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.detach() * len(index)  # stays on the device: no per-step .item() sync
        if yb.dtype == torch.long:
            correct += (out.argmax(1) == yb).sum()
    return (total / len(x)).item(), (correct / len(x)).item() if y.dtype == torch.long else None


def fit(model: nn.Module, train: tuple, val: tuple, cfg, generator: torch.Generator, parameters=None, augment=None,
        log_epoch=None) -> tuple[dict, list[dict]]:
    """Train with Adam, stopping early on the validation loss; return (the state_dict of the epoch with the lowest
    validation loss, per-epoch history).

    train and val are (x, y) tensors on the model's device. `parameters` restricts what Adam updates (frozen
    layers in transfer learning); `log_epoch(stats)` receives every epoch's numbers (main() logs them to MLflow).
    """
    (x_train, y_train), device = train, train[0].device
    if len(val[0]) == 0:
        raise PipelineError("the validation split is empty, so early stopping has nothing to measure: "
                            "raise the task's preprocess val_ratio (or shorten its windows)")
    _prepare(model, device, x_train)
    loss_fn = loss_for(y_train)
    optimizer = make_optimizer(model.parameters() if parameters is None else parameters, cfg, device)
    if device.type == "cuda":
        epochs = CudaEpochs(model, x_train, y_train, loss_fn, optimizer, cfg.batch_size, generator.initial_seed(),
                            augment)
        print(epochs.describe(), flush=True)
        run_epoch, eval_batch = epochs.epoch_stats, max(cfg.batch_size, 256)
    else:
        run_epoch, eval_batch = lambda: train_epoch(model, x_train, y_train, loss_fn, optimizer, cfg.batch_size,
                                                    generator, augment), cfg.batch_size
    # cosine: the step size falls smoothly to 0 by the last epoch (Loshchilov & Hutter, SGDR, ICLR 2017), so the
    # last epochs fine-tune instead of bouncing around the minimum at the full learning rate
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, cfg.epochs) if cfg.lr_schedule == "cosine" else None
    best, waited, history = {"val_loss": float("inf"), "state_dict": None, "epoch": 0}, 0, []
    for epoch in range(1, cfg.epochs + 1):
        started, lr = time.perf_counter(), optimizer.param_groups[0]["lr"]  # the step size this epoch trains with
        train_loss, train_accuracy = run_epoch()
        if scheduler is not None:
            with warnings.catch_warnings():  # graph replays step Adam without calling optimizer.step(), which the
                warnings.filterwarnings("ignore", re.escape("Detected call of `lr_scheduler.step()`"))  # scheduler watches
                scheduler.step()
        if not np.isfinite(train_loss):
            raise PipelineError(f"training diverged at epoch {epoch} (loss {train_loss}): lower <task>.train.lr "
                                "in params.yaml")
        val_loss, val_accuracy = evaluate(model, loss_fn, *val, eval_batch)
        stats = {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss}
        if val_accuracy is not None:
            stats |= {"train_accuracy": train_accuracy, "val_accuracy": val_accuracy}
        history.append(stats | {"lr": lr})
        if log_epoch is not None:
            log_epoch(history[-1])
        improved = val_loss < best["val_loss"]
        if improved:
            best, waited = {"val_loss": val_loss, "state_dict": copy.deepcopy(model.state_dict()), "epoch": epoch}, 0
        else:
            waited += 1
        shown = "  ".join(f"{k} {v:.4f}" for k, v in stats.items() if k != "epoch")
        print(f"epoch {epoch:3d}/{cfg.epochs}  {shown}  {time.perf_counter() - started:.1f}s{'  *' if improved else ''}", flush=True)
        if waited >= cfg.patience:
            print(f"early stop: no better val_loss for {cfg.patience} epochs; best epoch {best['epoch']}")
            break
    if device.type == "cuda":
        optimizer.zero_grad(set_to_none=True)  # the gradients live in the CUDA graph's memory: let it go
    if best["state_dict"] is None:
        raise PipelineError(f"validation loss was never finite in {len(history)} epochs (got {history[-1]['val_loss']})")
    model.load_state_dict(best["state_dict"])
    return best, history


class CudaEpochs:
    """Training epochs on CUDA with no host sync inside an epoch and one launch per step.

    Batches have one fixed size, min(batch_size, examples): each epoch draws a new order and trains on its first
    steps * batch examples, dropping the ragged rest (fewer than one batch; a different rest every epoch, as
    DataLoader(drop_last=True) does). The step reads its batch from a device-side order and step counter, draws
    augmentation numbers from a CUDA generator seeded with `seed`, runs forward and backward (bf16 autocast for
    image batches) and fused Adam, and adds loss and correct count to device totals. It is captured once as a
    CUDA graph after a few warm-up steps (cuDNN autotuning, Adam's state), whose effect on weights, Adam's state
    and random streams is undone; each step is then one graph replay. If capture fails, the same step runs
    eagerly (still sync-free) and `describe()` says why. The learning rate lives in a device tensor that the
    graph reads, refilled from the optimiser's param groups before each epoch, so LR schedulers keep working.
    """

    WARMUP_STEPS = 3

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn, optimizer, batch_size: int,
                 seed: int, augment=None, capture: bool = True):
        self.model, self.x, self.y, self.loss_fn, self.optimizer, self.augment = model, x, y, loss_fn, optimizer, augment
        self.device = device = x.device
        self.batch = max(1, min(batch_size, len(x)))
        self.steps, self.dropped = divmod(len(x), self.batch)
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.order = torch.zeros(self.steps, self.batch, dtype=torch.long, device=device)
        self.counter = torch.zeros(1, dtype=torch.long, device=device)
        self.total = torch.zeros((), device=device)
        self.correct = torch.zeros((), dtype=torch.long, device=device)
        self.lrs = [torch.full((), float(g["lr"]), device=device) for g in optimizer.param_groups]
        self.graph, self.why_eager = None, "capture off"
        started = time.perf_counter()
        self._warm_up()
        if capture:
            self._capture()
        torch.cuda.synchronize(device)
        self.warmup_seconds = time.perf_counter() - started

    def describe(self) -> str:
        how = "CUDA graph, one replay per step" if self.graph is not None else f"eager ({self.why_eager})"
        return (f"cuda: {how}; batch {self.batch} x {self.steps} steps an epoch, {self.dropped} examples of each "
                f"shuffled epoch dropped; warm-up and capture {self.warmup_seconds:.2f}s (not in epoch times)")

    def _step(self) -> None:
        index = self.order.index_select(0, self.counter).view(-1)  # this step's row of the epoch's order
        self.counter += 1
        xb, yb = self.x.index_select(0, index), self.y.index_select(0, index)
        if self.augment is not None:
            xb = self.augment(xb, self.generator)
        if xb.dim() == 4:
            xb = xb.contiguous(memory_format=torch.channels_last)
        with autocast(self.device, xb, cache_enabled=False):
            out = self.model(xb)
            loss = self.loss_fn(out.float(), yb)
        self.optimizer.zero_grad(set_to_none=True)  # backward writes fresh gradients (in a graph: the same memory)
        loss.backward()
        self.optimizer.step()
        self.total += loss.detach() * self.batch
        if yb.dtype == torch.long:
            self.correct += (out.argmax(1) == yb).sum()

    @contextmanager
    def _tensor_lr(self):
        """The param groups read their lr from self.lrs (what a captured step must do), then get their floats back."""
        groups = self.optimizer.param_groups
        floats = [g["lr"] for g in groups]
        for group, lr in zip(groups, self.lrs):
            lr.fill_(float(group["lr"]))
            group["lr"] = lr
        try:
            yield
        finally:
            for group, value in zip(groups, floats):
                group["lr"] = value

    def _warm_up(self) -> None:
        """A few real steps on a side stream (cuDNN picks its kernels, Adam makes its state), then undone."""
        weights = {k: v.clone() for k, v in self.model.state_dict().items()}
        streams = self.generator.get_state(), torch.cuda.get_rng_state(self.device)
        self.order.copy_(torch.arange(self.steps * self.batch, device=self.device).view(self.steps, self.batch))
        self.model.train()
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side), self._tensor_lr():
            for _ in range(self.WARMUP_STEPS):
                self.counter.zero_()
                self._step()
        torch.cuda.current_stream(self.device).wait_stream(side)
        self._restore(weights, streams)

    def _restore(self, weights: dict, streams: tuple) -> None:
        with torch.no_grad():
            for key, value in self.model.state_dict().items():  # in place: a captured graph holds these addresses
                value.copy_(weights[key])
            for state in self.optimizer.state.values():  # as if Adam had never stepped
                for value in state.values():
                    if torch.is_tensor(value):
                        value.zero_()
        self.generator.set_state(streams[0])
        torch.cuda.set_rng_state(streams[1], self.device)

    def _capture(self) -> None:
        graph, stream = torch.cuda.CUDAGraph(), torch.cuda.current_stream(self.device)
        if hasattr(graph, "register_generator_state"):
            graph.register_generator_state(self.generator)  # replays draw fresh numbers from it
        else:  # older torch: augmentation draws from the default CUDA generator, which every graph tracks
            self.generator = torch.cuda.default_generators[self.device.index or torch.cuda.current_device()]
        streams = self.generator.get_state(), torch.cuda.get_rng_state(self.device)
        try:
            with self._tensor_lr(), torch.cuda.graph(graph):
                self._step()
            self.graph = graph
        except Exception as err:  # noqa: BLE001 - any capture failure falls back to the same step, eagerly
            self.graph, self.why_eager = None, f"CUDA graph capture failed: {one_line(err)[:300]}"
            torch.cuda.set_stream(stream)  # a failed capture can leave its side stream current
            self.optimizer.zero_grad(set_to_none=True)
            torch.cuda.synchronize(self.device)
        finally:
            self.generator.set_state(streams[0])
            torch.cuda.set_rng_state(streams[1], self.device)

    def epoch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """One epoch in a new random order; (mean loss, accuracy) as device tensors, so the caller decides when to
        sync. Nothing here waits for the GPU."""
        for lr, group in zip(self.lrs, self.optimizer.param_groups):
            lr.fill_(float(group["lr"]))
        order = torch.randperm(len(self.x), generator=self.generator, device=self.device)
        self.order.copy_(order[: self.steps * self.batch].view(self.steps, self.batch))
        self.counter.zero_()
        self.total.zero_()
        self.correct.zero_()
        self.model.train()
        for _ in range(self.steps):
            if self.graph is not None:
                self.graph.replay()
            else:
                self._step()
        used = self.steps * self.batch
        return self.total / used, self.correct / used

    def epoch_stats(self) -> tuple[float, float | None]:
        """One epoch; its mean loss (and accuracy for class ids) as floats: one host sync, at the end."""
        loss, accuracy = self.epoch()
        return loss.item(), accuracy.item() if self.y.dtype == torch.long else None


def _prepare(model: nn.Module, device: torch.device, x: torch.Tensor) -> None:
    """Settings that make training faster and change results only by float rounding."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick its fastest kernels once
    # Image batches in channels-last memory: oneDNN's CPU convolutions run 10-20% faster on it (bench/train_loop.py)
    # and it is the layout tensor cores want under autocast on CUDA.
    if x.dim() == 4:
        model.to(memory_format=torch.channels_last)


def save_trained(task: str, name: str, model_name: str, config: dict, best: dict, history: list[dict],
                 extra: dict | None = None) -> None:
    """The best epoch's checkpoint (a dict: model name and constructor config, state_dict, epoch) and the
    per-epoch history that `dvc plots` draws. No MLflow run id inside: the same training gives the same bytes,
    and the run is found by the checkpoint's hash (tracking.training_run)."""
    save_checkpoint(paths.checkpoint(task, name), {
        "model": model_name, "config": config, "state_dict": {k: v.cpu() for k, v in best["state_dict"].items()},
        "epoch": best["epoch"]} | (extra or {}))
    write_csv(paths.history(task, name), {k: [h.get(k) for h in history] for k in history[0]})
    print(f"best epoch {best['epoch']} (val_loss {best['val_loss']:.4f}) -> {paths.checkpoint(task, name)}")
