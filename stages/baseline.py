"""Stage baseline: the simple predictors every model must beat, scored on the same test split as the models.

Forecasting: naive (last observed value: persistence) and seasonal naive (same step one season earlier).
Classification: the majority class, and logistic regression on the pixels. Text: unigram and bigram models.
The task's kind does the work (stages/kinds/<kind>/baselines.py).
Writes metrics/<task>/baselines.json and plots/<task>/baselines/predictions.csv.
Usage: python -m stages.baseline <task>
"""
from stages import kinds
from stages.infra import paths
from stages.infra.config import load_params
from stages.infra.errors import run_stage
from stages.infra.files import load_arrays, read_json, write_csv, write_json


def main(argv: list[str]) -> None:
    (task,) = argv
    task_cfg = load_params().task(task)
    data, meta = load_arrays(paths.prepared_data(task)), read_json(paths.prepared_meta(task))
    metrics, columns = kinds.code(task_cfg.kind, "baselines").baselines(data, meta, task_cfg.baseline)
    write_json(paths.baseline_metrics(task), metrics)
    write_csv(paths.baseline_predictions(task), columns)
    for name, values in metrics.items():
        print(f"{task} {name}: " + "  ".join(f"{k} {v:.4f}" for k, v in values.items() if isinstance(v, float))
              + (f"  (validation: {values['validation']})" if "validation" in values else ""))


if __name__ == "__main__":
    run_stage(main, "python -m stages.baseline <task>")
