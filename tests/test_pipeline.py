"""End to end: the real `dvc repro` on tiny settings in a temp copy of the repo, with a real MLflow store.

Also runs the flowers task through its online path, against a tiny ImageFolder archive served from 127.0.0.1, and
the three tasks of a user's own of tests/e2e.py (README "Your data"). Experiments (sweeps, scale-out) run in
tests/test_scale.py's smaller copy.
"""
import functools
import hashlib
import io
import json
import math
import re
import shutil
import sys
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from stages.infra.files import content_sha256
from tests.e2e import (
    FASHION,
    LICENCES,
    OWN,
    artifacts_lines,
    columns,
    commit,
    copy_project,
    histories_before_test,
    own_data,
    own_tasks,
    run,
    serve_and_ask,
    snapshot,
)

pytestmark = pytest.mark.e2e


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
    copy_project(repo)
    params = tiny_params(yaml.safe_load((repo / "params.yaml").read_text()), *served)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True, sort_keys=False))
    run("git init -q", repo)
    own_data(repo)
    artifacts_lines(repo, OWN)
    commit(repo, "tiny")
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


def test_the_served_forecaster_answers_in_thousands_of_passengers_as_the_pipeline_does(repo):
    """`mlflow models serve` on 127.0.0.1, asked over HTTP with real monthly counts: its forecasts are the ones
    evaluate wrote for the test months."""
    run_id = training_runs(repo)[("passengers", "lstm")].info.run_id
    served = serve_and_ask(repo, f"runs:/{run_id}/model", histories_before_test(repo))
    # passengers.train.ensemble: the served model is the mean of the seeds, as the headline
    expected = np.array(columns(repo / "plots/passengers/predictions/lstm.csv")["ensemble"], dtype=float)
    assert served.shape == expected.shape and np.allclose(served, expected, rtol=1e-6)
    assert 250 < expected.mean() < 650  # thousands of passengers a month in 1958-1960, not a scaled difference


def test_training_runs_last_as_long_as_training(repo):
    """The log stage adds test metrics and figures to the finished run; it does not reopen it."""
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    for (task, model), logged in training_runs(repo).items():
        if task not in ("passengers", "digits", "transfer"):
            continue
        info = client.get_run(logged.info.run_id).info
        assert info.status == "FINISHED" and (info.end_time - info.start_time) / 1000 < 90, (task, model)
        test_metric = next(k for k in logged.data.metrics if k.startswith("test_"))
        assert client.get_metric_history(logged.info.run_id, test_metric)[0].timestamp >= info.end_time, (task, model)
        assert any(a.path.startswith("figures") for a in client.list_artifacts(logged.info.run_id)), (task, model)


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


def test_dvc_artifacts_get_fetches_a_registered_model_version(repo, tmp_path):
    """DVC's model registry: a version is a git tag (`gto register`); `dvc artifacts get` and dvc.api find it."""
    import dvc.api

    commit(repo, "winner")
    run(["gto", "register", "passengers", "--version", "v1.0.0"], repo)
    shown = dvc.api.artifacts_show("passengers", repo=str(repo))
    assert shown == {"rev": run(["git", "rev-parse", "HEAD"], repo).stdout.strip(), "path": "models/passengers"}
    run(["dvc", "artifacts", "get", str(repo), "passengers", "-o", str(tmp_path / "passengers")], tmp_path)
    assert (tmp_path / "passengers/lstm.pt").read_bytes() == (repo / "models/passengers/lstm.pt").read_bytes()
    run(["gto", "register", "wine", "--version", "v1.0.0"], repo)  # a task of your own: its line in artifacts:
    run(["dvc", "artifacts", "get", str(repo), "wine", "-o", str(tmp_path / "wine")], tmp_path)
    assert sorted(p.name for p in (tmp_path / "wine").glob("*.pt")) == ["hybrid_lstm.pt", "lstm.pt"]


