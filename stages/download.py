"""Stage download: put a task's raw data in data/raw/<task>/, from a pip package (offline) or the official URL.

`source: bundled` writes the packaged copy in the same format as the downloaded file, so later stages cannot
tell the two apart. Usage: python -m stages.download <task>
"""
import importlib.util
from pathlib import Path

from stages.config import load_params
from stages.errors import PipelineError, run_stage
from stages.files import atomic_path, write_csv

RAW = Path("data/raw")
# File each task's later stages read, as the official source names it.
RAW_FILES = {"passengers": "airline-passengers.csv", "temperature": "jena_climate_2009_2016.csv"}


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
    """NREL TMY3 hourly air temperature of Greensboro NC (ships with pvlib), in the Jena CSV's columns."""
    import pvlib

    frame, _ = pvlib.iotools.read_tmy3(package_file("pvlib", "data/723170TYA.CSV"), map_variables=True,
                                       coerce_year=1990)
    times = frame.index.tz_localize(None).strftime("%d.%m.%Y %H:%M:%S")
    write_csv(dest, {"Date Time": list(times), "T (degC)": frame["temp_air"].round(2).tolist()})


def from_url(task: str, url: str, checksum: str, dest: Path) -> None:
    from stages.fetch import download, extract

    archive = download(url, RAW / task / Path(url).name, checksum)
    if archive.suffix == ".zip":
        unpacked = extract(archive, RAW / task / "unpacked")
        with atomic_path(dest) as tmp:
            (unpacked / dest.name).rename(tmp)
    elif archive != dest:
        archive.rename(dest)


def main(argv: list[str]) -> None:
    (task,) = argv
    cfg = load_params().task(task).download
    dest = RAW / task / RAW_FILES[task]
    dest.parent.mkdir(parents=True, exist_ok=True)
    if cfg.source == "url":
        from_url(task, cfg.url, cfg.checksum, dest)
    elif task == "passengers":
        bundled_passengers(dest)
    elif task == "temperature":
        bundled_temperature(dest)
    print(f"{task}: wrote {dest} ({dest.stat().st_size:,} bytes, source {cfg.source})")


if __name__ == "__main__":
    run_stage(main)
