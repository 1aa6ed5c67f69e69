"""Stage evaluate: score every trained model of a task on the test split, the first and only time it is used.

Forecasting: RMSE, MAE, MAPE in the series' units (inverse-scaled). Classification: accuracy, loss, per-class
precision/recall. Text: cross-entropy, perplexity, top-1/top-5 next-word accuracy. One process for all the
task's models: torch and MLflow start once, not once per model.
Writes metrics/<task>/models/<model>.json and plots/<task>/predictions/<model>.csv, and adds the test metrics
to each model's MLflow training run (found by its checkpoint's hash; the run is not reopened).
Usage: python -m stages.evaluate <task>
"""
import numpy as np
import torch

from stages import kinds, paths, tracking
from stages.config import load_params
from stages.errors import run_stage
from stages.files import load_arrays, read_json, write_csv, write_json
from stages.training import load_trained, pick_device


def spread(per_seed: list[dict]) -> dict:
    """Mean and standard deviation over seeds of each test metric, and of each validation one (val_...)."""
    flat = [{k: v for k, v in m.items() if isinstance(v, float)} |
            {f"val_{k}": v for k, v in m.get("validation", {}).items()} for m in per_seed]
    return {f"{k}_{stat}": float(f(np.array([m[k] for m in flat]))) for k in flat[0]
            for stat, f in (("mean", np.mean), ("std", np.std))}


def main(argv: list[str]) -> None:
    (task,) = argv
    params = load_params()
    tracking.check_store(task)  # before any work: a store that cannot be used stops the stage in one line
    task_cfg, device = params.task(task), pick_device(params.device)
    kind = kinds.of(task_cfg)
    data, meta = load_arrays(paths.prepared_data(task)), read_json(paths.prepared_meta(task))
    for name in params.trained_models(task):
        model, checkpoint = load_trained(task, name, task_cfg.kind, device)
        metrics, columns = kind.score(model, data, meta, device)
        if "seed_state_dicts" in checkpoint:  # the kept seed's numbers, and the spread over every seed trained
            per_seed = []
            for state in checkpoint["seed_state_dicts"]:
                if all(torch.equal(v, checkpoint["state_dict"][k]) for k, v in state.items()):
                    per_seed.append(metrics)  # the kept seed, scored above (found by its weights: evaluate
                    continue                  # does not read params.yaml's seed)
                model.load_state_dict(state)
                per_seed.append(kind.score(model, data, meta, device)[0])
            metrics["seeds"] = spread(per_seed) | {"kept": checkpoint["seed"], "count": len(per_seed)}
        write_json(paths.model_metrics(task, name), metrics)
        write_csv(paths.predictions(task, name), columns)
        run_id = tracking.training_run(task, paths.checkpoint(task, name))
        if run_id is not None:  # forecasters also report the validation split, under val_
            tracking.add_to_run(run_id, {k: v for k, v in metrics.items() if k not in ("validation", "seeds")}, "test_")
            tracking.add_to_run(run_id, metrics.get("seeds", {}), "test_seeds_")
            tracking.add_to_run(run_id, metrics.get("validation", {}), "val_")
        print(f"{task} {name} (test): " + "  ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float)))

if __name__ == "__main__":
    run_stage(main, "python -m stages.evaluate <task>")
