"""Stage evaluate: score every trained model of a task on the test split, the first and only time it is used.

Forecasting: RMSE, MAE, MAPE in the series' units (inverse-scaled). Classification: accuracy, loss, per-class
precision/recall. Text: cross-entropy, perplexity, top-1/top-5 next-word accuracy. One process for all the
task's models: torch and MLflow start once, not once per model.
Writes metrics/<task>/models/<model>.json and plots/<task>/predictions/<model>.csv, and adds the test metrics
to each model's MLflow training run.
Usage: python -m stages.evaluate <task>
"""
from stages import kinds, paths, tracking
from stages.config import load_params
from stages.errors import run_stage
from stages.files import load_arrays, read_json, write_csv, write_json
from stages.training import load_trained, pick_device


def main(argv: list[str]) -> None:
    (task,) = argv
    params = load_params()
    task_cfg, device = params.task(task), pick_device(params.device)
    data, meta = load_arrays(paths.prepared_data(task)), read_json(paths.prepared_meta(task))
    for name in params.trained_models(task):
        model, checkpoint = load_trained(task, name, task_cfg.kind, device)
        metrics, columns = kinds.of(task_cfg).score(model, data, meta, device)
        write_json(paths.model_metrics(task, name), metrics)
        write_csv(paths.predictions(task, name), columns)
        with tracking.resume_run(checkpoint["mlflow_run_id"]) as run:
            if run is not None:
                tracking.log_metrics(metrics, prefix="test_")
        print(f"{task} {name} (test): " + "  ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float)))


if __name__ == "__main__":
    run_stage(main, "python -m stages.evaluate <task>")
