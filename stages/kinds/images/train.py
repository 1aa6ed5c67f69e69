"""What train needs of the image-classification kind beyond the shared loop: per-image random augmentation of
whole training batches (flip, resized crop, rotation, elastic warp and colour jitter in one
affine_grid/grid_sample call; tensors in, tensors out), and the settings the logged model needs."""
import math

import numpy as np
import torch
import torch.nn.functional as F

from stages.infra.config import ImageTask


def augmenter(task_cfg, meta: dict):
    """augment(x, generator) for training batches with the task's settings, or None when it does not augment
    (transfer, or augment.enabled: false)."""
    if not isinstance(task_cfg, ImageTask) or not task_cfg.train.augment.enabled:
        return None
    a = task_cfg.train.augment
    return lambda x, generator: augment(x, generator, flip=a.flip, crop_scale=tuple(a.crop_scale),
                                        rotation=a.rotation, jitter=a.jitter, elastic=a.elastic,
                                        elastic_sigma=a.elastic_sigma, mean=meta["mean"], std=meta["std"])



def model_inputs(name: str, config: dict, data: dict, meta: dict, task_cfg) -> tuple[dict, dict]:
    """Every image model trains on the shared examples: its config as it is, no arrays of its own."""
    return config, {}

def serving(data: dict, meta: dict, task_cfg) -> tuple[dict, np.ndarray]:
    """What the logged model needs to classify raw images (`spec`), and an input example: two training images."""
    spec = {k: meta[k] for k in ("classes", "mean", "std")} | {"image_size": meta["shape"]["image_size"]}
    return spec, data["x_train"][:2]


def augment(x: torch.Tensor, generator: torch.Generator, *, flip: bool, crop_scale: tuple[float, float],
            rotation: float, elastic: float, elastic_sigma: float, jitter: float, mean: list[float],
            std: list[float]) -> torch.Tensor:
    """A new random flip, resized crop, rotation, elastic warp and colour jitter for every image of the batch
    x (B, C, H, W).

    torchvision's v2 transforms on a batched tensor draw once for the whole batch; here each image gets its own
    draw, and all geometry is one affine_grid/grid_sample call. Random numbers come from `generator`, on its
    device: a CPU generator (CPU and MPS training) gives the same numbers on any machine; on CUDA the training
    loop passes a CUDA generator, so nothing here copies from host memory or waits for the GPU, and the whole
    function can be captured in a CUDA graph.
    """
    b, device = x.shape[0], x.device
    u = torch.rand(b, 9, generator=generator, device=generator.device).to(device)
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
    mean_, std_ = _vector(mean, device)[:, None, None], _vector(std, device)[:, None, None]
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
    alpha 34 and sigma 4 on MNIST; their blur kept the field's scale, ours is normalised to a peak of 1 instead).
    Made on the generator's device."""
    device = generator.device
    noise = torch.rand(b, 2, height, width, generator=generator, device=device) * 2 - 1
    radius = max(1, round(3 * sigma))
    kernel = _cached(("blur", sigma, radius), device, lambda: _normalised(
        torch.exp(-0.5 * (torch.arange(-radius, radius + 1, device=device) / sigma) ** 2)))
    smooth = F.conv2d(noise.reshape(-1, 1, height, width), kernel[None, None, :, None], padding=(radius, 0))
    smooth = F.conv2d(smooth, kernel[None, None, None, :], padding=(0, radius)).reshape(b, 2, height, width)
    smooth = smooth / smooth.abs().amax(dim=(1, 2, 3), keepdim=True).clamp(min=1e-8)
    scale = _vector([2 / width, 2 / height], device)  # one pixel in grid units, x then y
    return smooth.permute(0, 2, 3, 1) * alpha * scale


def _normalised(kernel: torch.Tensor) -> torch.Tensor:
    return kernel / kernel.sum()


def _vector(values: list[float], device: torch.device) -> torch.Tensor:
    """A small float32 tensor on `device`. On CUDA it is filled there (torch.tensor(values, device=...) would copy
    from pageable host memory, which makes the host wait for the GPU and cannot be captured in a CUDA graph),
    once per process."""
    if device.type != "cuda":
        return torch.tensor(values, device=device)
    return _cached(("vector", *values), device,
                   lambda: torch.stack([torch.full((), float(v), device=device) for v in values]))


_CUDA_CONSTANTS: dict = {}


def _cached(key: tuple, device: torch.device, make) -> torch.Tensor:
    """On CUDA, a constant made once and kept, so a captured training step does not remake it at every replay
    (one kernel each); made anew while a graph is being captured, whose memory it must not outlive. Elsewhere it
    is made at every call, as it always was (CPU results stay bit-identical)."""
    if device.type != "cuda":
        return make()
    constant = _CUDA_CONSTANTS.get((key, device))
    if constant is None:
        constant = make()
        if not torch.cuda.is_current_stream_capturing():
            _CUDA_CONSTANTS[key, device] = constant
    return constant
