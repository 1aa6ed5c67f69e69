"""The one exception type a stage raises for bad input, and the wrapper that turns it into one line."""
import os
import sys


class PipelineError(Exception):
    """Bad input (file, param or data): the message names the file or param and says what is wrong."""


def one_line(err: object) -> str:
    """An exception's message on one line (or its type's name when it has none), for `error: ...` messages."""
    return " ".join(str(err).split()) or type(err).__name__


def run_stage(main, usage: str, argv=None):
    """Run a stage's main(); a wrong number of arguments (against `usage`, e.g. "python -m stages.train <task>
    <model>") or a PipelineError becomes one line on stderr and exit code 2.

    A finished stage leaves with os._exit: the interpreter's own teardown of torch and MLflow (thousands of
    modules) costs seconds per stage after every output is already written (docs/speed.md).
    Nothing is lost by skipping it: outputs are renamed into place by atomic_path, MLflow runs are closed by
    their `with` blocks, and the streams are flushed here.
    """
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != len(usage.split()) - 3:  # the words after "python -m stages.<name>"
        print(f"usage: {usage}", file=sys.stderr)
        sys.exit(2)
    try:
        main(argv)
    except PipelineError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
