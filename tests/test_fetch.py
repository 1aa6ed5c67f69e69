"""stages.fetch against a real HTTP server on 127.0.0.1, so no test needs the internet."""
import hashlib
import io
import socket
import tarfile
import zipfile

import pytest

from stages.core import fetch
from stages.infra.errors import PipelineError
from stages.infra.files import content_sha256

PAYLOAD = b"pinned bytes\n" * 1000


@pytest.fixture
def server(tmp_path, file_server):
    root = tmp_path / "served"
    root.mkdir()
    (root / "data.bin").write_bytes(PAYLOAD)
    with file_server(root) as srv:
        yield srv


@pytest.fixture
def out_dir(tmp_path):
    d = tmp_path / "out"
    d.mkdir()
    return d


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def md5(data):
    return "md5:" + hashlib.md5(data).hexdigest()


def names(folder):
    return sorted(p.name for p in folder.iterdir())


# --- download ---------------------------------------------------------------------------------

UPPERCASE_HEX = "sha256:" + hashlib.sha256(PAYLOAD).hexdigest().upper()


@pytest.mark.parametrize("checksum", [sha256(PAYLOAD), md5(PAYLOAD), UPPERCASE_HEX])
def test_download_writes_file_with_matching_checksum(server, out_dir, checksum):
    dest = out_dir / "data.bin"
    assert fetch.download(server.url("data.bin"), dest, checksum) == dest
    assert dest.read_bytes() == PAYLOAD
    assert names(out_dir) == ["data.bin"]  # the temp file was renamed, not copied
    assert server.requests == ["/data.bin"]


def test_download_creates_missing_parent_folders(server, tmp_path):
    dest = tmp_path / "a" / "b" / "data.bin"
    fetch.download(server.url("data.bin"), dest, sha256(PAYLOAD))
    assert dest.read_bytes() == PAYLOAD


def test_checksum_mismatch_names_url_and_leaves_nothing(server, out_dir):
    url = server.url("data.bin")
    wrong = "sha256:" + "0" * 64
    with pytest.raises(PipelineError) as exc:
        fetch.download(url, out_dir / "data.bin", wrong)
    msg = str(exc.value)
    assert url in msg and "0" * 64 in msg and hashlib.sha256(PAYLOAD).hexdigest() in msg
    assert "\n" not in msg
    assert names(out_dir) == []


def test_http_404_names_url_and_leaves_nothing(server, out_dir):
    url = server.url("missing.bin")
    with pytest.raises(PipelineError) as exc:
        fetch.download(url, out_dir / "missing.bin", sha256(PAYLOAD))
    msg = str(exc.value)
    assert url in msg and "404" in msg and "source: bundled" in msg
    assert "\n" not in msg
    assert names(out_dir) == []


def test_unreachable_host_says_network_needed(out_dir):
    with socket.socket() as s:  # grab a free port, then close it so nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/data.bin"
    with pytest.raises(PipelineError) as exc:
        fetch.download(url, out_dir / "data.bin", sha256(PAYLOAD))
    msg = str(exc.value)
    assert url in msg and "network" in msg and "source: bundled" in msg
    assert names(out_dir) == []


def test_existing_good_file_is_not_downloaded_again(server, out_dir):
    dest = out_dir / "data.bin"
    dest.write_bytes(PAYLOAD)
    mtime = dest.stat().st_mtime_ns
    assert fetch.download(server.url("data.bin"), dest, md5(PAYLOAD)) == dest
    assert server.requests == []
    assert dest.stat().st_mtime_ns == mtime


def test_existing_bad_file_is_replaced(server, out_dir):
    dest = out_dir / "data.bin"
    dest.write_bytes(b"truncated")
    fetch.download(server.url("data.bin"), dest, sha256(PAYLOAD))
    assert dest.read_bytes() == PAYLOAD
    assert server.requests == ["/data.bin"]


@pytest.mark.parametrize("checksum", [
    "abc", "sha1:" + "0" * 40, "sha256:" + "0" * 63, "md5:" + "0" * 64, "sha256:" + "g" * 64, "", "md5"])
def test_malformed_checksum_is_rejected_before_any_request(server, out_dir, checksum):
    url = server.url("data.bin")
    with pytest.raises(PipelineError) as exc:
        fetch.download(url, out_dir / "data.bin", checksum)
    assert url in str(exc.value) and repr(checksum) in str(exc.value) and "malformed" in str(exc.value)
    assert server.requests == []
    assert names(out_dir) == []


def test_interrupt_mid_download_removes_temp_file(out_dir, monkeypatch):
    def half_then_interrupt(url, out, algorithm, label):
        out.write(PAYLOAD[:100])
        raise KeyboardInterrupt

    monkeypatch.setattr(fetch, "_stream", half_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        fetch.download("http://127.0.0.1:1/data.bin", out_dir / "data.bin", sha256(PAYLOAD))
    assert names(out_dir) == []


def test_file_checksum_matches_hashlib_across_chunks(tmp_path):
    data = bytes(range(256)) * 9000  # > 2 MiB, so several 1 MiB chunks
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    assert fetch.file_checksum(path, "sha256") == hashlib.sha256(data).hexdigest()
    assert fetch.file_checksum(path, "md5") == hashlib.md5(data).hexdigest()


# --- extract ----------------------------------------------------------------------------------

FILES = {"top.txt": b"top", "sub/inner.txt": b"inner"}


def make_zip(path, files):
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def make_tar(path, files):
    with tarfile.open(path, "w:gz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize("maker,name", [(make_zip, "a.zip"), (make_tar, "a.tar.gz"), (make_tar, "a.tgz")])
def test_extract_unpacks_all_members(tmp_path, maker, name):
    archive = maker(tmp_path / name, FILES)
    dest = tmp_path / "out" / "unpacked"
    assert fetch.extract(archive, dest) == dest
    assert (dest / "top.txt").read_bytes() == b"top"
    assert (dest / "sub" / "inner.txt").read_bytes() == b"inner"
    assert names(dest.parent) == ["unpacked"]  # no temp folder left beside it


def test_extract_replaces_previous_contents(tmp_path):
    dest = tmp_path / "unpacked"
    dest.mkdir()
    (dest / "stale.txt").write_text("old")
    fetch.extract(make_zip(tmp_path / "a.zip", FILES), dest)
    assert sorted(p.name for p in dest.iterdir()) == ["sub", "top.txt"]
    assert names(tmp_path) == ["a.zip", "unpacked"]


@pytest.mark.parametrize("maker,name,member", [
    (make_zip, "evil.zip", "../evil.txt"),
    (make_tar, "evil.tar.gz", "../evil.txt"),
    (make_tar, "abs.tar.gz", "/tmp/abs-evil.txt"),
])
def test_extract_refuses_members_escaping_dest(tmp_path, maker, name, member):
    archive = maker(tmp_path / name, {"ok.txt": b"ok", member: b"pwned"})
    work = tmp_path / "work"
    with pytest.raises(PipelineError) as exc:
        fetch.extract(archive, work / "unpacked")
    assert str(archive) in str(exc.value) and member in str(exc.value)
    assert names(work) == []  # neither dest nor a temp folder
    assert not (tmp_path / "evil.txt").exists() and not (work / "evil.txt").exists()


@pytest.mark.parametrize("name", ["broken.zip", "broken.tar.gz"])
def test_corrupt_archive_names_the_file(tmp_path, name):
    archive = tmp_path / name
    archive.write_bytes(b"this is not an archive" * 10)
    work = tmp_path / "work"
    with pytest.raises(PipelineError) as exc:
        fetch.extract(archive, work / "unpacked")
    assert str(archive) in str(exc.value) and "corrupt" in str(exc.value)
    assert names(work) == []


def test_truncated_tar_gz_is_reported_as_corrupt(tmp_path):
    good = make_tar(tmp_path / "good.tar.gz", {"big.bin": bytes(range(256)) * 4000})
    archive = tmp_path / "cut.tar.gz"
    archive.write_bytes(good.read_bytes()[:-200])
    with pytest.raises(PipelineError, match="corrupt"):
        fetch.extract(archive, tmp_path / "work" / "unpacked")
    assert names(tmp_path / "work") == []


def test_unsupported_archive_type(tmp_path):
    archive = tmp_path / "data.rar"
    archive.write_bytes(b"x")
    with pytest.raises(PipelineError, match="unsupported archive type"):
        fetch.extract(archive, tmp_path / "work" / "unpacked")
    assert names(tmp_path / "work") == []


def test_unpinned_checksum_downloads_and_prints_the_sha256_to_pin(server, out_dir, capsys):
    dest = fetch.download(server.url("data.bin"), out_dir / "data.bin", "none")
    assert dest.read_bytes() == PAYLOAD
    assert f"sha256:{hashlib.sha256(PAYLOAD).hexdigest()}" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["airpassengers", "greensboro_temperature", "mnist_5k", "uci_digits", "konlpy_laws"])
def test_the_bundled_sources_write_exactly_the_pinned_data(name, tmp_path):
    """download refuses a bundled data set whose digest differs from the registry's: the pin must be what the
    installed package writes."""
    from stages.core.sources import BUNDLED

    BUNDLED[name].write(tmp_path)
    assert content_sha256(tmp_path) == BUNDLED[name].sha256


def test_another_version_of_a_bundled_data_set_is_refused(tmp_path, monkeypatch):
    from stages import download
    from stages.core import sources

    monkeypatch.setitem(sources.BUNDLED, "airpassengers", sources.BUNDLED["airpassengers"].__class__(
        **(vars(sources.BUNDLED["airpassengers"]) | {"sha256": "0" * 64})))
    with pytest.raises(PipelineError, match=r"bundled airpassengers: the installed package wrote other data"):
        download.write_bundled("airpassengers", tmp_path)


def test_content_digest_of_gzip_files_ignores_how_they_were_compressed(tmp_path):
    import gzip

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "x.gz").write_bytes(gzip.compress(b"digits" * 100, compresslevel=9, mtime=0))
    (tmp_path / "b" / "x.gz").write_bytes(gzip.compress(b"digits" * 100, compresslevel=1, mtime=123))
    assert content_sha256(tmp_path / "a") == content_sha256(tmp_path / "b")
    (tmp_path / "b" / "x.gz").write_bytes(gzip.compress(b"digits" * 99))
    assert content_sha256(tmp_path / "a") != content_sha256(tmp_path / "b")
