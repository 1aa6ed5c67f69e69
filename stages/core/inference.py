"""A trained model's outputs: load a checkpoint, predict in batches, score classes. What evaluate, generate and
the logged MLflow model run; training (stages/core/training.py) shares only the autocast rule."""
import numpy as np
import torch
from torch import nn

from stages.core.models import build_model
from stages.infra.errors import PipelineError
from stages.infra.files import load_checkpoint


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


def uses_bf16(device: torch.device, x: torch.Tensor) -> bool:
    """bf16 autocast on CUDA, for image batches (B, C, H, W) only: it roughly halves the time of conv layers and
    needs no loss scaling. Forecasts and word logits stay float32: bf16 keeps 8 bits of mantissa, which moves
    single forecasts by as much as the gaps between the models (docs/gpu.md)."""
    return device.type == "cuda" and x.dim() == 4


def autocast(device: torch.device, x: torch.Tensor, cache_enabled: bool = True):
    """bf16 autocast where uses_bf16 says so; cache_enabled=False inside a captured CUDA graph (the weight-cast
    cache must not outlive a captured region)."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=uses_bf16(device, x), cache_enabled=cache_enabled)


def load_model(checkpoint_path, kind: str, device: torch.device = torch.device("cpu"),
               state_dict: dict | None = None) -> tuple[nn.Module, dict]:
    """The checkpoint's model in eval mode on `device` (with `state_dict`'s weights instead, if given: another
    seed of the same checkpoint), and the checkpoint dict."""
    checkpoint = load_checkpoint(checkpoint_path)
    model = build_model(kind, checkpoint["model"], checkpoint["config"])
    model.load_state_dict(checkpoint["state_dict"] if state_dict is None else state_dict)
    return model.to(device).eval(), checkpoint


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int, device: torch.device) -> torch.Tensor:
    """Model outputs for every row of x, in batches, returned on the CPU as float32."""
    model.eval()
    outs = []
    with autocast(device, x):
        for start in range(0, len(x), batch_size):
            outs.append(model(x[start : start + batch_size].to(device)).float())
    return torch.cat(outs).cpu()


def classify(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """log P(true class) of every example and its 5 likeliest classes, most likely first (class ids: digits,
    words)."""
    log_probs = torch.log_softmax(predict(model, x, 512, device), dim=1)
    logp = log_probs.gather(1, y[:, None])[:, 0].numpy()
    return logp, log_probs.topk(min(5, log_probs.shape[1]), dim=1).indices.numpy()


def is_kept_seed(checkpoint: dict, state: dict) -> bool:
    """Whether `state`, one of the checkpoint's seed_state_dicts, is its kept seed: found by the weights, so a stage
    need not read params.yaml's seed."""
    return all(torch.equal(v, checkpoint["state_dict"][k]) for k, v in state.items())


def seed_spread(per_seed: list[dict]) -> dict:
    """Mean and standard deviation over seeds of each test metric, and of each validation one (val_...)."""
    flat = [{k: v for k, v in m.items() if isinstance(v, float)} |
            {f"val_{k}": v for k, v in m.get("validation", {}).items()} for m in per_seed]
    return {f"{k}_{stat}": float(f(np.array([m[k] for m in flat]))) for k in flat[0]
            for stat, f in (("mean", np.mean), ("std", np.std))}
