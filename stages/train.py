"""Stage train: fit every model of one task (params.yaml <task>.models), one after another in one process,
with early stopping on validation; save each model's best checkpoint.

The models of a task share their params, so one process loses no granularity and pays torch's and MLflow's
start-up once. Writes models/<task>/<model>.pt (a dict: state_dict, model name and config, epoch) and
plots/<task>/<model>/history.csv per model; logs one MLflow run per model: params, per-epoch curves, the
checkpoint's hash and a servable model (stages/infra/serving.py). With params.yaml `scale` above 1 x 1 the same
command runs as the workers of torch's elastic launcher (stages/infra/launch.py); global rank 0 alone writes and logs.
Usage: python -m stages.train <task>
"""
import copy
import time
from dataclasses import asdict

import torch

from stages import kinds
from stages.core.inference import pick_device
from stages.core.models import build_model, model_config
from stages.core.training import evaluate, fit, loss_for, save_trained, seed_everything
from stages.infra import launch, paths, store, tracking
from stages.infra.config import SeededTrain, load_params
from stages.infra.errors import PipelineError, run_stage
from stages.infra.files import load_arrays, read_json, remove_others


def train_one(task_cfg, name: str, config: dict, train: tuple, val: tuple, augment, seed: int, tag_curves: bool):
    """One model from `seed`: (model with its best weights, best epoch's dict, history). With several seeds its
    MLflow curves are named seed<seed>_val_loss and so on."""
    generator = seed_everything(seed)
    model = build_model(task_cfg.kind, name, config).to(train[0].device)
    start = untrained(model, val, task_cfg.train.batch_size)
    log = (lambda stats: tracking.log_epoch(stats, f"seed{seed}_")) if tag_curves else tracking.log_epoch
    best, history = fit(model, train, val, task_cfg.train, generator, augment=augment, log_epoch=log)
    if start is not None and start["val_loss"] <= best["val_loss"]:
        print(f"{name}: no epoch beat the untrained start on validation ({start['val_loss']:.5f}): kept as it was")
        model.load_state_dict(start["state_dict"])
        best = start
    return model, best, history


def untrained(model, val: tuple, batch_size: int) -> dict | None:
    """A hybrid's start, as epoch 0 of early stopping: its head starts at zero, so untrained it forecasts what its
    classical part does, and it keeps a network correction only if one lowers the validation loss. None for other
    models (their untrained start is noise)."""
    if getattr(model, "classical", None) is None:
        return None
    val_loss, _ = evaluate(model, loss_for(val[1]), *val, batch_size)
    return {"val_loss": val_loss, "state_dict": copy.deepcopy(model.state_dict()), "epoch": 0}


def train_seeds(task_cfg, name: str, config: dict, train: tuple, val: tuple, augment, first_seed: int, seeds: int):
    """`seeds` models from seeds first_seed, first_seed+1, ...; (the one with the best validation loss, never the
    test, its best epoch's dict, history, extra checkpoint entries: every seed's weights when there are several)."""
    trained = [train_one(task_cfg, name, config, train, val, augment, seed, seeds > 1)
               for seed in range(first_seed, first_seed + seeds)]  # (model, best, history) per seed
    kept = min(range(seeds), key=lambda i: trained[i][1]["val_loss"])
    model, best, history = trained[kept]
    if seeds == 1:
        return model, best, history, {}
    for stats in history:  # the kept seed's curves under the plain names too, as a one-seed run logs them
        tracking.log_epoch(stats)
    tracking.log_metrics({"kept_seed": first_seed + kept})
    print(f"{name}: kept seed {first_seed + kept}: best validation loss of " +
          ", ".join(f"{b['val_loss']:.5f}" for _, b, _ in trained))
    return model, best, history, {"seed": first_seed + kept, "seed_state_dicts": [b["state_dict"] for _, b, _ in trained]}


def main(argv: list[str]) -> None:
    (task,) = argv
    started = time.perf_counter()
    params = load_params()
    params.task(task)  # an unknown task: one line
    if task not in params.runs:
        raise PipelineError(f"params.yaml: runs has no entry for task {task}" +
                            (" (a transfer task trains in its scratch, extract and finetune stages)"
                             if task in params.transfer_tasks else ""))
    names = params.trained_models(task)
    if launch.writer(params.scale):  # before any work (and before any worker starts): a refusal is one line
        store.check_store(task)  # a store that cannot be used
        for folder in (paths.checkpoints(task), paths.histories(task)):
            store.writable_folder(folder, "checkpoints and histories")  # before training, not after it
    if launch.needs_workers(params.scale):
        launch.run_workers(params.scale, "stages.train", argv, f"train@{task}", pick_device(params.device).type)
        return
    device = launch.local_device(pick_device(params.device))
    with launch.process_group(device.type):
        train_all(task, params, names, device, started)


def train_all(task: str, params, names: list[str], device: torch.device, started: float) -> None:
    """Every model of the task, on `device`; in a process group, as one rank of it (rank 0 writes and logs)."""
    task_cfg, primary = params.task(task), launch.writer(params.scale)
    if not primary:
        tracking.mute()  # global rank 0 alone logs to MLflow
    data_code, train_code = kinds.code(task_cfg.kind, "data"), kinds.code(task_cfg.kind, "train")
    seeds = task_cfg.train.seeds if isinstance(task_cfg.train, SeededTrain) else 1
    data, meta = load_arrays(paths.prepared_data(task)), read_json(paths.prepared_meta(task))
    train, val = [tuple(t.to(device) for t in data_code.tensors(data, meta, split)) for split in ("train", "val")]
    augment = train_code.augmenter(task_cfg, meta)
    spec, example = train_code.serving(data, meta, task_cfg)
    print(f"train@{task}: {', '.join(names)} on {len(train[0])} train / {len(val[0])} val examples on {device}, "
          f"{seeds} seed(s) each")

    # imported here, after the checks: defining the served class makes MLflow print a warning, which would follow a
    # refusal's one line
    from stages.infra.serving import ServedModel

    logged = {"device": params.device, "seed": params.seed, task: task_cfg}
    logged |= launch.logged(params.scale, task_cfg.train.batch_size)
    set_up, training = time.perf_counter() - started, 0.0
    for name in names:
        config = model_config(task_cfg.kind, name, meta["shape"], asdict(task_cfg.model))
        config, own = train_code.model_inputs(name, config, data, meta, task_cfg)  # a hybrid's residual windows
        splits = [tuple(torch.from_numpy(a).to(device) for a in own[s]) for s in ("train", "val")] if own else (train, val)
        with tracking.start_run(task, name, f"train@{task}", logged):
            fitted = time.perf_counter()
            model, best, history, extra = train_seeds(task_cfg, name, config, *splits, augment, params.seed, seeds)
            training += time.perf_counter() - fitted
            if primary:
                save_trained(task, name, name, config, best, history, extra)
                tracking.log_training(model, best, ServedModel(task_cfg.kind, spec), example, paths.checkpoint(task, name))
        print(f"{name}: {sum(p.numel() for p in model.parameters()):,} parameters")
    total = time.perf_counter() - started  # where a stage's time goes (the rest of its wall time is imports)
    print(f"train@{task}: {total:.1f} s in main(): set-up {set_up:.1f} s (checks, data onto {device}), training "
          f"{training:.1f} s, MLflow {total - set_up - training:.1f} s")
    if primary:
        remove_others(paths.checkpoints(task), {paths.checkpoint(task, n).name for n in names} | {".gitignore"})
        remove_others(paths.histories(task), {paths.history(task, n).name for n in names})


if __name__ == "__main__":
    run_stage(main, "python -m stages.train <task>")
