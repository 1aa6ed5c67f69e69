"""Stage plot: the figures of one task, comparing its models and baselines, as PNGs in plots/figures/<task>/.

Each figure is also logged to the MLflow run of every model it shows.
Usage: python -m stages.plot <task>
"""
import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and in CI
import matplotlib.pyplot as plt  # noqa: E402

from stages import tracking  # noqa: E402
from stages.config import load_params  # noqa: E402
from stages.errors import PipelineError, run_stage  # noqa: E402
from stages.files import atomic_path, load_checkpoint, read_json  # noqa: E402


def read_columns(path: Path) -> dict[str, list]:
    """A CSV written by an earlier stage, as {column: values}; numbers become floats."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except FileNotFoundError:
        raise PipelineError(f"{path}: file not found (run: dvc repro)") from None
    def value(text):
        try:
            return float(text)
        except ValueError:
            return text
    return {k: [value(row[k]) for row in rows] for k in (rows[0] if rows else {})}


def save_figure(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def learning_curves(task: str, models: list[str], metric: str = "loss"):
    """Train (dashed) and validation (solid) curves of every model on one figure; the best epoch is marked."""
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for i, name in enumerate(models):
        h = read_columns(Path("plots") / task / name / "history.csv")
        color = f"C{i}"
        ax.plot(h["epoch"], h[f"train_{metric}"], "--", color=color, alpha=0.6, label=f"{name} train")
        ax.plot(h["epoch"], h[f"val_{metric}"], "-", color=color, label=f"{name} validation")
        best = min(range(len(h["val_loss"])), key=h["val_loss"].__getitem__)
        ax.plot(h["epoch"][best], h[f"val_{metric}"][best], "o", color=color)
    ax.set(title=f"{task}: learning curves (dot: best epoch, the weights kept)", xlabel="epoch", ylabel=metric)
    if metric == "loss":
        ax.set_yscale("log")
    ax.legend(fontsize=8, ncol=2)
    return fig


def forecasts(task: str, models: list[str], unit: str):
    """The held-out months/hours: actual, each model and each baseline, with test RMSE in the legend."""
    base = read_columns(Path("plots") / task / "baselines" / "predictions.csv")
    base_metrics = read_json(Path("metrics") / task / "baselines.json")
    n = len(base["actual"]) if len(base["actual"]) <= 400 else 400  # a long hourly test set: show 400 steps
    steps = range(n)
    fig, ax = plt.subplots(figsize=(10, 4.5))
    ax.plot(steps, base["actual"][:n], color="black", linewidth=2, label="actual")
    for name in base_metrics:
        ax.plot(steps, base[name][:n], ":", label=f"{name} baseline (RMSE {base_metrics[name]['rmse']:.2f})")
    for i, name in enumerate(models):
        pred = read_columns(Path("plots") / task / name / "predictions.csv")
        rmse = read_json(Path("metrics") / task / f"{name}.json")["rmse"]
        ax.plot(steps, pred["predicted"][:n], color=f"C{i}", label=f"{name} (RMSE {rmse:.2f})")
    ticks = list(steps)[:: max(1, n // 8)]
    ax.set_xticks(ticks, [base["time"][t] for t in ticks], rotation=20, fontsize=8)
    ax.set(title=f"{task}: test split, actual vs predicted", ylabel=unit)
    ax.legend(fontsize=8)
    return fig


def main(argv: list[str]) -> None:
    (task,) = argv
    params = load_params()
    models = [run.model for run in params.runs.values() if run.task == task]
    if not models:
        raise PipelineError(f"params.yaml: runs has no model for task {task}")
    out = Path("plots") / "figures" / task
    meta = read_json(Path("data/prepared") / task / "meta.json")
    figures = [save_figure(learning_curves(task, models), out / "learning_curves.png"),
               save_figure(forecasts(task, models, meta["unit"]), out / "forecasts.png")]
    for name in models:
        with tracking.resume_run(load_checkpoint(Path("models") / task / f"{name}.pt")["mlflow_run_id"]) as run:
            if run is not None:
                tracking.log_artifacts(figures)
    print(f"{task}: wrote " + ", ".join(str(f) for f in figures))


if __name__ == "__main__":
    run_stage(main)
