"""Stage check: the whole params.yaml, before any other stage runs.

Each stage reads only its own keys, so without this an unknown key would go unnoticed: `dvc exp run -S
+train.lr=0.01` adds a top-level `train:` that no stage declares, and the experiment would run nothing. Every
download depends on this stage's output, whose content never changes, so a valid edit re-runs nothing else.
Usage: python -m stages.check
"""
from stages import paths
from stages.config import load_params
from stages.errors import run_stage
from stages.files import atomic_path


def main(argv: list[str]) -> None:
    params = load_params()
    with atomic_path(paths.params_checked()) as tmp:
        tmp.write_text("params.yaml is valid\n")
    print(f"params.yaml: valid ({len(params.tasks)} tasks, {len(params.runs)} runs)")


if __name__ == "__main__":
    run_stage(main, "python -m stages.check")
