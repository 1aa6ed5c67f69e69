"""Download files with a pinned checksum and unpack archives, never leaving a half-written result behind."""
import hashlib
import http.client
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from stages.infra.errors import PipelineError, one_line

CHUNK = 1 << 20
# md5 is accepted only because the official MNIST/CIFAR checksums are published as md5.
HEX_LENGTHS = {"sha256": 64, "md5": 32}
OFFLINE_HINT = "downloading needs a network; `source: bundled` works offline"


def file_checksum(path: Path, algorithm: str) -> str:
    """Hex digest of `path`, read in 1 MiB chunks so large archives never sit in memory."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _parse_checksum(checksum: str, url: str) -> tuple[str, str | None]:
    if checksum == "none":  # no published checksum exists (Jena, airline CSV): download prints one to pin
        return "sha256", None
    algorithm, _, expected = str(checksum).partition(":")
    expected = expected.strip().lower()
    if (algorithm not in HEX_LENGTHS or len(expected) != HEX_LENGTHS[algorithm]
            or any(c not in "0123456789abcdef" for c in expected)):
        raise PipelineError(f"{url}: checksum {checksum!r} is malformed, expected 'sha256:<64 hex>' or 'md5:<32 hex>'")
    return algorithm, expected


def _stream(url: str, out, algorithm: str, label: str) -> str:
    """Copy `url` into the open file `out`, hashing on the way so the file is read only once."""
    digest = hashlib.new(algorithm)
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=label) as bar:
                for chunk in iter(lambda: response.read(CHUNK), b""):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
    # HTTPError subclasses URLError, so it must be caught first to report the status code.
    except urllib.error.HTTPError as err:
        raise PipelineError(f"{url}: {one_line(err)}; {OFFLINE_HINT}") from err
    # URLError (unknown or unreachable host) is an OSError, like a reset or timeout mid-transfer.
    except (OSError, http.client.HTTPException) as err:
        reason = one_line(getattr(err, "reason", err))
        raise PipelineError(f"{url}: host unreachable or transfer failed ({reason}); {OFFLINE_HINT}") from err
    return digest.hexdigest()


def download(url: str, dest: Path, checksum: str) -> Path:
    """Fetch `url` to `dest` and return `dest`, which only ever appears with the pinned checksum."""
    algorithm, expected = _parse_checksum(checksum, url)
    dest = Path(dest)
    if expected and dest.is_file() and file_checksum(dest, algorithm) == expected:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    # Same folder as dest so the final os.replace is a rename on one filesystem, hence atomic.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            actual = _stream(url, out, algorithm, dest.name)
        if expected is None:
            print(f"warning: {url} has no pinned checksum; it downloaded as sha256:{actual} (pin it in params.yaml)")
        elif actual != expected:
            raise PipelineError(f"{url}: checksum mismatch, expected {algorithm}:{expected}, got {algorithm}:{actual}")
        os.replace(tmp, dest)
    except BaseException:  # KeyboardInterrupt too: a stray .part would otherwise pile up on every retry
        tmp.unlink(missing_ok=True)
        raise
    return dest


def _check_members(archive: Path, names: list[str]) -> None:
    for name in names:
        path = PurePosixPath(name.replace("\\", "/"))
        if path.is_absolute() or ".." in path.parts:
            raise PipelineError(f"{archive}: refusing member {name!r} that would land outside the extraction folder")


def _unpack(archive: Path, into: Path) -> None:
    name = archive.name.lower()
    try:
        if name.endswith(".zip"):
            with zipfile.ZipFile(archive) as zf:
                _check_members(archive, zf.namelist())
                zf.extractall(into)
        elif name.endswith((".tar.gz", ".tgz")):
            with tarfile.open(archive, "r:gz") as tf:
                _check_members(archive, tf.getnames())
                # The "data" filter also rejects links escaping the folder and device files.
                tf.extractall(into, filter="data")
        else:
            raise PipelineError(f"{archive}: unsupported archive type, expected .zip, .tar.gz or .tgz")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, OSError) as err:
        what = "archive does not exist" if not archive.exists() else "corrupt or unreadable archive"
        raise PipelineError(f"{archive}: {what} ({one_line(err)})") from err


def extract(archive: Path, dest_dir: Path) -> Path:
    """Unpack `archive` into `dest_dir`, which never holds a partial extraction."""
    archive, dest_dir = Path(archive), Path(dest_dir)
    dest_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest_dir.name}.", suffix=".part", dir=dest_dir.parent))
    try:
        _unpack(archive, tmp)
        # A rename cannot replace a non-empty folder. Removing the old one first can at worst leave
        # dest_dir missing, never half-filled, and DVC clears stage outputs before a run anyway.
        if dest_dir.exists():
            shutil.rmtree(dest_dir)
        os.replace(tmp, dest_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest_dir


ARCHIVES = (".zip", ".tgz", ".tar.gz")


def unpack_in_place(path: Path) -> None:
    """An archive (zip, tar.gz) becomes the folder `unpacked/` beside it, and is removed; any other file stays."""
    path = Path(path)
    if path.name.lower().endswith(ARCHIVES):
        extract(path, path.parent / "unpacked")
        path.unlink()
