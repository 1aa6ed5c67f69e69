"""Stage evaluate: score every trained model of a task on the test split, the first and only time it is used.

Forecasting: RMSE, MAE, MAPE in the series' units (inverse-scaled), of the kept seed and of the seeds' mean.
Classification: accuracy, loss, per-class
precision/recall. Text: cross-entropy, perplexity, top-1/top-5 next-word accuracy. One process for all the
task's models. Writes metrics/<task>/models/<model>.json and plots/<task>/predictions/<model>.csv; the log
stage adds them to each model's MLflow run.
Usage: python -m stages.evaluate <task>
"""

from stages import kinds
from stages.core.inference import is_kept_seed, load_model, pick_device, seed_spread
from stages.core.models import SeedEnsemble
from stages.infra import paths
from stages.infra.config import load_params
from stages.infra.errors import run_stage
from stages.infra.files import load_arrays, read_json, remove_others, write_csv, write_json


def seed_scores(score, checkpoint: dict, path, kind: str, kept: dict, data, meta, device) -> dict:
    """The spread over every seed the checkpoint holds; the kept seed (found by its weights: evaluate does not
    read params.yaml's seed) reuses `kept`, its scores."""
    per_seed = []
    for state in checkpoint["seed_state_dicts"]:
        if is_kept_seed(checkpoint, state):
            per_seed.append(kept)
        else:
            per_seed.append(score(load_model(path, kind, device, state)[0], data, meta, device)[0])
    return seed_spread(per_seed) | {"kept": checkpoint["seed"], "count": len(per_seed)}


def main(argv: list[str]) -> None:
    (task,) = argv
    params = load_params()
    task_cfg, device = params.task(task), pick_device(params.device)
    score = kinds.code(task_cfg.kind, "predict").score
    data, meta = load_arrays(paths.prepared_data(task)), read_json(paths.prepared_meta(task))
    names = params.trained_models(task)
    for name in names:
        path = paths.checkpoint(task, name)
        model, checkpoint = load_model(path, task_cfg.kind, device)
        metrics, columns = score(model, data, meta, device)
        if "seed_state_dicts" in checkpoint:  # the kept seed's numbers, and the spread over every seed trained
            metrics["seeds"] = seed_scores(score, checkpoint, path, task_cfg.kind, metrics, data, meta, device)
            # and the mean of every seed's output: the cheapest combination; the plot stage picks which one heads
            members = [load_model(path, task_cfg.kind, device, state)[0] for state in checkpoint["seed_state_dicts"]]
            metrics["ensemble"], mean_columns = score(SeedEnsemble(members).eval(), data, meta, device)
            columns["ensemble"] = mean_columns["predicted"]
        write_json(paths.model_metrics(task, name), metrics)
        write_csv(paths.predictions(task, name), columns)
        print(f"{task} {name} (test): " + "  ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float)))
    remove_others(paths.model_metrics(task, names[0]).parent, {paths.model_metrics(task, n).name for n in names})
    remove_others(paths.predictions(task, names[0]).parent, {paths.predictions(task, n).name for n in names})


if __name__ == "__main__":
    run_stage(main, "python -m stages.evaluate <task>")
