"""The image-classification kind's shared data functions: `tensors` for train and evaluate (uint8 images
normalised with the training split's statistics), and resizing, which the served model uses too. The readers and
splits are in prepare.py (preprocess alone), the scores in metrics.py."""

import numpy as np


def tensors(data: dict, meta: dict, split: str):
    """One split as float (N, C, H, W) images, normalised with the training split's statistics, and int64 labels."""
    import torch

    return to_tensor(data[f"x_{split}"], meta["mean"], meta["std"]), torch.from_numpy(data[f"y_{split}"])








def to_tensor(images: np.ndarray, mean: list[float], std: list[float]):
    """uint8 (N, H, W) or (N, H, W, C) -> float (N, C, H, W), normalised with the training mean and std."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(images))
    x = x[:, None] if x.ndim == 3 else x.permute(0, 3, 1, 2)
    mean, std = torch.tensor(mean)[:, None, None], torch.tensor(std)[:, None, None]
    return ((x.float() / 255 - mean) / std).contiguous()


def resize(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 (N, H, W) images -> (N, size, size), bilinear with antialiasing; unchanged when already that size."""
    if images.shape[1:3] == (size, size):
        return images
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(images)).float()[:, None]
    x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x[:, 0].round().clamp(0, 255).to(torch.uint8).numpy()












