"""Every file and folder the stages read and write, relative to the repo root (where `dvc repro` runs them).

dvc.yaml declares the same paths as outs, metrics and plots; tests/test_paths.py holds the two together.
"""
from pathlib import Path

# The file (or folder) inside data/raw/<task>/ that preprocess reads, named as the official source names it.
RAW_FILES = {"passengers": "airline-passengers.csv", "temperature": "jena_climate_2009_2016.csv",
             "digits": "train-images-idx3-ubyte.gz", "flowers": "flower_photos", "transfer": "digits.csv.gz",
             "text": "corpus"}
CIFAR_FOLDER = "cifar-10-batches-py"  # what the official CIFAR-10 archive unpacks to (transfer, source: url)


def params_checked() -> Path:
    return Path("data/params.ok")


def raw(task: str) -> Path:
    return Path("data/raw") / task


def raw_file(task: str) -> Path:
    return raw(task) / RAW_FILES[task]


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


def baseline_predictions(task: str) -> Path:
    return Path("plots") / task / "baselines" / "predictions.csv"


def history(task: str, model: str) -> Path:
    return Path("plots") / task / model / "history.csv"


def predictions(task: str, model: str) -> Path:
    return Path("plots") / task / "predictions" / f"{model}.csv"


def samples(task: str) -> Path:
    return Path("plots") / task / "samples.md"


def figures(task: str) -> Path:
    return Path("plots") / "figures" / task
