"""Every file and folder the stages read and write, relative to the repo root (where `dvc repro` runs them).

dvc.yaml declares the same paths as outs, metrics and plots; tests/test_layout.py holds the two together.
"""
from pathlib import Path


def params_checked() -> Path:
    return Path("data/params.ok")


def raw(task: str) -> Path:
    """What download or copy put there for preprocess: the task's data as its source has it."""
    return Path("data/raw") / task


def prepared(task: str) -> Path:
    return Path("data/prepared") / task


def prepared_data(task: str) -> Path:
    return prepared(task) / "data.npz"


def prepared_meta(task: str) -> Path:
    return prepared(task) / "meta.json"


def checkpoints(task: str) -> Path:
    return Path("models") / task


def checkpoint(task: str, model: str) -> Path:
    return checkpoints(task) / f"{model}.pt"


def baseline_metrics(task: str) -> Path:
    return Path("metrics") / task / "baselines.json"


def model_metrics(task: str, model: str) -> Path:
    return Path("metrics") / task / "models" / f"{model}.json"


def interpolated_metrics(task: str) -> Path:
    """Text: the test metrics of each network mixed with the Kneser-Ney baseline (stage interpolate)."""
    return Path("metrics") / task / "interpolated.json"


def mixture_predictions(task: str) -> Path:
    """Text: log P(actual word) of every test example under each network's mixture (stage interpolate)."""
    return Path("plots") / task / "mixtures" / "predictions.csv"


def baseline_predictions(task: str) -> Path:
    return Path("plots") / task / "baselines" / "predictions.csv"


def histories(task: str) -> Path:
    return Path("plots") / task / "histories"


def history(task: str, model: str) -> Path:
    return histories(task) / f"{model}.csv"


def predictions(task: str, model: str) -> Path:
    return Path("plots") / task / "predictions" / f"{model}.csv"


def samples(task: str) -> Path:
    return Path("plots") / task / "samples.md"


def figures(task: str) -> Path:
    return Path("plots") / "figures" / task


def report(task: str) -> Path:
    return Path("plots") / "reports" / f"{task}.md"


def compare_curves(task: str) -> Path:
    """Every model's learning curves in one table: the chart `dvc plots show` draws per task (plot)."""
    return Path("plots") / "compare" / task / "curves.csv"


def compare_test(task: str) -> Path:
    """The task's test predictions (forecasts, confusions, perplexities) in one table for `dvc plots show` (plot)."""
    return Path("plots") / "compare" / task / "test.csv"


def summary(task: str) -> Path:
    """The headline test metric of each model and of the best baseline: the metrics `dvc exp show` lists."""
    return Path("metrics") / "summary" / f"{task}.json"


def mixtures_logged(task: str) -> Path:
    """Text: the mixtures the interpolate stage added to the networks' MLflow runs (each checkpoint's hash, lambda and
    the Kneser-Ney order), in the DVC cache, not in git: a fresh clone's `dvc repro` runs interpolate, as it runs log."""
    return Path("logs") / f"{task}.mixtures.json"


def logged(task: str) -> Path:
    """What the log stage added to a task's MLflow runs (checkpoint hashes, metrics, file hashes): kept in the DVC
    cache, not in git, so a fresh clone's `dvc repro` runs the log stage and its MLflow store gets every test
    metric and figure."""
    return Path("logs") / f"{task}.json"
