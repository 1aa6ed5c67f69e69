"""Stage train: fit one model of one task with early stopping on validation; save the best checkpoint.

Writes models/<task>/<model>.pt (a dict: state_dict, model name and config, epoch, MLflow run id) and
plots/<task>/<model>/history.csv; logs params, per-epoch curves and the model to MLflow.
Usage: python -m stages.train <task> <model>
"""
from dataclasses import asdict

from stages import kinds, paths, tracking
from stages.config import load_params
from stages.errors import PipelineError, run_stage
from stages.files import load_arrays, read_json
from stages.models import build_model, model_config
from stages.training import fit, pick_device, save_trained, seed_everything


def main(argv: list[str]) -> None:
    task, name = argv
    params = load_params()
    task_cfg = params.task(task)
    if name not in task_cfg.models:
        raise PipelineError(f"unknown model {name!r} for task {task} (known: {', '.join(task_cfg.models)})")
    kind = kinds.of(task_cfg)
    device, generator = pick_device(params.device), seed_everything(params.seed)
    data, meta = load_arrays(paths.prepared_data(task)), read_json(paths.prepared_meta(task))
    train, val = [tuple(t.to(device) for t in kind.tensors(data, meta, split)) for split in ("train", "val")]
    config = model_config(task_cfg.kind, name, meta["shape"], asdict(task_cfg.model))
    model = build_model(task_cfg.kind, name, config).to(device)
    print(f"train@{task}-{name}: {sum(p.numel() for p in model.parameters()):,} parameters on {device}, "
          f"{len(train[0])} train / {len(val[0])} val examples")

    logged = {"device": params.device, "seed": params.seed, task: task_cfg}
    with tracking.start_run(task, name, f"train@{task}-{name}", logged) as run:
        best, history = fit(model, train, val, task_cfg.train, generator, augment=kind.augmenter(task_cfg, meta),
                            log_epoch=tracking.log_epoch)
        tracking.log_training(model, best, input_example=train[0][:2].cpu().numpy())
    save_trained(task, name, name, config, best, history, run.info.run_id)


if __name__ == "__main__":
    run_stage(main, "python -m stages.train <task> <model>")
