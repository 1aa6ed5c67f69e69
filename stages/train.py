"""Stage train: fit one model of one task with early stopping on validation; save the best checkpoint.

Writes models/<task>/<model>.pt (a dict: state_dict, model name and config, epoch) and
plots/<task>/<model>/history.csv; logs params, per-epoch curves, the checkpoint's hash and a servable model
(stages/serving.py) to MLflow.
Usage: python -m stages.train <task> <model>
"""
from dataclasses import asdict

from stages import kinds, paths, tracking
from stages.config import SeriesTrain, load_params
from stages.errors import PipelineError, run_stage
from stages.files import load_arrays, read_json
from stages.models import build_model, model_config
from stages.training import fit, pick_device, save_trained, seed_everything


def train_one(task_cfg, name: str, config: dict, train: tuple, val: tuple, augment, seed: int, tag_curves: bool):
    """One model from `seed`: (model with its best weights, best epoch's dict, history). With several seeds its
    MLflow curves are named seed<seed>_val_loss and so on."""
    generator = seed_everything(seed)
    model = build_model(task_cfg.kind, name, config).to(train[0].device)
    log = (lambda stats: tracking.log_epoch(stats, f"seed{seed}_")) if tag_curves else tracking.log_epoch
    return (model, *fit(model, train, val, task_cfg.train, generator, augment=augment, log_epoch=log))


def main(argv: list[str]) -> None:
    task, name = argv
    params = load_params()
    tracking.check_store(task)  # before any work: a store that cannot be used stops the stage in one line
    task_cfg = params.task(task)
    if name not in task_cfg.models:
        raise PipelineError(f"unknown model {name!r} for task {task} (known: {', '.join(task_cfg.models)})")
    kind = kinds.of(task_cfg)
    seeds = task_cfg.train.seeds if isinstance(task_cfg.train, SeriesTrain) else 1
    device = pick_device(params.device)
    data, meta = load_arrays(paths.prepared_data(task)), read_json(paths.prepared_meta(task))
    train, val = [tuple(t.to(device) for t in kind.tensors(data, meta, split)) for split in ("train", "val")]
    config = model_config(task_cfg.kind, name, meta["shape"], asdict(task_cfg.model))
    print(f"train@{task}-{name}: {len(train[0])} train / {len(val[0])} val examples on {device}, {seeds} seed(s)")

    logged = {"device": params.device, "seed": params.seed, task: task_cfg}
    with tracking.start_run(task, name, f"train@{task}-{name}", logged):
        trained = [train_one(task_cfg, name, config, train, val, kind.augmenter(task_cfg, meta), seed, seeds > 1)
                   for seed in range(params.seed, params.seed + seeds)]  # (model, best, history) per seed
        kept = min(range(seeds), key=lambda i: trained[i][1]["val_loss"])  # the best on validation, never on test
        model, best, history = trained[kept]
        extra = {}
        if seeds > 1:  # the kept seed's curves under the plain names too, as a one-seed run logs them
            for stats in history:
                tracking.log_epoch(stats)
            tracking.log_metrics({"kept_seed": params.seed + kept})
            extra = {"seed": params.seed + kept, "seed_state_dicts": [b["state_dict"] for _, b, _ in trained]}
            print(f"kept seed {params.seed + kept}: best validation loss of " +
                  ", ".join(f"{b['val_loss']:.5f}" for _, b, _ in trained))
        save_trained(task, name, name, config, best, history, extra)
        spec, example = kind.serving(data, meta, task_cfg)
        tracking.log_training(model, best, task_cfg.kind, spec, example, paths.checkpoint(task, name))
    print(f"{name}: {sum(p.numel() for p in model.parameters()):,} parameters")

if __name__ == "__main__":
    run_stage(main, "python -m stages.train <task> <model>")
