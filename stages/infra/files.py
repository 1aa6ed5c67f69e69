"""File I/O for stages: every write goes to a temp path and is renamed, so a failed stage leaves no partial file."""
import csv
import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from stages.infra.errors import PipelineError


@contextmanager
def atomic_path(path: Path):
    """Yield a temp path next to `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        yield tmp
        if tmp.is_dir() and path.is_dir():  # a rename cannot replace a folder: move the old one aside first
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp)
        elif tmp.exists():
            tmp.unlink()


def remove_others(folder: Path, keep: set[str]) -> None:
    """Delete the files of `folder` not named in `keep`: DVC keeps a stage's outputs (persist: true in dvc.yaml,
    so a refused run loses nothing), and a stage that rewrites a folder removes what it no longer makes (the
    checkpoint of a model dropped from params.yaml's runs, say) once it has succeeded."""
    for path in Path(folder).iterdir():
        if path.is_file() and path.name not in keep:
            path.unlink()


def content_sha256(path: Path) -> str:
    """sha256 over a file, or over a folder's files and their relative names; gzip files count by their content,
    so the digest does not depend on the zlib that compressed them."""
    import gzip
    import hashlib

    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    digest = hashlib.sha256()
    for file in files:
        data = file.read_bytes()
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode() + b"\0")
        digest.update(hashlib.sha256(gzip.decompress(data) if file.suffix == ".gz" else data).digest())
    return digest.hexdigest()


def write_json(path: Path, data) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")


def read_json(path: Path):
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise PipelineError(f"{path}: file not found (run the stage that makes it: dvc repro)") from None
    except json.JSONDecodeError as err:
        raise PipelineError(f"{path}: corrupt JSON ({err})") from None


def write_csv(path: Path, columns: dict) -> None:
    """Columns of equal length as a CSV with a header row (the format DVC plots read)."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        writer.writerows(zip(*columns.values()))


def read_columns(path: Path) -> dict[str, list[str]]:
    """A CSV written by write_csv, as {column: values}; values stay strings (the reader knows which are numbers)."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except FileNotFoundError:
        raise PipelineError(f"{path}: file not found (run the stage that makes it: dvc repro)") from None
    return {k: [row[k] for row in rows] for k in (rows[0] if rows else {})}


def save_arrays(path: Path, **arrays) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)


def load_arrays(path: Path) -> dict:
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except FileNotFoundError:
        raise PipelineError(f"{path}: file not found (run the stage that makes it: dvc repro)") from None
    except (ValueError, OSError, EOFError) as err:  # numpy's message would suggest allow_pickle=True: not here
        raise PipelineError(f"{path}: corrupt array file ({type(err).__name__}); re-run the stage that makes it") from None


def save_checkpoint(path: Path, checkpoint: dict) -> None:
    import torch

    with atomic_path(path) as tmp:
        torch.save(checkpoint, tmp)


def load_checkpoint(path: Path) -> dict:
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise PipelineError(f"{path}: checkpoint not found (run its train stage: dvc repro)") from None
    except Exception as err:  # noqa: BLE001 - torch raises several types for a damaged file, and advises unsafe loading: not here
        raise PipelineError(f"{path}: corrupt checkpoint ({type(err).__name__}); re-run its train stage") from None
