"""Stage copy: a task's own data, a file or folder of this repository, into data/raw/<task>/.

`sources.path.<task>: data/sales.csv` names it. Track it with `dvc add data/sales.csv` (or git for a small file):
dvc.yaml declares the path as this stage's dependency, so editing the file re-runs this task's stages and no
other's. An archive (zip, tar.gz) is unpacked, as a download's is. Usage: python -m stages.copy <task>
"""
import shutil

from stages.core.fetch import unpack_in_place
from stages.infra import paths
from stages.infra.config import ROOT, load_params
from stages.infra.errors import PipelineError, run_stage
from stages.infra.files import atomic_path


def main(argv: list[str]) -> None:
    (task,) = argv
    params = load_params()
    if task not in params.sources.path:
        raise PipelineError(f"params.yaml: sources.path has no {task} (its data comes from sources.download)")
    source = ROOT / params.sources.path[task]
    if not source.exists():
        raise PipelineError(f"params.yaml: sources.path.{task}: {params.sources.path[task]} does not exist "
                            f"(`dvc pull` it in a clone, or put it there and `dvc add {params.sources.path[task]}`)")
    if source.resolve() != ROOT.resolve() and ROOT.resolve() not in source.resolve().parents:
        raise PipelineError(f"params.yaml: sources.path.{task}: {params.sources.path[task]} is outside the repository")
    with atomic_path(paths.raw(task)) as folder:  # all or nothing
        folder.mkdir()
        if source.is_dir():
            shutil.copytree(source, folder / source.name, ignore=shutil.ignore_patterns(".gitignore", "*.dvc"))
        else:
            shutil.copyfile(source, folder / source.name)
            unpack_in_place(folder / source.name)
    print(f"{task}: copied {params.sources.path[task]} into {paths.raw(task)}")


if __name__ == "__main__":
    run_stage(main, "python -m stages.copy <task>")
