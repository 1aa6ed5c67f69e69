"""Stage log: add what evaluate, generate and plot made of a task to each model's MLflow training run: the test
(and validation) metrics, the figures, the report and generated text.

The run is found by its checkpoint's hash and not reopened, so its duration stays the training time. The stage's
one output, logs/<task>.json (what it added: each model's checkpoint hash and metrics, each file's hash, the
model chosen on validation), lives in the DVC cache, not in git: in a fresh clone it is missing, so `dvc repro`
runs this stage even where evaluate and plot are skipped because their outputs in git match, and the clone's
MLflow store gets the same metrics and figures as the workspace that made the commit. The file names no run or
store, so the clone writes the same bytes and dvc.lock stays as committed. Logging twice is harmless: a metric
gets the same value again, an artifact the same file.

It also promotes the model the plot stage chose on validation (metrics/summary/<task>.json `chosen`): its logged
model becomes the `champion` version of the registered model named after the task, the one
`mlflow models serve -m models:/<task>@champion` loads. Only a plain `dvc repro` (or this module run by hand)
promotes: under `dvc exp run` and the queue's workers (DVC_EXP_NAME set) the runs are candidates, compared on
validation with `dvc exp show`; after `dvc exp apply <winner>`, `dvc repro -s -f log@<task>` promotes the winner.
Here again a fresh clone behaves: evaluate and plot are skipped, this stage runs and registers its own champion.
Usage: python -m stages.log <task>
"""
import hashlib
import json
import os

from stages.infra import paths, store, tracking
from stages.infra.config import load_params
from stages.infra.errors import run_stage
from stages.infra.files import content_sha256, read_json, write_json


def main(argv: list[str]) -> None:
    (task,) = argv
    params = load_params()
    store.check_store(task)  # before any work: a store that cannot be used stops the stage in one line
    tracking.close_abandoned_runs()
    artifacts = {"figures": sorted(paths.figures(task).glob("*.png")) + [paths.report(task)],
                 "samples": [paths.samples(task)] if paths.samples(task).exists() else []}
    chosen = read_json(paths.summary(task))[task]["chosen"]  # {model: name, val_<headline>: value}
    logged, runs = {}, {}
    mixtures = paths.interpolated_metrics(task)  # text: each network mixed with Kneser-Ney (stage interpolate)
    mixtures = read_json(mixtures) if mixtures.exists() else {}
    for name in params.trained_models(task):
        metrics = read_json(paths.model_metrics(task, name))  # read first: a missing file stops before any logging
        if f"{name}+kn" in mixtures:
            metrics = metrics | {"kn_mixture": mixtures[f"{name}+kn"]}
        run_id = tracking.training_run(task, paths.checkpoint(task, name))
        logged[name] = {"checkpoint_sha256": content_sha256(paths.checkpoint(task, name)), "metrics": metrics}
        if run_id is None:
            continue
        runs[name] = run_id
        # forecasters also report the validation split, under val_; the spread over seeds under test_seeds_
        nested = ("validation", "seeds", "kn_mixture")
        tracking.add_to_run(run_id, {k: v for k, v in metrics.items() if k not in nested}, "test_")
        tracking.add_to_run(run_id, metrics.get("seeds", {}), "test_seeds_")
        tracking.add_to_run(run_id, metrics.get("validation", {}), "val_")
        mixture = metrics.get("kn_mixture", {})  # text: test_kn_perplexity, val_kn_weight (lambda), ...
        tracking.add_to_run(run_id, {k: v for k, v in mixture.items() if isinstance(v, float)}, "test_kn_")
        tracking.add_to_run(run_id, mixture.get("validation", {}), "val_kn_")
        for folder, files in artifacts.items():
            tracking.add_to_run(run_id, artifacts=files, folder=folder)
    files = {str(path): content_sha256(path) for paths_ in artifacts.values() for path in paths_}
    write_json(paths.logged(task), {"models": logged, "files": files, "chosen": chosen})
    print(f"{task}: test metrics, {len(artifacts['figures'])} figures and report added to {len(runs)} of {len(logged)} "
          f"MLflow runs in {store.tracking_uri()}")
    network, served = served_as(chosen["model"])
    identity = logged[network]["checkpoint_sha256"]
    if served != "model":  # a mixture: the checkpoint with the weight (and validation score) interpolate chose
        entry = {"checkpoint_sha256": identity, "validation": mixtures[chosen["model"]]["validation"]}
        identity = hashlib.sha256(json.dumps(entry, sort_keys=True).encode()).hexdigest()
    print(promote(task, chosen, identity, runs.get(network), served))


def served_as(chosen: str) -> tuple[str, str]:
    """(the trained network, the model of its MLflow run that serves `chosen`): a text network's mixture with
    Kneser-Ney, `<network>+kn`, is its run's model_kn (stage interpolate); any other model is its run's model."""
    return (chosen.removesuffix("+kn"), "model_kn") if chosen.endswith("+kn") else (chosen, "model")


def promote(task: str, chosen: dict, identity: str, run_id: str | None, served: str) -> str:
    """Register the chosen model as the task's champion, outside experiments (see above); what happened."""
    if os.environ.get("DVC_EXP_NAME"):
        return (f"{task}: {chosen['model']} is DVC experiment {tracking.dvc_experiment()}'s candidate, not promoted "
                f"(dvc exp apply the one chosen on validation, then dvc repro -s -f log@{task})")
    if run_id is None:
        return f"{task}: no MLflow run wrote {chosen['model']}'s checkpoint here: nothing to register"
    validation = {k: v for k, v in chosen.items() if k != "model"}
    return tracking.promote(task, run_id, identity, validation, served)


if __name__ == "__main__":
    run_stage(main, "python -m stages.log <task>")
