"""The training loop every task shares: whole data set as tensors on the device, early stopping on validation.

The test split never comes here: early stopping and the choice of the best epoch see only validation data.
"""
import copy
import random
import time

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from stages.errors import PipelineError


def pick_device(name: str) -> torch.device:
    """`auto` means cuda, then mps, then cpu."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise PipelineError("params.yaml: device is cuda but no CUDA GPU is available (use auto)")
    if name == "mps" and not torch.backends.mps.is_available():
        raise PipelineError("params.yaml: device is mps but this machine has no Apple MPS backend (use auto)")
    return torch.device(name)


def seed_everything(seed: int) -> torch.Generator:
    """Seed every library; return the generator that shuffles batches (passed around, not global)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def load_split(data: dict, meta: dict, split: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """One split as (x, y) tensors on the device: these data sets fit in memory, so no DataLoader is needed.

    Images are stored as uint8 and normalised here with the training split's mean and std.
    """
    x, y = data[f"x_{split}"], torch.from_numpy(data[f"y_{split}"])
    if meta["kind"] == "images":
        from stages.images import to_tensor

        x = to_tensor(x, meta["mean"], meta["std"])
    else:
        x = torch.from_numpy(x)
    return x.to(device), y.to(device)


def _loss_and_accuracy(model, loss_fn, x, y, batch_size, device) -> tuple[float, float | None]:
    """Mean loss (and accuracy for class labels) over a whole split, with one host sync at the end."""
    model.eval()
    total, correct = torch.zeros((), device=device), torch.zeros((), device=device)
    with torch.no_grad(), _autocast(device, x):
        for start in range(0, len(x), batch_size):
            xb, yb = x[start : start + batch_size], y[start : start + batch_size]
            out = model(xb)
            total += loss_fn(out.float(), yb) * len(xb)
            if yb.dtype == torch.long:
                correct += (out.argmax(1) == yb).sum()
    accuracy = (correct / len(x)).item() if y.dtype == torch.long else None
    return (total / len(x)).item(), accuracy


def uses_bf16(device: torch.device, x: torch.Tensor) -> bool:
    """bf16 autocast on CUDA, for image batches (B, C, H, W) only: it roughly halves the time of conv layers and
    needs no loss scaling. Forecasts and word logits stay float32: bf16 keeps 8 bits of mantissa, which moved
    single temperature forecasts by up to 0.19 °C and the GRU's passengers MAE from 37.66 to 38.33 (CPU bf16
    autocast on the shipped checkpoints), as much as the gaps between the models."""
    return device.type == "cuda" and x.dim() == 4


def _autocast(device: torch.device, x: torch.Tensor):
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=uses_bf16(device, x))


def fit(model: nn.Module, train: tuple, val: tuple, loss_fn, cfg, device: torch.device, generator: torch.Generator,
        parameters=None, augment=None, log_epoch=None) -> tuple[dict, list[dict]]:
    """Train with Adam; return (the state_dict of the epoch with the lowest validation loss, per-epoch history).

    train and val are (x, y) tensors already on `device`. `parameters` restricts what Adam updates (frozen
    layers in transfer learning); `augment(x, generator)` transforms each training batch; `log_epoch(stats)`
    receives every epoch's numbers (main() uses it to log to MLflow while training runs).
    """
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick its fastest kernels once
    x_train, y_train = train
    if len(val[0]) == 0:
        raise PipelineError("the validation split is empty, so early stopping has nothing to measure: "
                            "raise the task's preprocess val_ratio (or shorten its windows)")
    # Image batches in channels-last memory: oneDNN's CPU convolutions run 10-20% faster on it (bench/train_loop.py)
    # and it is the layout tensor cores want under autocast on CUDA. Results are the same up to float rounding.
    channels_last = x_train.dim() == 4
    if channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters() if parameters is None else parameters,
                                 lr=cfg.lr, weight_decay=cfg.weight_decay)
    # cosine: the step size falls smoothly to 0 by the last epoch (Loshchilov & Hutter, SGDR, ICLR 2017), so the
    # last epochs fine-tune instead of bouncing around the minimum at the full learning rate
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, cfg.epochs) if cfg.lr_schedule == "cosine" else None
    best_loss, best_state, best_epoch, waited, history = float("inf"), None, 0, 0, []
    for epoch in range(1, cfg.epochs + 1):
        started = time.perf_counter()
        model.train()
        total, correct = torch.zeros((), device=device), torch.zeros((), device=device)
        order = torch.randperm(len(x_train), generator=generator).to(device)
        for start in tqdm(range(0, len(order), cfg.batch_size), desc=f"epoch {epoch}", leave=False, disable=None):
            index = order[start : start + cfg.batch_size]
            xb, yb = x_train[index], y_train[index]
            if augment is not None:
                xb = augment(xb, generator)
            if channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            with _autocast(device, xb):
                out = model(xb)
                loss = loss_fn(out.float(), yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach() * len(index)  # stays on the device: no per-step .item() sync
            if yb.dtype == torch.long:
                correct += (out.argmax(1) == yb).sum()
        lr = optimizer.param_groups[0]["lr"]  # the step size this epoch trained with
        if scheduler is not None:
            scheduler.step()
        val_loss, val_accuracy = _loss_and_accuracy(model, loss_fn, *val, cfg.batch_size, device)
        stats = {"epoch": epoch, "train_loss": (total / len(x_train)).item(), "val_loss": val_loss}
        if val_accuracy is not None:
            stats |= {"train_accuracy": (correct / len(x_train)).item(), "val_accuracy": val_accuracy}
        if not np.isfinite(stats["train_loss"]):
            raise PipelineError(f"training diverged at epoch {epoch} (loss {stats['train_loss']}): lower train.lr")
        stats["lr"] = lr
        history.append(stats)
        if log_epoch is not None:
            log_epoch(stats)
        improved = val_loss < best_loss
        if improved:
            best_loss, best_epoch, waited = val_loss, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            waited += 1
        shown = "  ".join(f"{k} {v:.4f}" for k, v in stats.items() if k not in ("epoch", "lr"))
        print(f"epoch {epoch:3d}  {shown}  {time.perf_counter() - started:.1f}s{'  *' if improved else ''}", flush=True)
        if waited >= cfg.patience:
            print(f"early stop: no better val_loss for {cfg.patience} epochs; best epoch {best_epoch}")
            break
    if best_state is None:
        raise PipelineError(f"validation loss was never finite in {len(history)} epochs (got {history[-1]['val_loss']})")
    model.load_state_dict(best_state)
    return {"state_dict": best_state, "epoch": best_epoch, "val_loss": best_loss}, history


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int, device: torch.device) -> torch.Tensor:
    """Model outputs for every row of x, in batches, returned on the CPU as float32."""
    model.eval()
    outs = []
    with _autocast(device, x):
        for start in range(0, len(x), batch_size):
            outs.append(model(x[start : start + batch_size].to(device)).float())
    return torch.cat(outs).cpu()
