"""Stage check: the whole params.yaml, before any other stage runs.

It also refuses what can be judged before any data is read (a device the machine lacks, windows longer than a
bundled series' training part, a bundled data set that does not exist), so that DVC deletes no output for a run
that could not succeed. Each stage reads
only its own keys, so without this an unknown key would go unnoticed: `dvc exp run -S
+train.lr=0.01` adds a top-level `train:` that no stage declares, and the experiment would run nothing. Every
download depends on this stage's output, whose content never changes, so a valid edit re-runs nothing else.
Usage: python -m stages.check
"""
from stages.core.sources import BUNDLED
from stages.infra import paths
from stages.infra.config import ROOT, load_params
from stages.infra.errors import PipelineError, run_stage
from stages.infra.files import atomic_path
from stages.kinds.series.data import split_fits


def check_device(name: str) -> None:
    """A device the machine lacks stops the run here, not in a train stage whose outputs DVC already deleted."""
    if name in ("cuda", "mps"):
        import torch  # only then: the check stage otherwise starts in a fraction of a second

        found = torch.cuda.is_available() if name == "cuda" else torch.backends.mps.is_available()
        if not found:
            raise PipelineError(f"params.yaml: device is {name} but this machine has no {name.upper()} device (use auto)")


def check_source(params, task: str) -> None:
    """What the declaration alone can say of a task's data: a bundled data set that exists, of the task's kind and
    read as the task says; windows that fit in a bundled series' training part; a path that exists (a warning)."""
    cfg = params.task(task)
    if params.sources.download.get(task) == "bundled":
        bundled = BUNDLED.get(cfg.download.bundled)
        if bundled is None:
            raise PipelineError(f"params.yaml: {task}.download.bundled: {cfg.download.bundled!r} is not a data set that "
                                f"ships in a package (known: {', '.join(BUNDLED)})")
        if bundled.kind != cfg.kind:
            raise PipelineError(f"params.yaml: {task}.download.bundled: {cfg.download.bundled} is {bundled.kind} data, "
                                f"and {task} is {'an' if cfg.kind[0] in 'aeiou' else 'a'} {cfg.kind} task")
        if cfg.kind == "images" and cfg.preprocess.format != bundled.reads_as:
            raise PipelineError(f"params.yaml: {task}.preprocess.format must be {bundled.reads_as} for the bundled "
                                f"{cfg.download.bundled}, got {cfg.preprocess.format}")
        if cfg.kind == "series":
            split_fits(bundled.steps, cfg.preprocess, task)
    elif task in params.sources.path and not (ROOT / params.sources.path[task]).exists():
        # a warning, not a refusal: a fresh clone's `dvc repro log@<other task>` need not pull this task's data,
        # and DVC itself stops copy@<task> on its missing dependency, naming it
        print(f"warning: sources.path.{task}: {params.sources.path[task]} does not exist: `dvc pull` it (a clone), "
              f"or put it there and `dvc add {params.sources.path[task]}`")


def main(argv: list[str]) -> None:
    params = load_params()
    check_device(params.device)
    for task in params.tasks:
        check_source(params, task)
    with atomic_path(paths.params_checked()) as tmp:
        tmp.write_text("params.yaml is valid\n")
    print(f"params.yaml: valid ({len(params.tasks)} tasks, {len(params.runs)} trained by train)")


if __name__ == "__main__":
    run_stage(main, "python -m stages.check")
