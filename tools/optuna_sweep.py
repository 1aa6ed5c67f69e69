"""A sweep across processes and machines: an Optuna study whose every trial is one DVC experiment.

Each worker process joins the study (created by the first), asks Optuna for a point of the search space, runs
`dvc exp run --temp -n <study>-<trial> -S <key>=<value> ...` (in a temporary copy: several workers share one
workspace), and returns the task's *validation* headline, which the plot stage wrote as
metrics/summary/<task>.json `chosen` (val_rmse, val_accuracy or val_perplexity of the model chosen on
validation). No test number is read. The trial's stages log to MLflow as any experiment's do (one run per model,
named <study>-<trial>-<model>), tagged optuna_study and optuna_trial. Optuna itself is the scheduler: the storage
(sqlite or a journal file on one machine, the team's PostgreSQL across several) holds the study, and a worker on
another machine joins it with the same --study and --storage, from its own clone; `--push <git remote>` shares
each trial's experiment through the Git and DVC remotes (`dvc exp push`).

    python tools/optuna_sweep.py run  --study lr --storage sqlite:///optuna.db --task passengers --trials 4 \\
        --space passengers.train.lr=log:0.001:0.03 --space passengers.model.hidden_size=int:8:64
    python tools/optuna_sweep.py best --study lr --storage sqlite:///optuna.db

A space is <key>=log:<low>:<high> (float, log scale), float:<low>:<high>, int:<low>:<high> or choice:<a>,<b>,...
`best` prints the trial with the best validation headline and the README's commands to apply and promote it.
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def parse_space(text: str) -> tuple[str, str, list[str]]:
    """`passengers.train.lr=log:0.001:0.03` -> ("passengers.train.lr", "log", ["0.001", "0.03"])."""
    key, sep, spec = text.partition("=")
    form, _, bounds = spec.partition(":")
    if not sep or form not in ("log", "float", "int", "choice"):
        raise SystemExit(f"error: --space {text}: expected <key>=log|float|int:<low>:<high> or <key>=choice:<a>,<b>")
    values = bounds.split(",") if form == "choice" else bounds.split(":")
    if form != "choice" and len(values) != 2:
        raise SystemExit(f"error: --space {text}: {form} needs <low>:<high>")
    return key, form, values


def suggest(trial, key: str, form: str, values: list[str]):
    if form == "int":
        return trial.suggest_int(key, int(values[0]), int(values[1]))
    if form == "choice":
        return trial.suggest_categorical(key, values)
    return trial.suggest_float(key, float(values[0]), float(values[1]), log=form == "log")


def headline(task: str) -> tuple[str, bool]:
    """The task's validation headline in metrics/summary/<task>.json and whether lower is better (its kind's)."""
    import yaml

    from stages import kinds

    kind = yaml.safe_load((ROOT / "params.yaml").read_text())["tasks"][task]
    figures = kinds.code(kind, "figures")  # the plot stage's: it writes the summary
    return f"val_{figures.HEADLINE}", figures.LOWER_IS_BETTER


def experiment_summary(name: str, task: str) -> dict:
    """metrics/summary/<task>.json as the experiment `name` committed it (its git ref under refs/exps)."""
    refs = subprocess.run(["git", "for-each-ref", "--format=%(refname)", "refs/exps"], cwd=ROOT, check=True,
                          capture_output=True, text=True).stdout.split()
    ref = next(r for r in refs if r.rsplit("/", 1)[-1] == name)
    shown = subprocess.run(["git", "show", f"{ref}:metrics/summary/{task}.json"], cwd=ROOT, check=True,
                           capture_output=True, text=True).stdout
    return json.loads(shown)[task]


def dvc(*args: str, env=None) -> str:
    """Run `dvc <args>` in the repository; its stdout, or a RuntimeError (a FAIL trial) naming the command and the
    last line it said."""
    done = subprocess.run(["dvc", *args], cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        said = (done.stderr or done.stdout).strip().splitlines()
        raise RuntimeError(f"dvc {' '.join(args)} failed: {said[-1] if said else f'exit code {done.returncode}'}")
    return done.stdout


def objective(trial, args, space, metric: str) -> float:
    name = f"{args.study}-{trial.number}"
    values = {key: suggest(trial, key, form, v) for key, form, v in space}
    sets = [arg for key, value in values.items() for arg in ("-S", f"{key}={value}")]
    env = os.environ | {"OPTUNA_STUDY": args.study, "OPTUNA_TRIAL": str(trial.number)}  # MLflow tags (tracking.py)
    print(f"trial {trial.number}: dvc exp run --temp -n {name} {' '.join(sets)}", flush=True)
    said = dvc("--wait-for-lock", "exp", "run", "--temp", "-n", name, *sets, env=env)
    for line in said.splitlines():  # the task's own stage lines (what log@<task> did), not every epoch
        if line.startswith(f"{args.task}: ") or line.startswith("warning: "):
            print(f"trial {trial.number}: {line}", flush=True)
    chosen = experiment_summary(name, args.task)["chosen"]
    trial.set_user_attr("experiment", name)
    trial.set_user_attr("model", chosen["model"])
    if args.push:  # the experiment's commit to the Git remote, its outputs to the DVC remote
        dvc("exp", "push", args.push, name)
    print(f"trial {trial.number}: {name} {metric} {chosen[metric]:.6g} ({chosen['model']})", flush=True)
    return chosen[metric]


def join_study(name: str, storage, direction: str, attempts: int = 5):
    """Create the study, or load it where another worker has. Workers started at once on a new database race to
    create Optuna's tables, and the loser's insert fails (sqlite: `UNIQUE constraint failed:
    alembic_version.version_num`, seen in CI); the tables exist by then, so it tries again a moment later."""
    import optuna
    from sqlalchemy.exc import SQLAlchemyError

    for attempt in range(attempts):
        try:
            return optuna.create_study(study_name=name, storage=storage, load_if_exists=True, direction=direction)
        except SQLAlchemyError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.5 * (attempt + 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["run", "best"])
    parser.add_argument("--study", required=True)
    parser.add_argument("--storage", required=True, help="sqlite:///optuna.db, a journal file, postgresql://...")
    parser.add_argument("--task", help="the task whose validation headline the trials are scored on (run)")
    parser.add_argument("--trials", type=int, default=1, help="trials this worker runs (run)")
    parser.add_argument("--space", action="append", default=[], help="<key>=<form>:<values> (run)")
    parser.add_argument("--push", help="a git remote: dvc exp push each trial's experiment there (run)")
    args = parser.parse_args()

    import optuna

    storage = args.storage
    if storage.endswith(".log") and "://" not in storage:  # a journal file: the one-machine storage without a database
        storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(storage))
    if args.command == "best":
        study = optuna.load_study(study_name=args.study, storage=storage)
        best = study.best_trial
        print(f"best trial {best.number} of {len(study.trials)}: {best.user_attrs['experiment']} "
              f"(validation {best.value:.6g}, {best.user_attrs['model']}) {best.params}")
        print(f"apply and promote: dvc exp apply {best.user_attrs['experiment']} && "
              f"dvc repro -s -f log@{study.user_attrs['task']}")
        return
    if not args.task or not args.space:
        raise SystemExit("error: run needs --task and at least one --space")
    space = [parse_space(text) for text in args.space]
    metric, lower = headline(args.task)
    study = join_study(args.study, storage, "minimize" if lower else "maximize")
    study.set_user_attr("task", args.task)
    study.set_user_attr("metric", metric)
    # a failed experiment (a refused or diverged setting) is a FAIL trial, and the worker goes on with the next
    study.optimize(lambda trial: objective(trial, args, space, metric), n_trials=args.trials, catch=(RuntimeError,))


if __name__ == "__main__":
    main()
