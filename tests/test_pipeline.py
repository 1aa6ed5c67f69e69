"""End to end: the real `dvc repro` on tiny settings in a temp copy of the repo, with a real MLflow store.

Also runs the flowers task through its online path, against a tiny ImageFolder archive served from 127.0.0.1.
"""
import functools
import hashlib
import io
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from stages.files import content_sha256

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.e2e


def stage_env() -> dict:
    """This interpreter's env with telemetry off, its venv's dvc first on PATH and no tracking URI from the machine."""
    env = os.environ | {"MLFLOW_DISABLE_TELEMETRY": "true", "DVC_NO_ANALYTICS": "1",
                        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def run(cmd, cwd, check=True):
    done = subprocess.run(cmd, cwd=cwd, env=stage_env(), shell=isinstance(cmd, str), capture_output=True, text=True)
    if check and done.returncode != 0:
        raise AssertionError(f"{cmd} failed ({done.returncode}):\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
    return done


def flower_archive(folder: Path) -> Path:
    """A tiny flower_photos.tgz in the official layout: 5 class folders of small JPEGs, plus one corrupt file."""
    from PIL import Image

    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for c, name in enumerate(["daisy", "dandelion", "roses", "sunflowers", "tulips"]):
            for i in range(12):
                pixels = rng.integers(0, 60, (40 + i, 50, 3)) + np.array([40 * c, 200 - 40 * c, 100])
                jpeg = io.BytesIO()
                Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(jpeg, format="JPEG")
                info = tarfile.TarInfo(f"flower_photos/{name}/{i}.jpg")
                info.size = len(jpeg.getvalue())
                tar.addfile(info, io.BytesIO(jpeg.getvalue()))
        info = tarfile.TarInfo("flower_photos/roses/broken.jpg")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"trunc"))
    path = folder / "flower_photos.tgz"
    path.write_bytes(buffer.getvalue())
    return path


@pytest.fixture(scope="module")
def served(tmp_path_factory, file_server):
    folder = tmp_path_factory.mktemp("served")
    archive = flower_archive(folder)
    with file_server(folder) as server:
        yield server.url(archive.name), hashlib.sha256(archive.read_bytes()).hexdigest()


def tiny_params(params: dict, flowers_url: str, flowers_sha256: str) -> dict:
    for task in ("passengers", "temperature", "digits", "flowers", "text"):
        params[task]["train"] |= {"epochs": 2, "patience": 1}
    for phase in ("scratch", "extract", "finetune"):
        params["transfer"][phase] |= {"epochs": 2, "patience": 1}
    params["flowers"]["preprocess"]["image_size"] = 32
    params["flowers"]["download"] |= {"url": flowers_url, "checksum": f"sha256:{flowers_sha256}"}
    params["tasks"]["flowers"] = "images"
    params["runs"]["flowers"] = {"kind": "images", "models": ["flower_cnn", "small_cnn"]}
    return params


@pytest.fixture(scope="module")
def repo(tmp_path_factory, served):
    """A git repo holding the project's files (not its outputs), with tiny params, after one `dvc repro`."""
    repo = tmp_path_factory.mktemp("repo")
    files = run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], ROOT).stdout.split()
    for name in files:
        if (ROOT / name).is_file():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, repo / name)
    params = tiny_params(yaml.safe_load((repo / "params.yaml").read_text()), *served)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True, sort_keys=False))
    run("git init -q && git add -A && git -c user.name=t -c user.email=t@t commit -qm tiny", repo)
    run(["dvc", "repro"], repo)
    return repo


def stale_stages(repo: Path, *assignments: str) -> set[str]:
    """Stages `dvc repro` would run after setting params (the edit is undone afterwards)."""
    original = (repo / "params.yaml").read_text()
    params = yaml.safe_load(original)
    for assignment in assignments:
        key, value = assignment.split("=")
        *parents, leaf = key.split(".")
        node = functools.reduce(lambda d, k: d[k], parents, params)
        node[leaf] = yaml.safe_load(value)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True, sort_keys=False))
    try:
        # The check stage reads the whole file, so it re-runs on any edit; its output stays the same, so nothing
        # below it re-runs for its sake: run it for real first. Then --dry alone would list only the stages whose
        # own deps changed (it cannot know that their outputs will change); --force-downstream adds everything
        # below them, which is what a real run re-runs.
        run(["dvc", "repro", "check"], repo)
        out = run(["dvc", "repro", "--dry", "--force-downstream"], repo).stdout
    finally:
        (repo / "params.yaml").write_text(original)
        run(["dvc", "repro", "check"], repo)
    return set(re.findall(r"Running stage '([^']+)'", out))


def test_every_metrics_file_is_finite(repo):
    files = sorted((repo / "metrics").rglob("*.json"))
    assert len(files) >= 20  # 14 models + 3 transfer phases + 6 baseline files
    for path in files:
        def numbers(node):
            return [v for x in node.values() for v in numbers(x)] if isinstance(node, dict) else [node]
        values = [v for v in numbers(json.loads(path.read_text())) if isinstance(v, (int, float))]
        assert values and all(math.isfinite(v) for v in values), path


def test_forecasters_report_seed_spread_and_validation_beside_classical_baselines(repo):
    lstm = json.loads((repo / "metrics/passengers/models/lstm.json").read_text())
    assert lstm["seeds"]["count"] == 3 and lstm["seeds"]["kept"] in (42, 43, 44)
    assert lstm["seeds"]["rmse_std"] > 0 and "rmse" in lstm["validation"]  # three seeds that train differently
    baselines = json.loads((repo / "metrics/passengers/baselines.json").read_text())
    assert set(baselines) == {"naive", "seasonal_naive", "linear_ar", "sarima", "ets", "sarima_ets_mean"}
    hybrid = json.loads((repo / "metrics/passengers/models/hybrid_lstm.json").read_text())
    assert hybrid["seeds"]["count"] == 3 and {"rmse", "validation"} <= set(hybrid["ensemble"])
    summary = json.loads((repo / "metrics/summary/passengers.json").read_text())["passengers"]["rmse"]
    assert summary["hybrid_lstm"] == hybrid["ensemble"]["rmse"]  # train.ensemble: the headline is the seeds' mean
    temperature = json.loads((repo / "metrics/temperature/baselines.json").read_text())
    assert {"linear_ar", "sarima"} <= set(temperature)


def test_a_top_level_train_key_stops_the_experiment_before_any_stage(repo):
    """The slip DVC's own hint leads to (`-S +train.lr=...`): the check stage refuses it in one line."""
    done = run(["dvc", "exp", "run", "--temp", "-S", "+train.lr=0.01"], repo, check=False)
    assert done.returncode != 0
    assert "unknown top-level key train: keys are task-first" in done.stdout + done.stderr
    assert "Running stage 'download" not in done.stdout


def test_second_repro_is_a_no_op(repo):
    assert "Data and pipelines are up to date" in run(["dvc", "repro"], repo).stdout


def test_a_forced_rerun_leaves_git_status_clean(repo):
    """Byte-reproducible outputs: rerunning every stage of two tasks (series with three seeds and SARIMA, images
    with augmentation and the logistic baseline) rewrites dvc.lock, metrics and plots identically. (The whole
    default pipeline was checked the same way once, by hand: docs/pipeline.md.)"""
    run("git add -A && git -c user.name=t -c user.email=t@t commit -qm outputs", repo)
    run(["dvc", "repro", "-f", "log@passengers", "log@digits"], repo)
    assert run(["git", "status", "--porcelain"], repo).stdout == ""


def vega_plots(repo: Path) -> int:
    """How many interactive plots dvc.yaml's `plots:` section declares (the rest are PNG folders)."""
    return sum(isinstance(p, dict) for p in yaml.safe_load((repo / "dvc.yaml").read_text())["plots"])


@pytest.fixture(scope="module")
def plots_page(repo, tmp_path_factory) -> Path:
    done = run(["dvc", "plots", "show", "-o", str(tmp_path_factory.mktemp("plots"))], repo)
    assert "failed to load" not in done.stdout + done.stderr  # e.g. a report.md among the PNGs
    return Path(done.stdout.strip().splitlines()[-1].replace("file://", ""))


def test_dvc_plots_page_loads_nothing_from_the_network(repo, plots_page):
    html = plots_page.read_text(encoding="utf-8")
    assert not re.search(r"<script[^>]*\bsrc=", html)  # vega is inlined (.dvc/plots/offline.html), no CDN
    assert html.count("vegaEmbed('#") == vega_plots(repo) > 0


def test_every_declared_plot_draws_in_a_real_browser_offline(repo, plots_page, tmp_path):
    from tests.browser import chromium_path, render

    if chromium_path() is None:
        pytest.skip("no chromium on this machine (.ci/run installs it)")
    drawn = render(plots_page, tmp_path / "plots.png")  # every host name unresolvable: no network at all
    assert drawn["views"] == drawn["expected_views"] == vega_plots(repo), drawn["error_messages"]
    assert drawn["errors"] == 0 and drawn["nonblank"], drawn["error_messages"]


def test_seq_length_change_reruns_only_that_tasks_preprocess_and_after(repo):
    expected = {"preprocess@passengers", "baseline@passengers", "train@passengers", "evaluate@passengers",
                "plot@passengers", "log@passengers"}
    assert stale_stages(repo, "passengers.preprocess.seq_length=6") == expected


def test_lr_change_reruns_only_that_tasks_train_and_after(repo):
    expected = {"train@passengers", "evaluate@passengers", "plot@passengers", "log@passengers"}
    assert stale_stages(repo, "passengers.train.lr=0.005") == expected


def test_finetune_change_reruns_only_the_finetune_phase_and_after(repo):
    assert stale_stages(repo, "transfer.finetune.unfreeze_blocks=2") == {"finetune", "evaluate@transfer",
                                                                          "plot@transfer", "log@transfer"}


# What a one-line edit of each shared module re-runs (docs/pipeline.md: "What re-runs after an edit"), by kind of module.
FIGURES = {"figures", "series_figures", "images_figures", "text_figures"}
LOOP = {"training", "inference", "models"}


def stages_running(repo: Path, module: str) -> set[str]:
    """The stages whose declared code includes stages/<module>.py, as `dvc status` finds them after an edit."""
    from dvc.repo import Repo

    path = repo / "stages" / f"{module}.py"
    original = path.read_bytes()
    path.write_bytes(original + b"# an edit\n")
    try:
        with Repo(str(repo)) as dvc:
            status = dvc.status()
    finally:
        path.write_bytes(original)
    # status names a stage `<path to dvc.yaml>:<stage>` when run from another directory
    return {name.rsplit(":", 1)[-1] for name, changes in status.items() for change in changes
            if isinstance(change, dict) and change.get("changed deps", {}).get(f"stages/{module}.py") == "modified"}


def test_an_edit_reruns_only_the_stages_that_run_the_edited_code(repo):
    from dvc.repo import Repo

    params = yaml.safe_load((repo / "params.yaml").read_text())
    with Repo(str(repo)) as dvc:
        stages = list(dvc.index.stages)
    kind = {}  # stage -> the kind of its task; transfer's phases are images stages
    for s in stages:
        name = s.addressing.rsplit(":", 1)[-1]  # `<path to dvc.yaml>:<stage>` when run from another directory
        group, _, task = name.partition("@")
        kind[name] = "images" if group in ("scratch", "extract", "finetune") else params["tasks"].get(task)
    stage_modules = {re.match(r"python -m stages\.(\w+)", s.cmd).group(1) for s in stages}
    plumbing = {"__init__", "config", "loader", "errors", "files", "store", "tracking", "serving", "paths", "kinds"}
    shared = sorted({p.stem for p in (repo / "stages").glob("*.py")} - stage_modules - plumbing)
    assert len(shared) >= 15, shared
    shares = {}
    for module in shared:
        running = stages_running(repo, module)
        assert running, f"no stage declares stages/{module}.py"
        shares[module] = len(running) / len(stages)
        groups = {a.partition("@")[0] for a in running}
        if module in FIGURES:
            assert groups == {"plot"}, (module, running)
        for k in ("series", "images", "text"):
            if module == k or module.startswith(f"{k}_"):
                assert {kind[a] for a in running} - {None} == {k}, (module, running)  # None: check
        if module in LOOP:
            assert not groups & {"check", "download", "preprocess", "baseline", "plot", "log"}, (module, running)
    print("share of stages an edit re-runs: " + ", ".join(f"{m} {v:.0%}" for m, v in shares.items()))
    assert sum(shares.values()) / len(shares) <= 0.35


def test_a_fresh_clone_logs_test_metrics_and_figures_to_its_own_mlflow(repo, tmp_path):
    """Checkpoints are not in git, so a clone's train runs again and writes byte-identical checkpoints; evaluate
    and plot are then skipped (their outputs in git match), and the log stage, whose output is in the DVC cache,
    still adds their metrics and figures to the clone's runs. A second repro is a no-op; git stays clean."""
    import mlflow

    run("git add -A && git -c user.name=t -c user.email=t@t commit -qm outputs --allow-empty", repo)
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(repo), str(clone)], tmp_path)
    out = run(["dvc", "repro", "log@passengers"], clone).stdout
    assert "Running stage 'train@passengers'" in out and "Running stage 'log@passengers'" in out
    assert "Running stage 'evaluate@passengers'" not in out  # skipped: the same checkpoints, the same metrics
    client = mlflow.MlflowClient(f"sqlite:///{clone / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("passengers").experiment_id])
    trained = yaml.safe_load((clone / "params.yaml").read_text())["runs"]["passengers"]["models"]
    assert sorted(r.data.tags["model"] for r in runs) == sorted(trained) and "hybrid_lstm" in trained
    for r in runs:
        expected = json.loads((clone / f"metrics/passengers/models/{r.data.tags['model']}.json").read_text())
        assert r.data.metrics["test_rmse"] == expected["rmse"]
        assert {a.path for a in client.list_artifacts(r.info.run_id, "figures")} >= {
            "figures/forecasts.png", "figures/passengers.md"}
    chosen = json.loads((clone / "metrics/summary/passengers.json").read_text())["passengers"]["chosen"]["model"]
    champion = client.get_model_version_by_alias("passengers", "champion")  # registered where plot was skipped
    assert champion.tags["checkpoint_sha256"] == content_sha256(clone / f"models/passengers/{chosen}.pt")
    assert "Data and pipelines are up to date" in run(["dvc", "repro", "log@passengers"], clone).stdout
    # interpolate's output is in the DVC cache too: the clone mixes again and its text runs get model_kn
    assert "Running stage 'interpolate@text'" in run(["dvc", "repro", "interpolate@text"], clone).stdout
    runs = client.search_runs([client.get_experiment_by_name("text").experiment_id])
    assert runs and all("model_kn" in {a.path for a in client.list_artifacts(r.info.run_id)} for r in runs)
    assert run(["git", "status", "--porcelain"], clone).stdout == ""


def test_flowers_reports_the_corrupt_file_and_skips_it(repo):
    meta = json.loads((repo / "data/prepared/flowers/meta.json").read_text())
    assert meta["skipped"] == ["roses/broken.jpg"]
    assert meta["sizes"]["train"] + meta["sizes"]["val"] + meta["sizes"]["test"] == 60


def training_runs(repo: Path) -> dict:
    """(task, model) -> the newest MLflow run of its training stage."""
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    runs = {}
    for experiment in client.search_experiments():
        for r in client.search_runs([experiment.experiment_id], order_by=["start_time ASC"]):
            runs[(r.data.tags["task"], r.data.tags["model"])] = r
    return runs


def test_every_model_is_logged_to_mlflow_with_test_metrics_and_real_inputs(repo):
    import mlflow

    runs = training_runs(repo)
    assert {("passengers", "lstm"), ("digits", "cnn2"), ("text", "gru"), ("flowers", "small_cnn"),
            ("transfer", "finetune")} <= set(runs)
    lstm = runs[("passengers", "lstm")]
    assert "test_rmse" in lstm.data.metrics and lstm.data.params["passengers.train.lr"] == "0.01"
    client = mlflow.MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    assert len(client.get_metric_history(lstm.info.run_id, "val_loss")) >= 1
    # artifacts live beside mlflow.db, not in ./mlruns of whatever copy (a queued experiment's) ran the stage
    assert lstm.info.artifact_uri.startswith((repo / "mlartifacts").as_uri())
    assert runs[("transfer", "finetune")].data.tags["mlflow.parentRunId"] == runs[("transfer", "extract")].info.run_id
    digits, text = np.load(repo / "data/prepared/digits/data.npz"), runs[("text", "gru")]
    mlflow.set_tracking_uri(client.tracking_uri)  # runs:/ URIs resolve through the global tracking URI
    try:
        cnn2 = mlflow.pyfunc.load_model(f"runs:/{runs[('digits', 'cnn2')].info.run_id}/model")
        words = mlflow.pyfunc.load_model(f"runs:/{text.info.run_id}/model")
        mixed = mlflow.pyfunc.load_model(f"runs:/{text.info.run_id}/model_kn")  # added by interpolate
    finally:
        mlflow.set_tracking_uri(None)
    answer = cnn2.predict(digits["x_test"][:20])  # uint8 test images, as a client has them
    assert list(answer["class"]) == columns(repo / "plots/digits/predictions/cnn2.csv")["predicted"][:20]
    assert np.allclose(answer.filter(like="p_").sum(axis=1), 1, atol=1e-5)
    continued = words.predict(pd.DataFrame({"text": ["대한민국은", "국민은"]}))
    assert all(len(c.split()) == 5 for c in continued["continuation"])
    # the logged mixture continues each prompt as generate's gru+kn did
    samples = (repo / "plots/text/samples.md").read_text().split("## gru+kn\n")[1].split("\n## ")[0]
    greedy = dict(re.findall(r"^\| (.+?) \| greedy \| (.+) \|$", samples, re.M))
    assert len(greedy) >= 2 and list(mixed.predict(pd.DataFrame({"text": list(greedy)}))["continuation"]) == list(greedy.values())


def columns(path: Path) -> dict[str, list[str]]:
    import csv

    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return {k: [row[k] for row in rows] for k in rows[0]}


def test_the_served_forecaster_answers_in_thousands_of_passengers_as_the_pipeline_does(repo):
    """`mlflow models serve` on 127.0.0.1, asked over HTTP with real monthly counts: its forecasts are the ones
    evaluate wrote for the test months."""
    run_id = training_runs(repo)[("passengers", "lstm")].info.run_id
    served = serve_and_ask(repo, f"runs:/{run_id}/model", histories_before_test(repo))
    # passengers.train.ensemble: the served model is the mean of the seeds, as the headline
    expected = np.array(columns(repo / "plots/passengers/predictions/lstm.csv")["ensemble"], dtype=float)
    assert served.shape == expected.shape and np.allclose(served, expected, rtol=1e-6)
    assert 250 < expected.mean() < 650  # thousands of passengers a month in 1958-1960, not a scaled difference


def histories_before_test(repo: Path) -> np.ndarray:
    """The real months before each test month, as many as one forecast needs."""
    data = np.load(repo / "data/prepared/passengers/data.npz")
    span = 12 + 13  # seq_length + sum(differences): the months one forecast needs
    return np.stack([data["series"][t - span : t] for t in data["index_test"]])


def serve_and_ask(repo: Path, model_uri: str, history: np.ndarray) -> np.ndarray:
    """Start `mlflow models serve -m <model_uri>` on 127.0.0.1 against the repo's store, POST the rows of real
    values to /invocations, stop the server; its forecasts."""
    import socket
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = os.environ | {"MLFLOW_TRACKING_URI": f"sqlite:///{repo / 'mlflow.db'}", "MLFLOW_DISABLE_TELEMETRY": "true",
                        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    server = subprocess.Popen(["mlflow", "models", "serve", "-m", model_uri, "--env-manager", "local",
                               "-h", "127.0.0.1", "-p", str(port)], cwd=repo, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2).close()
                break
            except OSError:
                assert server.poll() is None, server.stderr.read()[-3000:]
                time.sleep(0.5)
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", method="POST",
                                         data=json.dumps({"inputs": history.tolist()}).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            return np.array(json.loads(response.read())["predictions"], dtype=float)
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_training_runs_last_as_long_as_training(repo):
    """The log stage adds test metrics and figures to the finished run; it does not reopen it."""
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    for (task, model), run in training_runs(repo).items():
        if task not in ("passengers", "digits", "transfer"):
            continue
        info = client.get_run(run.info.run_id).info
        assert info.status == "FINISHED" and (info.end_time - info.start_time) / 1000 < 90, (task, model)
        test_metric = next(k for k in run.data.metrics if k.startswith("test_"))
        assert client.get_metric_history(run.info.run_id, test_metric)[0].timestamp >= info.end_time, (task, model)
        assert any(a.path.startswith("figures") for a in client.list_artifacts(run.info.run_id)), (task, model)


def test_bad_input_fails_with_one_line_and_leaves_no_partial_output(repo):
    raw = repo / "data/raw/passengers/airline-passengers.csv"
    good = raw.read_text()
    for bad in (good.replace(",112", ",nan", 1), good[:good.index("1955-04") + 9]):  # a NaN; a file cut mid-number
        raw.write_text(bad)
        try:
            done = run([sys.executable, "-m", "stages.preprocess", "passengers"], repo, check=False)
        finally:
            raw.write_text(good)
        assert done.returncode == 2
        assert done.stderr.strip().count("\n") == 0 and "data/raw/passengers: not the bundled passengers data" in done.stderr
    assert not list((repo / "data/prepared").rglob(".*.tmp"))


def test_a_plain_repro_registers_each_tasks_model_chosen_on_validation_as_its_champion(repo):
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    tasks = yaml.safe_load((repo / "params.yaml").read_text())["tasks"]
    assert {m.name for m in client.search_registered_models()} == set(tasks)
    for task in tasks:
        chosen = json.loads((repo / f"metrics/summary/{task}.json").read_text())[task]["chosen"]
        champion = client.get_model_version_by_alias(task, "champion")
        network = chosen["model"].removesuffix("+kn")
        assert champion.tags["model"] == network, task
        if chosen["model"].endswith("+kn"):  # text: the network's Kneser-Ney mixture, its run's model_kn
            assert champion.tags["served"] == "model_kn" and champion.source.endswith("/model_kn"), champion.source
        else:
            assert champion.tags["served"] == "model"
            assert champion.tags["checkpoint_sha256"] == content_sha256(repo / f"models/{task}/{network}.pt")


def test_dvc_exp_run_names_the_mlflow_run_after_the_experiment(repo):
    """...and tags it; an experiment's model is a candidate: the champion stays where the plain repro put it."""
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    champion = client.get_model_version_by_alias("passengers", "champion").version
    out = run(["dvc", "exp", "run", "-n", "lr-small", "-S", "passengers.train.lr=0.005"], repo).stdout
    experiment = client.get_experiment_by_name("passengers")
    runs = client.search_runs([experiment.experiment_id], "tags.dvc_experiment = 'lr-small'")
    models = yaml.safe_load((repo / "params.yaml").read_text())["runs"]["passengers"]["models"]
    assert sorted(r.info.run_name for r in runs) == sorted(f"lr-small-{m}" for m in models)
    assert "lr-small" in run(["dvc", "exp", "show", "--csv"], repo).stdout
    assert "DVC experiment lr-small's candidate, not promoted" in out
    assert client.get_model_version_by_alias("passengers", "champion").version == champion


def snapshot(repo: Path) -> dict:
    """Every output file's bytes (checkpoints, prepared data, metrics, plots) and dvc.lock."""
    files = [repo / "dvc.lock"] + [p for folder in ("data", "models", "metrics", "plots", "logs")
                                   for p in sorted((repo / folder).rglob("*")) if p.is_file()]
    return {str(p.relative_to(repo)): p.read_bytes() for p in files}


@pytest.mark.parametrize("assignment, message", [
    ("device=cuda", "device is cuda but this machine has no CUDA device"),
    ("passengers.preprocess.seq_length=500", "passengers.preprocess.seq_length=500 is too long"),
    ("seed=-1", "seed must be in"),
])
def test_a_refused_experiment_costs_no_output(repo, assignment, message):
    """The check stage judges these before DVC deletes anything; dvc.lock and every output stay as they were."""
    if assignment == "device=cuda" and torch_has_cuda():
        pytest.skip("this machine has CUDA")
    before, params = snapshot(repo), (repo / "params.yaml").read_text()
    try:
        done = run(["dvc", "exp", "run", "-S", assignment], repo, check=False)
    finally:
        (repo / "params.yaml").write_text(params)
    assert done.returncode != 0 and message in done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert snapshot(repo) == before


def torch_has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def test_a_corrupt_checkpoint_stops_evaluate_and_its_outputs_survive(repo):
    """What only the stage can judge: its outputs are `persist: true`, so DVC keeps them for the refusal."""
    checkpoint = repo / "models/passengers/lstm.pt"
    good, before = checkpoint.read_bytes(), snapshot(repo)
    checkpoint.write_bytes(good[: len(good) // 2])
    try:
        done = run(["dvc", "repro", "-s", "evaluate@passengers"], repo, check=False)
    finally:
        checkpoint.write_bytes(good)
    assert done.returncode != 0 and "models/passengers/lstm.pt" in done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert snapshot(repo) == before


# The README's sweep: a grid through DVC's queue on 2 workers, compared on validation, the winner applied,
# promoted and served. Points the tiny pipeline has not run before.
GRID = ("passengers.train.lr=0.003,0.02", "passengers.model.hidden_size=8,16")


@pytest.fixture(scope="module")
def sweep(repo, dvc_queue) -> dict:
    import itertools

    import mlflow

    run("git add -A && git -c user.name=t -c user.email=t@t commit -qm before-sweep --allow-empty", repo)
    client = mlflow.MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    versions = len(client.search_model_versions("name = 'passengers'"))
    queued = run(["dvc", "exp", "run", "--queue", "-S", GRID[0], "-S", GRID[1]], repo).stdout
    names = re.findall(r"Queued experiment '([^']+)'", queued)
    status = dvc_queue(repo, stage_env(), workers=2)
    grid = {tuple(yaml.safe_load(v) for v in p) for p in itertools.product(*(g.split("=")[1].split(",") for g in GRID))}
    return {"names": names, "grid": grid, "status": status, "versions_before": versions, "client": client,
            "head": run(["git", "rev-parse", "HEAD"], repo).stdout.strip()}


def exp_rows(repo: Path, *args: str) -> list[dict]:
    import csv

    out = run(["dvc", "exp", "show", "--csv", *args], repo).stdout
    return list(csv.DictReader(io.StringIO(out)))


def test_a_grid_sweep_runs_every_experiment_through_the_queue_with_every_mlflow_run_finished(repo, sweep):
    names, client = sweep["names"], sweep["client"]
    assert len(names) == 4 and all(re.search(rf"{name}\s.*\sSuccess", sweep["status"]) for name in names)
    rows = {r["Experiment"]: r for r in exp_rows(repo) if r["Experiment"] in names}
    assert set(rows) == set(names)  # 4 of 4 in dvc exp show
    assert {(float(r["passengers.train.lr"]), int(r["passengers.model.hidden_size"])) for r in rows.values()} == sweep["grid"]
    experiment = client.get_experiment_by_name("passengers").experiment_id
    runs = [r for name in names for r in client.search_runs([experiment], f"tags.dvc_experiment = '{name}'")]
    models = yaml.safe_load((repo / "params.yaml").read_text())["runs"]["passengers"]["models"]
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


def test_dvc_artifacts_get_fetches_a_registered_model_version(repo, tmp_path):
    """DVC's model registry: a version is a git tag (`gto register`); `dvc artifacts get` and dvc.api find it."""
    import dvc.api

    run("git add -A && git -c user.name=t -c user.email=t@t commit -qm winner --allow-empty", repo)
    run(["gto", "register", "passengers-lstm", "--version", "v1.0.0"], repo)
    shown = dvc.api.artifacts_show("passengers-lstm", repo=str(repo))
    assert shown == {"rev": run(["git", "rev-parse", "HEAD"], repo).stdout.strip(), "path": "models/passengers/lstm.pt"}
    run(["dvc", "artifacts", "get", str(repo), "passengers-lstm", "-o", str(tmp_path / "lstm.pt")], tmp_path)
    assert (tmp_path / "lstm.pt").read_bytes() == (repo / "models/passengers/lstm.pt").read_bytes()
