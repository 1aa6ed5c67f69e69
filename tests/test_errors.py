"""run_stage: bad input becomes one line and exit 2; a finished stage's fast exit keeps its output."""
import os
import subprocess
import sys

import pytest

from stages.config import ROOT


@pytest.mark.parametrize("body, argv, code, stream, text", [
    ("print('written', end='')", ["a"], 0, "stdout", "written"),  # the fast exit must not drop buffered output
    ("raise PipelineError('data/x.csv: file not found')", ["a"], 2, "stderr", "error: data/x.csv: file not found\n"),
    ("print('ran')", [], 2, "stderr", "usage: python -m stages.x <task>\n"),
    ("print('ran')", ["a", "b"], 2, "stderr", "usage: python -m stages.x <task>\n"),
])
def test_run_stage_exit_codes_and_output(body, argv, code, stream, text):
    script = (f"from stages.errors import PipelineError, run_stage\ndef main(argv):\n    {body}\n"
              f"run_stage(main, 'python -m stages.x <task>', {argv!r})\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # buffered, as under `dvc repro`
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == code
    assert getattr(done, stream) == text
