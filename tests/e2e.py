"""What the end-to-end tests share (tests/test_pipeline.py, tests/test_scale.py): the environment and the `run` of
a stage's command, a temp copy of the project, and the three tasks of a user's own (README "Your data"), one per
kind, from real data no built-in task uses, each a file or folder of the repository that `dvc add` tracks:
monthly Australian wine sales (pmdarima), Fashion-MNIST photos as PNG folders (Debian's dataset-fashion-mnist),
three licence texts (Debian's base-files)."""
import functools
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent


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


def copy_project(dest: Path) -> None:
    """The project's files as git sees them (tracked and untracked, not ignored: no outputs) copied to `dest`."""
    files = run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], ROOT).stdout.split()
    for name in files:
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)


def commit(repo: Path, message: str) -> None:
    run(f"git add -A && git -c user.name=t -c user.email=t@t commit -qm {message} --allow-empty", repo)


OWN = {"wine": "series", "fashion": "images", "licences": "text"}  # the tasks of a user's own
FASHION = {0: "T-shirt", 1: "Trouser", 7: "Sneaker", 8: "Bag"}  # four of Fashion-MNIST's ten classes, by label
LICENCES = ("Apache-2.0", "MPL-2.0", "GPL-2")  # /usr/share/common-licenses, on every Debian
PATHS = {"wine": "data/own/wine.csv", "fashion": "data/own/fashion", "licences": "data/own/licences"}


def own_data(repo: Path, tasks=tuple(OWN), train: int = 20, test: int = 8) -> None:
    """The data of `tasks` (of OWN), written into the repository as a user would put theirs, then tracked by
    `dvc add`; `train` and `test` Fashion-MNIST photos per class (README "Your data" used 500 and 100)."""
    from PIL import Image
    from pmdarima.datasets import load_wineind

    from stages.kinds.images.prepare import read_idx

    own = repo / "data" / "own"
    own.mkdir(parents=True)
    if "wine" in tasks:
        wine = load_wineind(as_series=True)  # 176 months, Jan 1980 - Aug 1994, "Jan 1980": a format to declare
        (own / "wine.csv").write_text("month;bottles\n" + "".join(f"{m};{int(v)}\n" for m, v in wine.items()))
    if "fashion" in tasks:
        fashion = Path("/usr/share/datasets/fashion-mnist")
        for split, prefix, count in (("train", "train", train), ("test", "t10k", test)):
            images = read_idx(fashion / f"{prefix}-images-idx3-ubyte.gz")
            labels = read_idx(fashion / f"{prefix}-labels-idx1-ubyte.gz")
            for label, name in FASHION.items():
                (own / "fashion" / split / name).mkdir(parents=True)
                for i in np.flatnonzero(labels == label)[:count]:
                    Image.fromarray(images[i], mode="L").save(own / "fashion" / split / name / f"{i}.png")
    if "licences" in tasks:
        (own / "licences").mkdir()
        for name in LICENCES:
            shutil.copyfile(Path("/usr/share/common-licenses") / name, own / "licences" / name)
    run(["dvc", "add", "-q", *(PATHS[t] for t in tasks)], repo)


def own_tasks(params: dict, tasks=tuple(OWN)) -> dict:
    """params.yaml's lines for `tasks` (of OWN): a section each, copied from a built-in task of the kind."""
    import copy

    start = {"wine": ("passengers", ["lstm", "hybrid_lstm"]), "fashion": ("digits", ["cnn", "simple_cnn"]),
             "licences": ("text", ["gru"])}  # the built-in task whose section each copies, and its models
    for name in tasks:
        built_in, models = start[name]
        section = copy.deepcopy(params[built_in]) | {"models": models}
        if name == "wine":  # README "Your data": how wine.csv is read
            section["preprocess"] |= {"time": "month", "value": "bottles", "time_format": "%b %Y", "frequency": "MS",
                                      "unit": "bottles"}
            section["baseline"]["season"] = "auto"
        if name == "fashion":
            section["preprocess"]["format"] = "folder"
            section["train"]["augment"]["enabled"] = False
        if name == "licences":
            section["generate"]["prompts"] = ["the", "you may"]
        del section["download"]  # a path source downloads nothing
        params[name] = section
        params["tasks"][name] = params["runs"][name] = OWN[name]
        params["sources"]["path"][name] = PATHS[name]
    if "licences" in tasks:
        params["text_tasks"].append("licences")
    return params


def only_passengers(params: dict) -> dict:
    """params.yaml reduced to the passengers task: every other task's section and entries go."""
    for task in set(params["tasks"]) - {"passengers"}:  # a task is its section: the others go with theirs
        del params[task]
    params |= {"tasks": {"passengers": "series"}, "runs": {"passengers": "series"}, "text_tasks": [],
               "transfer_tasks": {}, "sources": {"download": {"passengers": "bundled"}, "path": {}}}
    return params


def artifacts_lines(repo: Path, tasks) -> None:
    """The one line per task DVC's format asks for in dvc.yaml's top-level artifacts: (README "Your data")."""
    lines = "".join(f"  {task}: {{type: model, path: models/{task}, labels: [{OWN[task]}], desc: {task}}}\n"
                    for task in tasks)
    (repo / "dvc.yaml").write_text((repo / "dvc.yaml").read_text().replace("\nartifacts:\n", f"\nartifacts:\n{lines}", 1))


def snapshot(repo: Path) -> dict:
    """Every output file's bytes (checkpoints, prepared data, metrics, plots) and dvc.lock."""
    files = [repo / "dvc.lock"] + [p for folder in ("data", "models", "metrics", "plots", "logs")
                                   for p in sorted((repo / folder).rglob("*")) if p.is_file()]
    return {str(p.relative_to(repo)): p.read_bytes() for p in files}


def restore(repo: Path, before: dict, params: str) -> None:
    """Put back params.yaml and every output `snapshot` found, and remove the outputs it did not."""
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


def exp_rows(repo: Path, *args: str) -> list[dict]:
    import csv

    out = run(["dvc", "exp", "show", "--csv", *args], repo).stdout
    return list(csv.DictReader(io.StringIO(out)))


def columns(path: Path) -> dict[str, list[str]]:
    import csv

    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return {k: [row[k] for row in rows] for k in rows[0]}


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
