"""Stage transfer: reuse a pretrained network on a new data set with few labels.

Offline (the default) the pretrained network is the digits CNN that train@digits trains on MNIST, and the
target is the UCI 8x8 digits. Online (transfer.download.source: url) it is torchvision's ImageNet VGG16 or
ResNet-18 (transfer.model.backbone) on CIFAR-10, as in the original exercise.
Three phases, each its own DVC stage, checkpoint and MLflow run:
  scratch   the same CNN from random weights on the same few labels: the number transfer must beat
  extract   feature extraction: the pretrained conv blocks are frozen, a new classifier layer is trained
  finetune  starts from `extract`, unfreezes the last `unfreeze_blocks` conv blocks, trains at a lower lr
Feature extraction suits few labels and a similar domain; fine-tuning adapts the features once the new head
is sensible (training a random head and the features together would push large gradients into the features).
Usage: python -m stages.transfer <scratch|extract|finetune>
"""
from dataclasses import asdict

from torch import nn

from stages import images, images_train, paths, store, tracking
from stages.config import load_params
from stages.errors import PipelineError, one_line, run_stage
from stages.files import load_arrays, load_checkpoint, read_json
from stages.inference import pick_device
from stages.models import IMAGENET_BACKBONES, build_model, imagenet_blocks, model_config
from stages.training import fit, save_trained, seed_everything

PRETRAINED = paths.checkpoint("digits", "cnn")  # the digits CNN of train@digits: the offline backbone


def set_trainable(model: nn.Module, phase: str, unfreeze_blocks: int = 0) -> list[nn.Parameter]:
    """Freeze what the phase must not change; return the parameters the optimiser may update."""
    blocks = list(model.blocks)
    if phase == "finetune" and not 1 <= unfreeze_blocks <= len(blocks):
        raise PipelineError(f"params.yaml: transfer.finetune.unfreeze_blocks must be in 1..{len(blocks)}, "
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
        raise PipelineError(f"transfer.model.backbone {backbone}: could not get torchvision's ImageNet weights "
                            f"(needs a network): {one_line(err)}") from None
    return imagenet_blocks(network).state_dict()


def starting_model(phase: str, backbone: str, config: dict) -> nn.Module:
    """The phase's starting weights."""
    model = build_model("images", backbone, config)
    if phase == "scratch":
        return model
    if phase == "extract" and backbone in IMAGENET_BACKBONES:  # the new head keeps its random weights
        model.blocks.load_state_dict(imagenet_weights(backbone))
        return model
    source = load_checkpoint(PRETRAINED if phase == "extract" else paths.checkpoint("transfer", "extract"))
    if phase == "extract" and (source["config"]["in_channels"], source["config"]["image_size"]) != (
            config["in_channels"], config["image_size"]):
        raise PipelineError(f"{PRETRAINED}: its input ({source['config']}) does not match the transfer images ({config})")
    state = source["state_dict"]
    if phase == "extract":  # a new classifier layer: the pretrained one answered a different question
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
    model.load_state_dict(state, strict=phase == "finetune")
    return model


def main(argv: list[str]) -> None:
    (phase,) = argv
    if phase not in ("scratch", "extract", "finetune"):
        raise PipelineError(f"unknown transfer phase {phase!r} (known: scratch, extract, finetune)")
    params = load_params()
    store.check_store("transfer")  # before any work: a store that cannot be used stops the stage in one line
    for folder in (paths.checkpoints("transfer"), paths.histories("transfer")):
        store.writable_folder(folder, "checkpoints and histories")  # before training, not after it
    task_cfg, cfg = params.transfer, getattr(params.transfer, phase)
    device, generator = pick_device(params.device), seed_everything(params.seed)
    data, meta = load_arrays(paths.prepared_data("transfer")), read_json(paths.prepared_meta("transfer"))
    train, val = [tuple(t.to(device) for t in images.tensors(data, meta, split)) for split in ("train", "val")]
    backbone = task_cfg.model.backbone
    config = model_config("images", backbone, meta["shape"], asdict(task_cfg.model))
    model = starting_model(phase, backbone, config)
    # fine-tuning continues extraction: its MLflow run is a child of extraction's
    parent_run_id = tracking.training_run("transfer", paths.checkpoint("transfer", "extract")) if phase == "finetune" else None
    trainable = set_trainable(model.to(device), phase, cfg.unfreeze_blocks if phase == "finetune" else 0)
    print(f"transfer {phase}: {sum(p.numel() for p in trainable):,} of {sum(p.numel() for p in model.parameters()):,} "
          f"parameters train, on {len(train[0])} labelled images")

    logged = {"device": params.device, "seed": params.seed, "transfer": task_cfg}
    with tracking.start_run("transfer", phase, phase, logged, parent_run_id=parent_run_id):
        best, history = fit(model, train, val, cfg, generator, parameters=trainable, log_epoch=tracking.log_epoch)
        save_trained("transfer", phase, backbone, config, best, history)
        spec, example = images_train.serving(data, meta, task_cfg)
        # imported here, after the checks: defining the served class makes MLflow print a warning
        from stages.serving import ServedModel

        tracking.log_training(model, best, ServedModel("images", spec), example, paths.checkpoint("transfer", phase))


if __name__ == "__main__":
    run_stage(main, "python -m stages.transfer <scratch|extract|finetune>")
