"""run_stage: bad input becomes one line and exit 2; a finished stage's fast exit keeps its output."""
import os
import subprocess
import sys

import pytest

from stages.infra.config import ROOT
from stages.infra.errors import PipelineError
from stages.infra.files import load_arrays, load_checkpoint


@pytest.mark.parametrize("body, argv, code, stream, text", [
    ("print('written', end='')", ["a"], 0, "stdout", "written"),  # the fast exit must not drop buffered output
    ("raise PipelineError('data/x.csv: file not found')", ["a"], 2, "stderr", "error: data/x.csv: file not found\n"),
    ("print('ran')", [], 2, "stderr", "usage: python -m stages.x <task>\n"),
    ("print('ran')", ["a", "b"], 2, "stderr", "usage: python -m stages.x <task>\n"),
])
def test_run_stage_exit_codes_and_output(body, argv, code, stream, text):
    script = (f"from stages.infra.errors import PipelineError, run_stage\ndef main(argv):\n    {body}\n"
              f"run_stage(main, 'python -m stages.x <task>', {argv!r})\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # buffered, as under `dvc repro`
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == code
    assert getattr(done, stream) == text


def test_corrupt_checkpoint_and_arrays_do_not_advise_unsafe_loading(tmp_path):
    (tmp_path / "m.pt").write_bytes(b"garbage")
    (tmp_path / "d.npz").write_bytes(b"garbage")
    for load, name in ((load_checkpoint, "m.pt"), (load_arrays, "d.npz")):
        with pytest.raises(PipelineError) as caught:
            load(tmp_path / name)
        message = str(caught.value)
        assert message.startswith(f"{tmp_path / name}: corrupt") and "weights_only" not in message
        assert "allow_pickle" not in message


@pytest.mark.parametrize("argv, message", [
    (["generate", "passengers"], "error: generate continues text; passengers is a series task\n"),
    (["interpolate", "temperature"], "error: interpolate mixes language models; temperature is a series task\n"),
    (["evaluate", "foo"], "error: unknown task 'foo' (tasks: passengers, temperature, digits, transfer, text)\n"),
])
def test_stage_called_with_the_wrong_task_says_so_in_one_line(argv, message, tmp_path):
    env = os.environ | {"DVC_ROOT": str(tmp_path), "MLFLOW_DISABLE_TELEMETRY": "true"}
    env.pop("MLFLOW_TRACKING_URI", None)
    done = subprocess.run([sys.executable, "-m", f"stages.{argv[0]}", *argv[1:]], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr == message
