"""Shared test set-up: telemetry off, a local MLflow store, and a file server on 127.0.0.1 for the download tests
(no test needs the internet)."""
import functools
import os
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


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

    from stages import store

    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.setattr(store, "TEAM_SERVER", None)
    yield tmp_path
    mlflow.set_tracking_uri(None)


@pytest.fixture(scope="session")
def file_server():
    """FileServer itself: `with file_server(folder) as server: server.url(name)`."""
    return FileServer
