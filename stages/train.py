"""Stage train: fit one model of one task with early stopping on validation; save the best checkpoint.

Writes models/<task>/<model>.pt (a dict: state_dict, model name and config, epoch, MLflow run id) and
plots/<task>/<model>/history.csv; logs params, per-epoch curves and the model to MLflow.
Usage: python -m stages.train <task> <model>
"""
from dataclasses import asdict
from pathlib import Path

from torch import nn

from stages import tracking
from stages.config import load_params
from stages.errors import PipelineError, run_stage
from stages.files import load_arrays, read_json, save_checkpoint, write_csv
from stages.models import build_model
from stages.preprocess import PREPARED
from stages.training import fit, load_split, pick_device, seed_everything

LOSSES = {"series": nn.MSELoss, "images": nn.CrossEntropyLoss, "text": nn.CrossEntropyLoss}
MODELS_WITH_DROPOUT = ("cnn2", "small_cnn")


def model_config(name: str, task_cfg, meta: dict) -> dict:
    """Constructor arguments of the model: hyperparameters from params.yaml plus the data's shape."""
    if meta["kind"] == "series":
        return {"input_size": meta["n_features"], "output_size": meta["n_features"], **asdict(task_cfg.model)}
    if meta["kind"] == "text":
        return {"vocab_size": len(meta["vocab"]), **asdict(task_cfg.model)}
    config = {"in_channels": meta["in_channels"], "num_classes": len(meta["classes"]), "image_size": meta["image_size"]}
    return config | ({"dropout": task_cfg.model.dropout} if name in MODELS_WITH_DROPOUT else {})


def augmenter(cfg, meta: dict):
    """Per-image random augmentation of training batches, when the task's params turn it on."""
    if not getattr(cfg, "augment", None) or not cfg.augment.enabled:
        return None
    from stages.images import augment

    a = cfg.augment
    return lambda x, generator: augment(x, generator, flip=a.flip, crop_scale=tuple(a.crop_scale),
                                        rotation=a.rotation, jitter=a.jitter, elastic=a.elastic,
                                        elastic_sigma=a.elastic_sigma, mean=meta["mean"], std=meta["std"])


def main(argv: list[str]) -> None:
    task, name = argv
    params = load_params()
    task_cfg = params.task(task)
    if name not in task_cfg.models:
        raise PipelineError(f"unknown model {name!r} for task {task} (known: {', '.join(task_cfg.models)})")
    device, generator = pick_device(params.device), seed_everything(params.seed)
    data, meta = load_arrays(PREPARED / task / "data.npz"), read_json(PREPARED / task / "meta.json")
    train, val = load_split(data, meta, "train", device), load_split(data, meta, "val", device)
    config = model_config(name, task_cfg, meta)
    model = build_model(task_cfg.kind, name, config).to(device)
    print(f"train@{task}-{name}: {sum(p.numel() for p in model.parameters()):,} parameters on {device}, "
          f"{len(train[0])} train / {len(val[0])} val examples")

    logged = {"device": params.device, "seed": params.seed, task: task_cfg}
    with tracking.start_run(task, name, f"train@{task}-{name}", logged) as run:
        best, history = fit(model, train, val, LOSSES[task_cfg.kind](), task_cfg.train, device, generator,
                            augment=augmenter(task_cfg.train, meta), log_epoch=tracking.log_epoch)
        tracking.log_metrics({"best_epoch": best["epoch"], "best_val_loss": best["val_loss"]})
        tracking.log_model(model, input_example=train[0][:2].cpu().numpy())
    out = Path("models") / task / f"{name}.pt"
    save_checkpoint(out, {"model": name, "kind": task_cfg.kind, "config": config, "state_dict": {k: v.cpu() for k, v in best["state_dict"].items()},
                          "epoch": best["epoch"], "mlflow_run_id": run.info.run_id})
    write_csv(Path("plots") / task / name / "history.csv", {k: [h.get(k) for h in history] for k in history[0]})
    print(f"best epoch {best['epoch']} (val_loss {best['val_loss']:.4f}) -> {out}")


if __name__ == "__main__":
    run_stage(main, "python -m stages.train <task> <model>")
