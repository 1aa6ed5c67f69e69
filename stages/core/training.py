"""The training loop every task shares: whole data set as tensors on the device, early stopping on validation.

The test split never comes here: early stopping and the choice of the best epoch see only validation data.
An epoch runs the one train step of stages/core/epochs.py, picked by device (no param): eagerly on CPU and MPS
(stages/core/epochs.py), captured as a CUDA graph on CUDA (stages/core/cuda_graph.py). With several ranks
(params.yaml `scale`) every rank runs this same loop: the step eagerly under DDP, and every decision (early
stopping, the best epoch, a refusal) made on rank 0's validation numbers, which every rank receives.
"""
import copy
import random
import re
import time
import warnings

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from stages.core.cuda_graph import CudaEpochs
from stages.core.epochs import EagerEpochs, world
from stages.core.inference import autocast
from stages.infra import paths
from stages.infra.errors import PipelineError
from stages.infra.files import save_checkpoint, write_csv


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
    if world()[1] > 1:  # rank 0's numbers on every rank, so that every rank decides the same
        dist.broadcast(total, 0)
        dist.broadcast(correct, 0)
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


def epoch_runner(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn, optimizer, batch_size: int,
                 generator: torch.Generator, augment=None, capture: bool = True):
    """The epoch runner for x's device: the captured step on CUDA (seeded from `generator`'s seed), else the eager
    loop drawing from `generator`. `capture=False` runs the CUDA runner's step eagerly (tests, bench). Under DDP the
    eager loop on every device: capturing DDP's all-reduce in a graph is not done here yet."""
    if x.device.type == "cuda" and world()[1] == 1:
        return CudaEpochs(model, x, y, loss_fn, optimizer, batch_size, generator.initial_seed(), augment, capture)
    return EagerEpochs(model, x, y, loss_fn, optimizer, batch_size, generator, augment)


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
    loss_fn = loss_for(y_train)
    optimizer = make_optimizer(model.parameters() if parameters is None else parameters, cfg, device)
    epochs = epoch_runner(model, x_train, y_train, loss_fn, optimizer, cfg.batch_size, generator, augment)
    if epochs.describe() is not None:
        print(epochs.describe(), flush=True)
    # cosine: the step size falls smoothly to 0 by the last epoch (Loshchilov & Hutter, SGDR, ICLR 2017), so the
    # last epochs fine-tune instead of bouncing around the minimum at the full learning rate
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, cfg.epochs) if cfg.lr_schedule == "cosine" else None
    best, waited, history = {"val_loss": float("inf"), "state_dict": None, "epoch": 0}, 0, []
    for epoch in range(1, cfg.epochs + 1):
        started, lr = time.perf_counter(), optimizer.param_groups[0]["lr"]  # the step size this epoch trains with
        train_loss, train_accuracy = epochs.stats()
        if scheduler is not None:
            with warnings.catch_warnings():  # graph replays step Adam without calling optimizer.step(), which the
                warnings.filterwarnings("ignore", re.escape("Detected call of `lr_scheduler.step()`"))  # scheduler watches
                scheduler.step()
        if not np.isfinite(train_loss):
            raise PipelineError(f"training diverged at epoch {epoch} (loss {train_loss}): lower <task>.train.lr "
                                "in params.yaml")
        val_loss, val_accuracy = evaluate(model, loss_fn, *val, epochs.eval_batch)
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
        mark = "  *" if improved else ""
        print(f"epoch {epoch:3d}/{cfg.epochs}  {shown}  {time.perf_counter() - started:.1f}s{mark}", flush=True)
        if waited >= cfg.patience:
            print(f"early stop: no better val_loss for {cfg.patience} epochs; best epoch {best['epoch']}")
            break
    optimizer.zero_grad(set_to_none=True)  # let the last gradients go (on CUDA they hold the graph's memory)
    if best["state_dict"] is None:
        raise PipelineError(f"validation loss was never finite in {len(history)} epochs (got {history[-1]['val_loss']})")
    model.load_state_dict(best["state_dict"])
    return best, history


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
