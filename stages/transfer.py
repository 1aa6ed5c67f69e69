"""Stage transfer: reuse a pretrained network on a new data set with few labels.

A transfer task names its starting network: backbone cnn, the CNN that the images task
`transfer_tasks.<task>` trains (offline, the default: the MNIST digits CNN of train@digits, on the UCI 8x8 digits), or
torchvision's ImageNet VGG16 or ResNet-18 (online, on CIFAR-10, as in the original exercise).
Three phases, each its own DVC stage, checkpoint and MLflow run:
  scratch   the same CNN from random weights on the same few labels: the number transfer must beat
  extract   feature extraction: the pretrained conv blocks are frozen, a new classifier layer is trained
  finetune  starts from `extract`, unfreezes the last `unfreeze_blocks` conv blocks, trains at a lower lr
Feature extraction suits few labels and a similar domain; fine-tuning adapts the features once the new head
is sensible (training a random head and the features together would push large gradients into the features).
Usage: python -m stages.transfer <task> <scratch|extract|finetune>
"""
from dataclasses import asdict

import torch
from torch import nn

from stages.core.inference import pick_device
from stages.core.models import IMAGENET_BACKBONES, build_model, imagenet_blocks, model_config
from stages.core.training import fit, save_trained, seed_everything
from stages.infra import launch, paths, store, tracking
from stages.infra.config import load_params
from stages.infra.errors import PipelineError, one_line, run_stage
from stages.infra.files import load_arrays, load_checkpoint, read_json
from stages.kinds.images import data as images
from stages.kinds.images import train as images_train


def set_trainable(model: nn.Module, phase: str, unfreeze_blocks: int = 0) -> list[nn.Parameter]:
    """Freeze what the phase must not change; return the parameters the optimiser may update."""
    blocks = list(model.blocks)
    if phase == "finetune" and not 1 <= unfreeze_blocks <= len(blocks):
        raise PipelineError(f"params.yaml: finetune.unfreeze_blocks must be in 1..{len(blocks)}, "
                            f"got {unfreeze_blocks}")
    trainable = {"scratch": blocks, "extract": [], "finetune": blocks[len(blocks) - unfreeze_blocks:]}[phase]
    for block in blocks:
        block.requires_grad_(any(block is t for t in trainable))
    model.head.requires_grad_(True)
    return [p for p in model.parameters() if p.requires_grad]


def imagenet_weights(backbone: str) -> dict:
    """torchvision's ImageNet weights of the backbone's blocks; torchvision downloads them once into the torch hub
    cache (~/.cache/torch), with a progress bar, and checks the hash in the file name."""
    import torchvision

    weights = {"vgg16": "VGG16_Weights", "resnet18": "ResNet18_Weights"}[backbone]
    try:
        network = getattr(torchvision.models, backbone)(weights=getattr(torchvision.models, weights).IMAGENET1K_V1)
    except (OSError, RuntimeError) as err:  # URLError is an OSError; a bad hash is a RuntimeError
        raise PipelineError(f"model.backbone {backbone}: could not get torchvision's ImageNet weights "
                            f"(needs a network): {one_line(err)}") from None
    return imagenet_blocks(network).state_dict()


def starting_model(task: str, phase: str, task_cfg, pretrained: str, config: dict) -> nn.Module:
    """The phase's starting weights: random (scratch), pretrained (extract: `pretrained`'s cnn, or ImageNet's),
    extract's (finetune)."""
    backbone = task_cfg.model.backbone
    model = build_model("images", backbone, config)
    if phase == "scratch":
        return model
    if phase == "extract" and backbone in IMAGENET_BACKBONES:  # the new head keeps its random weights
        model.blocks.load_state_dict(imagenet_weights(backbone))
        return model
    pretrained = paths.checkpoint(pretrained, "cnn")  # the cnn its pretrained task trains
    source = load_checkpoint(pretrained if phase == "extract" else paths.checkpoint(task, "extract"))
    if phase == "extract" and (source["config"]["in_channels"], source["config"]["image_size"]) != (
            config["in_channels"], config["image_size"]):
        raise PipelineError(f"{pretrained}: its input ({source['config']}) does not match {task}'s images ({config})")
    state = source["state_dict"]
    if phase == "extract":  # a new classifier layer: the pretrained one answered a different question
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
    model.load_state_dict(state, strict=phase == "finetune")
    return model


def main(argv: list[str]) -> None:
    task, phase = argv
    if phase not in ("scratch", "extract", "finetune"):
        raise PipelineError(f"unknown transfer phase {phase!r} (known: scratch, extract, finetune)")
    params = load_params()
    if task not in params.transfer_tasks:
        raise PipelineError(f"params.yaml: {task} is not a transfer task (one with scratch, extract and finetune)")
    if launch.writer(params.scale):  # before any work (and before any worker starts): a refusal is one line
        store.check_store(task)  # a store that cannot be used
        for folder in (paths.checkpoints(task), paths.histories(task)):
            store.writable_folder(folder, "checkpoints and histories")  # before training, not after it
    if launch.needs_workers(params.scale):
        launch.run_workers(params.scale, "stages.transfer", argv, f"{phase}@{task}", pick_device(params.device).type)
        return
    device = launch.local_device(pick_device(params.device))
    with launch.process_group(device.type):
        train_phase(task, phase, params, device)


def train_phase(task: str, phase: str, params, device: torch.device) -> None:
    """One phase on `device`; in a process group, as one rank of it (rank 0 writes and logs)."""
    primary = launch.writer(params.scale)
    if not primary:
        tracking.mute()  # global rank 0 alone logs to MLflow
    task_cfg = params.task(task)
    cfg = getattr(task_cfg, phase)
    generator = seed_everything(params.seed)
    data, meta = load_arrays(paths.prepared_data(task)), read_json(paths.prepared_meta(task))
    train, val = [tuple(t.to(device) for t in images.tensors(data, meta, split)) for split in ("train", "val")]
    backbone = task_cfg.model.backbone
    if backbone in IMAGENET_BACKBONES and meta["shape"]["in_channels"] != 3:
        raise PipelineError(f"params.yaml: {task}.model.backbone {backbone} takes colour images (3 channels), and "
                            f"{task}'s have {meta['shape']['in_channels']}: use backbone cnn, or colour data (CIFAR-10)")
    config = model_config("images", backbone, meta["shape"], asdict(task_cfg.model))
    model = starting_model(task, phase, task_cfg, params.transfer_tasks[task], config)
    # fine-tuning continues extraction: its MLflow run is a child of extraction's
    parent_run_id = (tracking.training_run(task, paths.checkpoint(task, "extract"))
                     if phase == "finetune" and primary else None)
    trainable = set_trainable(model.to(device), phase, cfg.unfreeze_blocks if phase == "finetune" else 0)
    print(f"{task} {phase}: {sum(p.numel() for p in trainable):,} of {sum(p.numel() for p in model.parameters()):,} "
          f"parameters train, on {len(train[0])} labelled images")

    logged = {"device": params.device, "seed": params.seed, task: task_cfg} | launch.logged(params.scale, cfg.batch_size)
    with tracking.start_run(task, phase, phase, logged, parent_run_id=parent_run_id):
        best, history = fit(model, train, val, cfg, generator, parameters=trainable, log_epoch=tracking.log_epoch)
        if not primary:
            return
        save_trained(task, phase, backbone, config, best, history)
        spec, example = images_train.serving(data, meta, task_cfg)
        # imported here, after the checks: defining the served class makes MLflow print a warning
        from stages.infra.serving import ServedModel

        tracking.log_training(model, best, ServedModel("images", spec), example, paths.checkpoint(task, phase))


if __name__ == "__main__":
    run_stage(main, "python -m stages.transfer <task> <scratch|extract|finetune>")
