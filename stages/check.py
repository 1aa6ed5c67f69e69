"""Stage check: the whole params.yaml, before any other stage runs.

It also refuses what can be judged before any data is read (a device the machine lacks, windows longer than a
bundled series' training part), so that DVC deletes no output for a run that could not succeed. Each stage reads
only its own keys, so without this an unknown key would go unnoticed: `dvc exp run -S
+train.lr=0.01` adds a top-level `train:` that no stage declares, and the experiment would run nothing. Every
download depends on this stage's output, whose content never changes, so a valid edit re-runs nothing else.
Usage: python -m stages.check
"""
from stages import paths
from stages.config import load_params
from stages.errors import PipelineError, run_stage
from stages.files import atomic_path
from stages.series import split_fits

# Steps of the bundled series (stages/download.py writes them; preprocess checks their digest), so that a window
# longer than the training part is refused here, before DVC deletes the outputs of the stages it would re-run.
BUNDLED_STEPS = {"passengers": 144, "temperature": 8760}


def check_device(name: str) -> None:
    """A device the machine lacks stops the run here, not in a train stage whose outputs DVC already deleted."""
    if name in ("cuda", "mps"):
        import torch  # only then: the check stage otherwise starts in a fraction of a second

        found = torch.cuda.is_available() if name == "cuda" else torch.backends.mps.is_available()
        if not found:
            raise PipelineError(f"params.yaml: device is {name} but this machine has no {name.upper()} device (use auto)")


def main(argv: list[str]) -> None:
    params = load_params()
    check_device(params.device)
    for task, steps in BUNDLED_STEPS.items():
        if params.task(task).download.source == "bundled":
            split_fits(steps, params.task(task).preprocess, task)
    with atomic_path(paths.params_checked()) as tmp:
        tmp.write_text("params.yaml is valid\n")
    print(f"params.yaml: valid ({len(params.tasks)} tasks, {len(params.runs)} runs)")


if __name__ == "__main__":
    run_stage(main, "python -m stages.check")
