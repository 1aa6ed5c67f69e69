"""End to end: experiments in a temp copy of the repo reduced to two series tasks (passengers, and wine of
tests/e2e.py's own tasks), tiny settings: the README's grid sweep through DVC's queue, then scale-out (README
"Scale out"): data-parallel training through torch's elastic launcher, two "nodes" on 127.0.0.1, a rank that
dies, two tasks' train stages at once under DVC's own locks, and an Optuna study of DVC experiments. Each
scale-out test puts the workspace back as it found it (restore), so the tests after it see the plain repro's
outputs."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from stages.infra.files import content_sha256
from tests.e2e import (
    columns,
    commit,
    copy_project,
    exp_rows,
    free_port,
    histories_before_test,
    only_passengers,
    own_data,
    own_tasks,
    restore,
    run,
    serve_and_ask,
    set_params,
    snapshot,
    stage_env,
)

pytestmark = pytest.mark.e2e


def series_params(params: dict) -> dict:
    """passengers (three seeds: its sweep's headline is their mean) and wine (one seed), two epochs each."""
    params = own_tasks(only_passengers(params), ["wine"])
    for task in ("passengers", "wine"):
        params[task]["train"] |= {"epochs": 2, "patience": 1}
    params["wine"]["train"]["seeds"] = 1
    return params


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """A git repo holding the project's files reduced to passengers and wine, after one `dvc repro`."""
    repo = tmp_path_factory.mktemp("series")
    copy_project(repo)
    (repo / "dvc.lock").unlink()  # the lock of the full pipeline: not this one's
    params = series_params(yaml.safe_load((repo / "params.yaml").read_text()))
    (repo / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True, sort_keys=False))
    run("git init -q", repo)
    own_data(repo, ["wine"])
    commit(repo, "series")
    run(["dvc", "repro"], repo)
    return repo


# The README's sweep: a grid through DVC's queue on 2 workers, compared on validation, the winner applied,
# promoted and served. Points the tiny pipeline has not run before.
GRID = ("passengers.train.lr=0.003,0.02", "passengers.model.hidden_size=8,16")


@pytest.fixture(scope="module")
def sweep(repo, dvc_queue) -> dict:
    import itertools

    import mlflow

    commit(repo, "before-sweep")
    client = mlflow.MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    versions = len(client.search_model_versions("name = 'passengers'"))
    queued = run(["dvc", "exp", "run", "--queue", "-S", GRID[0], "-S", GRID[1]], repo).stdout
    names = re.findall(r"Queued experiment '([^']+)'", queued)
    status = dvc_queue(repo, stage_env(), workers=2)
    grid = {tuple(yaml.safe_load(v) for v in p) for p in itertools.product(*(g.split("=")[1].split(",") for g in GRID))}
    return {"names": names, "grid": grid, "status": status, "versions_before": versions, "client": client,
            "head": run(["git", "rev-parse", "HEAD"], repo).stdout.strip()}


def test_a_grid_sweep_runs_every_experiment_through_the_queue_with_every_mlflow_run_finished(repo, sweep):
    names, client = sweep["names"], sweep["client"]
    assert len(names) == 4 and all(re.search(rf"{name}\s.*\sSuccess", sweep["status"]) for name in names)
    rows = {r["Experiment"]: r for r in exp_rows(repo) if r["Experiment"] in names}
    assert set(rows) == set(names)  # 4 of 4 in dvc exp show
    assert {(float(r["passengers.train.lr"]), int(r["passengers.model.hidden_size"])) for r in rows.values()} == sweep["grid"]
    experiment = client.get_experiment_by_name("passengers").experiment_id
    runs = [r for name in names for r in client.search_runs([experiment], f"tags.dvc_experiment = '{name}'")]
    models = yaml.safe_load((repo / "params.yaml").read_text())["passengers"]["models"]
    assert len(runs) == 4 * len(models)  # every model of every experiment, none lost to a parallel worker
    assert all(r.info.status == "FINISHED" and "test_rmse" in r.data.metrics and "val_rmse" in r.data.metrics
               for r in runs)
    spans = sorted((min(r.info.start_time for r in runs if r.data.tags["dvc_experiment"] == n),
                    max(r.info.end_time for r in runs if r.data.tags["dvc_experiment"] == n)) for n in names)
    assert any(b[0] < a[1] for a, b in zip(spans, spans[1:])), spans  # two workers trained at the same time
    # the queue's experiments are candidates: none of them moved the champion
    assert len(client.search_model_versions("name = 'passengers'")) == sweep["versions_before"]


def test_the_winner_chosen_on_validation_is_applied_promoted_and_served(repo, sweep):
    names, client = sweep["names"], sweep["client"]
    ranked = [r for r in exp_rows(repo, "--sort-by", "passengers.chosen.val_rmse", "--sort-order", "asc",
                                  "--drop", r"^passengers\.rmse\.")  # no test column in sight while choosing
              if r["Experiment"] in names]
    assert not any(k.startswith("passengers.rmse.") for k in ranked[0])
    scores = [float(r["passengers.chosen.val_rmse"]) for r in ranked]
    assert scores == sorted(scores) and len(ranked) == 4
    winner = ranked[0]["Experiment"]
    run(["dvc", "exp", "apply", winner], repo)
    chosen = json.loads((repo / "metrics/summary/passengers.json").read_text())["passengers"]["chosen"]
    assert chosen["val_rmse"] == scores[0]
    out = run(["dvc", "repro", "-s", "-f", "log@passengers"], repo).stdout  # the README's promotion step
    assert re.search(r"passengers@champion -> version \d+ \(was version \d+\)", out), out
    champion = client.get_model_version_by_alias("passengers", "champion")
    assert champion.tags["dvc_experiment"] == winner and champion.tags["git_commit"] == sweep["head"]
    assert champion.tags["model"] == chosen["model"] and float(champion.tags["val_rmse"]) == scores[0]
    assert champion.tags["checkpoint_sha256"] == content_sha256(repo / f"models/passengers/{chosen['model']}.pt")
    versions = len(client.search_model_versions("name = 'passengers'"))
    again = run(["dvc", "repro", "-s", "-f", "log@passengers"], repo).stdout  # the same checkpoint: a no-op
    assert f"already version {champion.version}" in again
    assert len(client.search_model_versions("name = 'passengers'")) == versions == sweep["versions_before"] + 1
    served = serve_and_ask(repo, "models:/passengers@champion", histories_before_test(repo))
    expected = np.array(columns(repo / f"plots/passengers/predictions/{chosen['model']}.csv")["ensemble"], float)
    assert served.shape == expected.shape and np.allclose(served, expected, rtol=1e-6)
    assert 250 < served.mean() < 650  # real counts, thousands of passengers a month


def scale_runs(repo: Path, task: str, **params) -> list:
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(task).experiment_id
    where = " and ".join(f"params.{k} = '{v}'" for k, v in params.items())
    return client.search_runs([experiment], where)


def test_two_ranks_train_an_experiment_with_one_checkpoint_and_one_mlflow_run_per_model(repo):
    before, params = snapshot(repo), (repo / "params.yaml").read_text()
    try:
        out = run(["dvc", "exp", "run", "-n", "ddp", "-S", "scale.nproc_per_node=2", "train@wine"], repo).stdout
        assert "train@wine: 2 workers (scale 2 x 1), launched by torch.distributed's elastic launcher" in out, out
        assert "DDP: 2 ranks, each training its slice of every batch of" in out  # rank 0's output, once
        lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]["train@wine"]["params"]["params.yaml"]
        assert lock["scale"] == {"nproc_per_node": 2, "nnodes": 1}
        assert sorted(p.name for p in (repo / "models/wine").glob("*.pt")) == ["hybrid_lstm.pt", "lstm.pt"]
        runs = scale_runs(repo, "wine", world_size=2)
        assert sorted(r.info.run_name for r in runs) == ["ddp-hybrid_lstm", "ddp-lstm"]  # one per model, by rank 0
        assert all(r.info.status == "FINISHED" and r.data.params["rank_batch_size"] == "8" and
                   r.data.tags["checkpoint_sha256"] == content_sha256(repo / f"models/wine/{r.data.tags['model']}.pt")
                   for r in runs)
    finally:
        restore(repo, before, params)


def test_two_nodes_on_127_0_0_1_train_together_and_node_0_alone_writes(repo, tmp_path):
    """The static rendezvous: node 1 runs the stage's command in its own copy of what the stage reads (as after
    `git checkout` + `dvc pull`), node 0 runs `dvc repro`; every output is written once, by node 0."""
    before, params = snapshot(repo), (repo / "params.yaml").read_text()
    set_params(repo, **{"scale.nnodes": 2})
    node1 = tmp_path / "node1"
    for name in ("stages", "params.yaml", "data/prepared/wine", "models/wine", "plots/wine/histories"):
        copy = shutil.copytree if (repo / name).is_dir() else shutil.copy2
        (node1 / name).parent.mkdir(parents=True, exist_ok=True)
        copy(repo / name, node1 / name)
    node1_before = {p: p.read_bytes() for p in node1.rglob("*") if p.is_file()}
    env = stage_env() | {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    try:
        other = subprocess.Popen([sys.executable, "-m", "stages.train", "wine"], cwd=node1, env=env | {"NODE_RANK": "1"},
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        done = subprocess.run(["dvc", "repro", "-s", "-f", "train@wine"], cwd=repo, env=env | {"NODE_RANK": "0"},
                              capture_output=True, text=True, timeout=600)
        said, _ = other.communicate(timeout=120)
        assert done.returncode == 0 and other.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:] + said[-3000:]
        assert "train@wine: 2 workers (scale 1 x 2)" in done.stdout
        assert {p: p.read_bytes() for p in node1.rglob("*") if p.is_file() and "__pycache__" not in p.parts} == {
            p: b for p, b in node1_before.items() if "__pycache__" not in p.parts}  # node 1 wrote nothing
        assert not (node1 / "mlflow.db").exists()
        lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]["train@wine"]["params"]["params.yaml"]
        assert lock["scale"] == {"nproc_per_node": 1, "nnodes": 2}
        runs = scale_runs(repo, "wine", nnodes=2)
        assert sorted(r.data.tags["model"] for r in runs) == ["hybrid_lstm", "lstm"]
        assert {r.data.tags["checkpoint_sha256"] for r in runs} == {
            content_sha256(repo / f"models/wine/{m}.pt") for m in ("hybrid_lstm", "lstm")}
    finally:
        restore(repo, before, params)


def worker_pids(repo: Path, rank: int) -> list[int]:
    """The elastic workers of global rank `rank` whose working directory is `repo`."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
            if (any(e.startswith(b"TORCHELASTIC_RUN_ID=") for e in environ) and f"RANK={rank}".encode() in environ
                    and Path(os.readlink(proc / "cwd")) == repo):
                pids.append(int(proc.name))
        except (OSError, ValueError):
            continue
    return pids


def test_a_killed_rank_ends_the_stage_in_seconds_with_one_line_and_costs_no_output(repo):
    import signal
    import time

    before, params = snapshot(repo), (repo / "params.yaml").read_text()
    set_params(repo, **{"scale.nproc_per_node": 2, "wine.train.epochs": 5000, "wine.train.patience": 5000})
    try:
        stage = subprocess.Popen(["dvc", "repro", "-s", "train@wine"], cwd=repo, env=stage_env(),
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for line in stage.stdout:  # rank 0's epochs: both ranks are training
            if line.startswith("epoch   3/"):
                break
        (pid,) = worker_pids(repo, 1)
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        rest, said = stage.communicate(timeout=60)
        took = time.monotonic() - killed
        assert stage.returncode != 0 and took <= 30, (took, said[-2000:])
        errors = [line for line in said.splitlines() if line.startswith("error: ")]
        assert errors == ["error: train@wine: rank 1 of 2 (scale 2 x 1) was killed by SIGKILL; the others were stopped"], said
        assert "Traceback" not in said + rest
        after = snapshot(repo)
        assert after == before  # every checkpoint, history and dvc.lock as they were
    finally:
        restore(repo, before, params)
        if stage.poll() is None:
            stage.kill()


def test_two_tasks_train_at_once_under_dvcs_locks_as_they_train_one_after_the_other(repo):
    """The README's recipe on one machine: after the shared upstream is up to date, one `dvc --wait-for-lock repro
    -s train@<task>` per task at once, each with its share of the cores (on a GPU box: its CUDA_VISIBLE_DEVICES)."""
    import time

    before, params = snapshot(repo), (repo / "params.yaml").read_text()
    env = stage_env() | {"OMP_NUM_THREADS": "1"}  # the same threads in both runs: the same floats
    tasks = ("wine", "passengers")
    trained = lambda: {k: v for k, v in snapshot(repo).items()  # noqa: E731
                       if k.startswith(tuple(f"{d}/{t}/" for t in tasks for d in ("models", "plots")))}
    try:
        started = time.monotonic()
        for task in tasks:
            subprocess.run(["dvc", "repro", "-s", "-f", f"train@{task}"], cwd=repo, env=env, check=True,
                           capture_output=True)
        serial, serial_s = trained(), time.monotonic() - started
        started = time.monotonic()
        stages = [subprocess.Popen(["dvc", "--wait-for-lock", "repro", "-s", "-f", f"train@{task}"], cwd=repo,
                                   env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                  for task in tasks]
        said = [s.communicate(timeout=600)[0] for s in stages]
        assert [s.returncode for s in stages] == [0, 0], said
        print(f"serial {serial_s:.1f} s, at once {time.monotonic() - started:.1f} s (tiny settings, this machine)")
        assert trained() == serial  # the same checkpoints and histories
        lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
        assert all(f"train@{t}" in lock for t in tasks)
        assert run(["dvc", "status", *(f"train@{t}" for t in tasks)], repo).stdout.strip().endswith("up to date.")
    finally:
        restore(repo, before, params)


def test_an_optuna_study_of_8_trials_by_2_workers_chooses_on_validation(repo, tmp_path):
    """tools/optuna_sweep.py: two worker processes join one study (sqlite here; the team tests use PostgreSQL),
    each trial a `dvc exp run --temp`, its objective the task's validation headline."""
    import mlflow
    import optuna

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    sweep = [sys.executable, "tools/optuna_sweep.py", "--study", "wine-lr", "--storage", storage]
    env = stage_env() | {"OMP_NUM_THREADS": "1"}
    workers = [subprocess.Popen([*sweep[:2], "run", *sweep[2:], "--task", "wine", "--trials", "4",
                                 "--space", "wine.train.lr=log:0.001:0.03", "--space", "wine.model.hidden_size=int:4:16"],
                                cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for _ in range(2)]
    said = [w.communicate(timeout=1200)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], said
    study = optuna.load_study(study_name="wine-lr", storage=storage)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(study.trials) == len(done) == 8, [t.state for t in study.trials]
    names = {t.user_attrs["experiment"] for t in done}
    assert names == {f"wine-lr-{i}" for i in range(8)}
    rows = {r["Experiment"]: r for r in exp_rows(repo) if r["Experiment"] in names}
    assert set(rows) == names  # 8 of 8 in dvc exp show
    for t in done:  # each trial's value is its experiment's validation headline, never a test number
        assert t.value == float(rows[t.user_attrs["experiment"]]["wine.chosen.val_rmse"])
        assert set(t.user_attrs) == {"experiment", "model"}
    client = mlflow.MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("wine").experiment_id], "tags.optuna_study = 'wine-lr'")
    assert len(runs) == 8 * 2 and all(r.info.status == "FINISHED" and {"val_rmse", "test_rmse"} <= set(r.data.metrics)
                                      for r in runs)  # each its own log stage's numbers, the same checkpoint or not
    assert {r.data.tags["optuna_trial"] for r in runs} == {str(t.number) for t in done}
    best = run([*sweep[:2], "best", *sweep[2:]], repo).stdout
    assert f"{study.best_trial.user_attrs['experiment']} (validation {study.best_value:.6g}" in best
    assert study.best_value == min(t.value for t in done)
