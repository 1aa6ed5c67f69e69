"""End to end: the real `dvc repro` on tiny settings in a temp copy of the repo, with a real MLflow store.

Also runs the flowers task through its online path, against a tiny ImageFolder archive served from 127.0.0.1, and
three tasks of a user's own (README "Your data"), one per kind, from real data no built-in task uses, each a file
or folder of the repository that `dvc add` tracks: monthly Australian wine sales (pmdarima), Fashion-MNIST photos
as PNG folders (Debian's dataset-fashion-mnist), three licence texts (Debian's base-files).
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

from stages.infra.files import content_sha256

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
    """A tiny flower_photos.tgz in the official layout: 5 class folders of small JPEGs, and a file that is no image."""
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
        info = tarfile.TarInfo("flower_photos/roses/LICENSE.txt")  # not an image: skipped, and named
        info.size = 5
        tar.addfile(info, io.BytesIO(b"CC-BY"))
    path = folder / "flower_photos.tgz"
    path.write_bytes(buffer.getvalue())
    return path


@pytest.fixture(scope="module")
def served(tmp_path_factory, file_server):
    folder = tmp_path_factory.mktemp("served")
    archive = flower_archive(folder)
    with file_server(folder) as server:
        yield server.url(archive.name), hashlib.sha256(archive.read_bytes()).hexdigest()


OWN = {"wine": "series", "fashion": "images", "licences": "text"}  # the tasks of a user's own
FASHION = {0: "T-shirt", 1: "Trouser", 7: "Sneaker", 8: "Bag"}  # four of Fashion-MNIST's ten classes, by label
LICENCES = ("Apache-2.0", "MPL-2.0", "GPL-2")  # /usr/share/common-licenses, on every Debian


def own_data(repo: Path) -> None:
    """The three tasks' data, written into the repository as a user would put theirs, then tracked by `dvc add`."""
    from PIL import Image
    from pmdarima.datasets import load_wineind

    from stages.kinds.images.prepare import read_idx

    own = repo / "data" / "own"
    own.mkdir(parents=True)
    wine = load_wineind(as_series=True)  # 176 months, Jan 1980 - Aug 1994, "Jan 1980": a format to declare
    (own / "wine.csv").write_text("month;bottles\n" + "".join(f"{m};{int(v)}\n" for m, v in wine.items()))
    fashion = Path("/usr/share/datasets/fashion-mnist")
    for split, prefix, count in (("train", "train", 20), ("test", "t10k", 8)):
        images = read_idx(fashion / f"{prefix}-images-idx3-ubyte.gz")
        labels = read_idx(fashion / f"{prefix}-labels-idx1-ubyte.gz")
        for label, name in FASHION.items():
            (own / "fashion" / split / name).mkdir(parents=True)
            for i in np.flatnonzero(labels == label)[:count]:
                Image.fromarray(images[i], mode="L").save(own / "fashion" / split / name / f"{i}.png")
    (own / "licences").mkdir()
    for name in LICENCES:
        shutil.copyfile(Path("/usr/share/common-licenses") / name, own / "licences" / name)
    run(["dvc", "add", "-q", "data/own/wine.csv", "data/own/fashion", "data/own/licences"], repo)


def own_tasks(params: dict) -> dict:
    """params.yaml's lines for the three tasks: a section each, copied from a built-in task of the kind."""
    import copy

    sections = {
        "wine": copy.deepcopy(params["passengers"]) | {"models": ["lstm", "hybrid_lstm"]},
        "fashion": copy.deepcopy(params["digits"]) | {"models": ["cnn", "simple_cnn"]},
        "licences": copy.deepcopy(params["text"]) | {"models": ["gru"]},
    }
    sections["wine"]["preprocess"] |= {"time": "month", "value": "bottles", "time_format": "%b %Y", "frequency": "MS",
                                       "unit": "bottles"}
    sections["wine"]["baseline"]["season"] = "auto"
    sections["fashion"]["preprocess"] |= {"format": "folder"}
    sections["fashion"]["train"]["augment"]["enabled"] = False
    sections["licences"]["generate"]["prompts"] = ["the", "you may"]
    for name, section in sections.items():
        del section["download"]  # a path source downloads nothing
        params[name] = section
    params["tasks"] |= {"wine": "series", "fashion": "images", "licences": "text"}
    params["runs"] |= {"wine": "series", "fashion": "images", "licences": "text"}
    params["text_tasks"].append("licences")
    params["sources"]["path"] = {"wine": "data/own/wine.csv", "fashion": "data/own/fashion",
                                 "licences": "data/own/licences"}
    return params


def flowers(params: dict, url: str, sha256: str) -> dict:
    """The flowers section params.yaml keeps commented out (it needs a network), served from 127.0.0.1."""
    import copy

    params["flowers"] = copy.deepcopy(params["digits"]) | {"models": ["flower_cnn", "small_cnn"]}
    params["flowers"]["download"] = {"bundled": "none", "url": url, "checksum": f"sha256:{sha256}"}
    params["flowers"]["preprocess"] |= {"format": "folder", "image_size": 32}
    params["tasks"]["flowers"] = params["runs"]["flowers"] = "images"
    params["sources"]["download"]["flowers"] = "url"
    return params


def tiny_params(params: dict, flowers_url: str, flowers_sha256: str) -> dict:
    """Two epochs; three seeds for passengers alone (its seed spread is tested), one elsewhere; temperature's
    hybrids off (passengers and wine keep the hybrid path; the 8,760-hour SARIMA is baseline's to fit)."""
    params = own_tasks(flowers(params, flowers_url, flowers_sha256))
    for task in params["runs"]:
        params[task]["train"] |= {"epochs": 2, "patience": 1} | (
            {"seeds": 1} if "seeds" in params[task]["train"] and task != "passengers" else {})
    params["temperature"]["models"] = ["rnn", "lstm", "gru"]
    for phase in ("scratch", "extract", "finetune"):
        params["transfer"][phase] |= {"epochs": 2, "patience": 1}
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
    run("git init -q", repo)
    own_data(repo)
    lines = "".join(f"  {task}: {{type: model, path: models/{task}, labels: [{kind}], desc: {task}}}\n"
                    for task, kind in OWN.items())  # the one line per task DVC's format asks for (README "Your data")
    (repo / "dvc.yaml").write_text((repo / "dvc.yaml").read_text().replace("\nartifacts:\n", f"\nartifacts:\n{lines}", 1))
    run("git add -A && git -c user.name=t -c user.email=t@t commit -qm tiny", repo)
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
    """How many interactive plots dvc.yaml declares: each plot stage's two (its task's curves and test split), and
    the top-level `plots:` entries with fields (the rest are PNG folders)."""
    from dvc.repo import Repo

    with Repo(str(repo)) as dvc:
        staged = sum(1 for s in dvc.index.stages for o in s.outs if o.plot and o.def_path.endswith(".csv"))
    return staged + sum(isinstance(p, dict) for p in yaml.safe_load((repo / "dvc.yaml").read_text())["plots"])


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
    assert stale_stages(repo, "transfer.finetune.unfreeze_blocks=2") == {"finetune@transfer", "evaluate@transfer",
                                                                          "plot@transfer", "log@transfer"}


# What a one-line edit of each module re-runs (docs/pipeline.md: "What re-runs after an edit"), by its role:
# module paths relative to stages/, without .py.
FIGURES = {"core/figures", "kinds/series/figures", "kinds/images/figures", "kinds/text/figures"}
LOOP = {"core/training", "core/inference", "core/models"}
METRICS = {"kinds/series/metrics", "kinds/images/metrics", "kinds/text/metrics"}  # re-score, retrain nothing
READERS = {"kinds/series/prepare", "kinds/images/prepare", "kinds/text/prepare"}


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
    kind = {}  # stage -> the kind of its task
    for s in stages:
        name = s.addressing.rsplit(":", 1)[-1]  # `<path to dvc.yaml>:<stage>` when run from another directory
        group, _, task = name.partition("@")
        kind[name] = params["tasks"].get(task)
    # every module under core/ and kinds/<kind>/ (the plumbing, infra/ and __init__.py, is declared by none)
    shared = sorted(p.relative_to(repo / "stages").with_suffix("").as_posix()
                    for folder in ("core", "kinds") for p in (repo / "stages" / folder).rglob("*.py")
                    if p.name != "__init__.py")
    assert len(shared) >= 25, shared
    shares = {}
    for module in shared:
        running = stages_running(repo, module)
        assert running, f"no stage declares stages/{module}.py"
        shares[module] = len(running) / len(stages)
        groups = {a.partition("@")[0] for a in running}
        if module in FIGURES:
            assert groups == {"plot"}, (module, running)
        if module in READERS:
            assert groups == {"preprocess"}, (module, running)
        if module.startswith("kinds/"):
            assert {kind[a] for a in running} - {None} == {module.split("/")[1]}, (module, running)  # None: check
        if module in LOOP:
            assert not groups & {"check", "download", "preprocess", "baseline", "plot", "log"}, (module, running)
        if module in METRICS:
            assert not groups & {"train", "scratch", "extract", "finetune"}, (module, running)
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
    trained = yaml.safe_load((clone / "params.yaml").read_text())["passengers"]["models"]
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


def test_flowers_reports_the_file_that_is_not_an_image_and_skips_it(repo):
    meta = json.loads((repo / "data/prepared/flowers/meta.json").read_text())
    assert meta["skipped"] == ["roses/LICENSE.txt"]
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
    good = raw.read_bytes()  # bytes: the CSV's \r\n line ends must come back as they were, or download re-runs
    for bad, message in ((good.replace(b",112", b",nan", 1), "1 empty or NaN values in column 'Passengers'"),
                         (good.replace(b"1955-04", b"1955-4x", 1), "time_format '%Y-%m' does not read column 'Month'")):
        raw.write_bytes(bad)
        try:
            done = run([sys.executable, "-m", "stages.preprocess", "passengers"], repo, check=False)
        finally:
            raw.write_bytes(good)
        assert done.returncode == 2
        assert done.stderr.strip().count("\n") == 0 and message in done.stderr, done.stderr
    assert not list((repo / "data/prepared").rglob(".*.tmp"))


def test_a_task_of_your_own_of_each_kind_is_trained_beside_its_baselines_logged_and_registered(repo):
    """The three tasks declared in params.yaml alone, their data files of the repository: each is read as
    declared, split, scored beside the kind's classical baselines, logged to MLflow with test metrics, and its
    model chosen on validation registered as its champion (the registry test covers every task's alias)."""
    import mlflow

    meta = {t: json.loads((repo / f"data/prepared/{t}/meta.json").read_text()) for t in OWN}
    assert meta["wine"]["unit"] == "bottles" and meta["wine"]["sizes"]["train"] > 60
    assert meta["fashion"]["classes"] == sorted(FASHION.values()) and meta["fashion"]["shape"]["in_channels"] == 1
    assert meta["fashion"]["sizes"]["test"] == 4 * 8  # its own test/ folder is the test split
    assert meta["licences"]["documents"] == len(LICENCES)
    times = columns(repo / "plots/wine/baselines/predictions.csv")["time"]
    assert times[-1] == "1994-08"  # months read with the declared '%b %Y', written as ISO months
    expected = {"wine": {"sarima", "ets", "seasonal_naive", "naive", "linear_ar", "sarima_ets_mean"},
                "fashion": {"majority", "logistic_pixels"}, "licences": {"unigram", "bigram", "kn"}}
    client = mlflow.MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    for task in OWN:
        assert expected[task] <= set(json.loads((repo / f"metrics/{task}/baselines.json").read_text())), task
        summary = json.loads((repo / f"metrics/summary/{task}.json").read_text())[task]
        models = yaml.safe_load((repo / "params.yaml").read_text())[task]["models"]
        assert summary["chosen"]["model"].removesuffix("+kn") in models
        runs = client.search_runs([client.get_experiment_by_name(task).experiment_id])
        assert sorted(r.data.tags["model"] for r in runs) == sorted(models)
        assert all(any(k.startswith("test_") for k in r.data.metrics) for r in runs), task
        assert client.get_model_version_by_alias(task, "champion").tags["model"] in models
        assert (repo / f"plots/compare/{task}/curves.csv").is_file() and (repo / f"plots/compare/{task}/test.csv").is_file()
    assert (repo / "plots/licences/samples.md").is_file()  # generate and interpolate ran for the new text task too


def test_editing_one_tasks_file_or_params_reruns_that_task_only(repo):
    wine = repo / "data/own/wine.csv"
    good = wine.read_text()
    wine.write_text(good.replace(";15136\n", ";15137\n", 1))
    try:
        out = run(["dvc", "repro", "--dry", "--force-downstream"], repo).stdout
    finally:
        wine.write_text(good)
    assert set(re.findall(r"Running stage '([^']+)'", out)) == {f"{s}@wine" for s in (
        "copy", "preprocess", "baseline", "train", "evaluate", "plot", "log")}
    assert stale_stages(repo, "wine.models=[lstm]") == {f"{s}@wine" for s in ("train", "evaluate", "plot", "log")}
    assert stale_stages(repo, "passengers.models=[rnn,gru]") == {
        f"{s}@passengers" for s in ("train", "evaluate", "plot", "log")}
    assert stale_stages(repo, "licences.generate.n_words=3") == {"generate@licences", "plot@licences", "log@licences"}


def drop_classes(folder: Path) -> None:
    for split in ("train", "test"):
        for name in ("Bag", "Sneaker", "Trouser"):
            shutil.rmtree(folder / split / name)


def leave_one(folder: Path) -> None:
    for png in sorted((folder / "train" / "Bag").glob("*.png"))[1:]:
        png.unlink()


def swap_two_months(path: Path) -> None:
    lines = path.read_text().splitlines(keepends=True)
    lines[5], lines[6] = lines[6], lines[5]
    path.write_text("".join(lines))


BAD = [  # (params assignments, or a change to a task's own data; what the one line says)
    (["tasks.wine=graphs"], None, "tasks.wine must be series, images or text"),
    (["sources.path.wine=data/own/sales.csv"], None, "copy@wine': [Errno 2] No such file or directory"),  # DVC's line
    (["wine.models=[tcn]"], None, "wine.models: unknown model 'tcn' for a series task"),
    (["wine.preprocess.frequency=5min"], None, "wine.baseline.season auto: preprocess.frequency '5min' has no standard season"),
    (["passengers.download.bundled=airpasengers"], None, "passengers.download.bundled: 'airpasengers' is not a data set"),
    (["digits.download.bundled=airpassengers"], None, "airpassengers is series data, and digits is an images task"),
    (["text_tasks=[text]"], None, "text_tasks must list the text tasks of runs"),
    (["wine.preprocess.value=litres"], None, "wine.preprocess.value: no column 'litres' in data/raw/wine/wine.csv "
                                             "(its columns: month, bottles)"),
    (["wine.preprocess.time_format='%Y-%m'"], None, "wine.preprocess.time_format '%Y-%m' does not read column 'month'"),
    ([], ("data/own/wine.csv", swap_two_months), "column 'month' is not in increasing time order without repeats"),
    ([], ("data/own/fashion", drop_classes), "one class only (T-shirt): a classifier needs two or more"),
    ([], ("data/own/fashion", leave_one), "class 'Bag' has 1 image(s), too few for the splits"),
    ([], ("data/own/fashion", lambda f: (f / "train/Bag/broken.png").write_bytes(b"\x89PNG cut")),
     "train/Bag/broken.png: not a readable image"),
    ([], ("data/own/licences", lambda f: (f / "latin-1.txt").write_bytes("caf\xe9 au lait\n".encode("latin-1"))),
     "latin-1.txt: not valid UTF-8 text"),
]


@pytest.mark.parametrize("assignments, data, message", BAD, ids=[b[2][:40] for b in BAD])
def test_a_wrong_declaration_or_bad_data_is_one_line_and_loses_no_output(repo, assignments, data, message):
    """14 kinds of mistake in a task of one's own: `dvc repro` stops with one line naming the key or file, exit
    != 0, and no output of any stage (prepared data, checkpoints, metrics, plots, logs) changes; after the mistake
    is undone (`dvc checkout` of the data), `dvc repro` puts dvc.lock back as it was."""
    before, params = snapshot(repo), (repo / "params.yaml").read_text()
    if assignments:
        edited = yaml.safe_load(params)
        for assignment in assignments:
            key, value = assignment.split("=")
            *parents, leaf = key.split(".")
            functools.reduce(lambda d, k: d[k], parents, edited)[leaf] = yaml.safe_load(value)
        (repo / "params.yaml").write_text(yaml.safe_dump(edited, allow_unicode=True, sort_keys=False))
    else:
        data[1](repo / data[0])
    try:
        done = run(["dvc", "repro"], repo, check=False)
    finally:
        (repo / "params.yaml").write_text(params)
        if data:  # dvc repro saved the changed data in its .dvc file, as it does for a data source: undo both
            run(["git", "checkout", "--", f"{data[0]}.dvc"], repo)
            run(["dvc", "checkout", "-f", "-q", f"{data[0]}.dvc"], repo)
    said = done.stdout + done.stderr
    assert done.returncode != 0 and message in said, said[-2000:]
    assert "Traceback" not in said
    errors = [line for line in said.splitlines() if line.startswith("error: ")]  # ours; DVC's own say ERROR:
    assert len(errors) == 1 and message in errors[0] if errors else message in said, errors
    after = snapshot(repo)
    assert {k: v for k, v in after.items() if not k.startswith(("data/raw/", "dvc.lock"))} == {
        k: v for k, v in before.items() if not k.startswith(("data/raw/", "dvc.lock"))}
    run(["dvc", "repro"], repo)  # copy@<task> takes the restored data again; nothing else runs
    assert snapshot(repo) == before


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
    models = yaml.safe_load((repo / "params.yaml").read_text())["passengers"]["models"]
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


def test_dvc_artifacts_get_fetches_a_registered_model_version(repo, tmp_path):
    """DVC's model registry: a version is a git tag (`gto register`); `dvc artifacts get` and dvc.api find it."""
    import dvc.api

    run("git add -A && git -c user.name=t -c user.email=t@t commit -qm winner --allow-empty", repo)
    run(["gto", "register", "passengers", "--version", "v1.0.0"], repo)
    shown = dvc.api.artifacts_show("passengers", repo=str(repo))
    assert shown == {"rev": run(["git", "rev-parse", "HEAD"], repo).stdout.strip(), "path": "models/passengers"}
    run(["dvc", "artifacts", "get", str(repo), "passengers", "-o", str(tmp_path / "passengers")], tmp_path)
    assert (tmp_path / "passengers/lstm.pt").read_bytes() == (repo / "models/passengers/lstm.pt").read_bytes()
    run(["gto", "register", "wine", "--version", "v1.0.0"], repo)  # a task of your own: its line in artifacts:
    run(["dvc", "artifacts", "get", str(repo), "wine", "-o", str(tmp_path / "wine")], tmp_path)
    assert sorted(p.name for p in (tmp_path / "wine").glob("*.pt")) == ["hybrid_lstm.pt", "lstm.pt"]


# Scale-out (README "Scale out"): data-parallel training through torch's elastic launcher, two "nodes" on
# 127.0.0.1, a rank that dies, and two tasks' train stages at once under DVC's own locks. Each test puts the
# workspace back as it found it (restore), so the tests after it see the plain repro's outputs.
def restore(repo: Path, before: dict, params: str) -> None:
    (repo / "params.yaml").write_text(params)
    for name in set(snapshot(repo)) - set(before):
        (repo / name).unlink()
    for name, data in before.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_bytes(data)


def set_params(repo: Path, **values) -> None:
    """Edit params.yaml: set_params(repo, **{"scale.nnodes": 2})."""
    params = yaml.safe_load((repo / "params.yaml").read_text())
    for key, value in values.items():
        *parents, leaf = key.split(".")
        functools.reduce(lambda d, k: d[k], parents, params)[leaf] = value
    (repo / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True, sort_keys=False))


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
    tasks = ("wine", "fashion")
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
