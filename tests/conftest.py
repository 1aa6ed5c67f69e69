"""Shared test set-up: telemetry off, a local MLflow store, and a file server on 127.0.0.1 for the download tests
(no test needs the internet)."""
import functools
import os
import re
import subprocess
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest

import stages  # noqa: F401 - first: pins the CPU kernels before any test loads numpy (stages/core/kernels.py)

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# Under pytest-xdist (README: `python -m pytest -n auto`) each worker, and every stage it starts, gets its share of
# the cores: two torch processes of 2 threads each on 2 cores oversubscribe them (an epoch of 1 s took 80 s).
if (WORKERS := int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))) > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, cores() // WORKERS)))

# The slowest modules first. xdist (pytest.ini: --dist loadscope) gives a worker a whole module, the next one in
# collection order when it is almost done with its last: so test_pipeline.py's worker is not also handed
# test_team.py, and the short modules fill in at the end.
SLOWEST = ("test_pipeline.py", "test_scale.py", "test_team.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(SLOWEST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(SLOWEST)))  # stable: the rest keep their order


def pytest_xdist_auto_num_workers(config):
    """`-n auto`: one worker per core, at most 4. The three slow modules and the stream of short ones keep 4 busy;
    more cannot shorten the run, which test_pipeline.py's worker bounds."""
    return max(1, min(cores(), 4))


class FileServer:
    """Serves the files under `root` on 127.0.0.1 and records every requested path; a context manager."""

    def __init__(self, root):
        requests = self.requests = []

        class Handler(SimpleHTTPRequestHandler):
            def do_GET(self):
                requests.append(self.path)
                super().do_GET()

            def log_message(self, *args):  # keep pytest output clean
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
        # A short poll interval keeps shutdown, and so each test's teardown, fast.
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.01,), daemon=True)

    def url(self, name):
        return f"http://127.0.0.1:{self._httpd.server_port}/{name}"

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture
def local_store(tmp_path, monkeypatch):
    """A local MLflow store (sqlite) anchored at tmp_path, as $DVC_ROOT anchors the pipeline's; no team server."""
    import mlflow

    from stages.infra import store

    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.setattr(store, "TEAM_SERVER", None)
    yield tmp_path
    mlflow.set_tracking_uri(None)


@pytest.fixture(scope="session")
def file_server():
    """FileServer itself: `with file_server(folder) as server: server.url(name)`."""
    return FileServer


def run_queue(repo, env: dict, workers: int = 2, deadline_s: float = 900, logs=()) -> str:
    """`dvc queue start -j <workers>` in `repo`, then `dvc queue status` until nothing is queued or running; returns
    the last status. DVC's launcher leaves the caller's stdout open in a process that waits for its worker, so a
    captured `dvc queue start` returns only when the whole queue is done: its output goes nowhere. Each worker gets
    cores / workers threads, as the README's recipe says (more oversubscribe the cores). On the deadline the workers
    are killed and the failure carries the status, the tasks' and workers' logs and the tails of `logs` (servers')."""
    env = env | {"OMP_NUM_THREADS": str(max(1, cores() // workers))}

    def start() -> float:
        subprocess.run(["dvc", "queue", "start", "-j", str(workers)], cwd=repo, env=env, check=True,
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return time.monotonic()

    def status() -> str:
        return subprocess.run(["dvc", "queue", "status"], cwd=repo, env=env, capture_output=True, text=True).stdout

    started = start()
    deadline = started + deadline_s
    while any(word in (last := status()) for word in ("Queued", "Running")):
        if "Running" not in last and "0 active, 0 idle" in last and time.monotonic() - started > 20:
            # DVC's workers sometimes exit with tasks still queued (iterative/dvc#10562); its answer is a new start
            # (the 20 s leave new workers time to register)
            print("\n[queue] the workers exited with tasks queued: dvc queue start again")
            started = start()
        if time.monotonic() > deadline:
            workers_logs = "".join(f"--- {log}\n{log.read_text(errors='replace')[-2000:]}\n"
                                   for log in [*sorted((repo / ".dvc/tmp/exps/celery").glob("*.out")), *logs])
            tasks_logs = "".join(f"--- dvc queue logs {task}\n{out.stdout[-2000:]}\n"
                                 for task in re.findall(r"^(\w+)\s.*\bRunning\b", last, re.M)
                                 if (out := subprocess.run(["dvc", "queue", "logs", task], cwd=repo, env=env,
                                                           capture_output=True, text=True)))
            subprocess.run(["dvc", "queue", "stop", "--kill"], cwd=repo, env=env, capture_output=True)
            raise AssertionError(f"the queue was not done after {deadline_s:.0f} s:\n{last}\n{tasks_logs}{workers_logs}")
        time.sleep(3)
    return last


@pytest.fixture(scope="session")
def dvc_queue():
    """run_queue itself: `dvc_queue(repo, env)` runs what is queued on 2 workers and returns `dvc queue status`."""
    return run_queue
