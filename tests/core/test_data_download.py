"""Tests of orchard.data.download over a local HTTP server."""

from __future__ import annotations

import hashlib
import logging
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from orchard.data import download
from orchard.data.download import (
    MIRROR_ENV_VAR,
    Checksum,
    DownloadError,
    Resource,
    default_data_dir,
    fetch,
    resolve_url,
)
from tests.helpers.http import serve_directory

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB
MD5 = hashlib.md5(PAYLOAD).hexdigest()
SHA256 = hashlib.sha256(PAYLOAD).hexdigest()
NAME = "blob.bin"


@dataclass
class Server:
    url: str
    requests: list[str]


@pytest.fixture(autouse=True)
def _no_mirror_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MIRROR_ENV_VAR, raising=False)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    served = tmp_path / "served"
    served.mkdir()
    (served / NAME).write_bytes(PAYLOAD)
    requests: list[str] = []
    with serve_directory(served, request_log=requests) as url:
        yield Server(url, requests)


@pytest.fixture
def empty_server(tmp_path: Path) -> Iterator[Server]:
    """A mirror that lacks every file: each request is a 404."""
    served = tmp_path / "empty"
    served.mkdir()
    requests: list[str] = []
    with serve_directory(served, request_log=requests) as url:
        yield Server(url, requests)


def test_download_verifies_and_caches(server: Server, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    resource = Resource(NAME, f"{server.url}/{NAME}", f"md5:{MD5}")
    path = fetch(resource, cache)
    assert path == cache / NAME
    assert path.read_bytes() == PAYLOAD
    assert server.requests == [f"/{NAME}"]
    assert sorted(p.name for p in cache.iterdir()) == [NAME]  # no temporary files left

    assert fetch(resource, cache) == path
    assert server.requests == [f"/{NAME}"]  # the second call was served from the cache


def test_sha256_checksums_are_supported(server: Server, tmp_path: Path) -> None:
    resource = Resource(NAME, f"{server.url}/{NAME}", f"sha256:{SHA256.upper()}")
    assert fetch(resource, tmp_path / "cache").read_bytes() == PAYLOAD


def test_a_corrupted_cache_file_is_downloaded_again(
    server: Server, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / NAME).write_bytes(PAYLOAD[:-1] + b"x")
    resource = Resource(NAME, f"{server.url}/{NAME}", f"md5:{MD5}")
    with caplog.at_level(logging.WARNING, logger="orchard.data.download"):
        path = fetch(resource, cache)
    assert path.read_bytes() == PAYLOAD
    assert server.requests == [f"/{NAME}"]
    assert "downloading it again" in caplog.text


def test_a_manually_placed_file_is_used_without_a_request(server: Server, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / NAME).write_bytes(PAYLOAD)
    resource = Resource(NAME, "http://127.0.0.1:9/never-contacted", f"md5:{MD5}")
    assert fetch(resource, cache).read_bytes() == PAYLOAD


def test_checksum_mismatch_raises_and_leaves_nothing(server: Server, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    wrong = "0" * 32
    url = f"{server.url}/{NAME}"
    with pytest.raises(DownloadError) as info:
        fetch(Resource(NAME, url, f"md5:{wrong}"), cache)
    message = str(info.value)
    assert url in message
    assert str(cache / NAME) in message
    assert f"expected md5:{wrong}" in message
    assert f"got md5:{MD5}" in message
    assert MIRROR_ENV_VAR in message
    assert "place the file manually" in message
    assert list(cache.iterdir()) == []


def test_http_404_raises_with_url_cache_path_and_override(
    empty_server: Server, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    url = f"{empty_server.url}/{NAME}"
    with pytest.raises(DownloadError) as info:
        fetch(Resource(NAME, url, f"md5:{MD5}"), cache)
    message = str(info.value)
    assert "HTTP 404" in message
    assert url in message
    assert str(cache / NAME) in message
    assert MIRROR_ENV_VAR in message
    assert list(cache.iterdir()) == []


def test_connection_refused_raises_download_error(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/{NAME}"
    with pytest.raises(DownloadError, match=r"download of http://127\.0\.0\.1:\d+/blob\.bin"):
        fetch(Resource(NAME, url, f"md5:{MD5}"), tmp_path / "cache", timeout=5)
    assert list((tmp_path / "cache").iterdir()) == []


def test_mirror_argument_replaces_the_base_url(
    server: Server, empty_server: Server, tmp_path: Path
) -> None:
    resource = Resource(NAME, f"{empty_server.url}/official/{NAME}", f"md5:{MD5}")
    path = fetch(resource, tmp_path / "cache", mirror=server.url + "/")
    assert path.read_bytes() == PAYLOAD
    assert server.requests == [f"/{NAME}"]
    assert empty_server.requests == []


def test_mirror_env_var_replaces_the_base_url(
    server: Server, empty_server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(MIRROR_ENV_VAR, server.url)
    resource = Resource(NAME, f"{empty_server.url}/official/{NAME}", f"md5:{MD5}")
    assert fetch(resource, tmp_path / "cache").read_bytes() == PAYLOAD
    assert server.requests == [f"/{NAME}"]
    assert empty_server.requests == []


def test_mirror_argument_wins_over_env_var(
    server: Server, empty_server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(MIRROR_ENV_VAR, empty_server.url)
    resource = Resource(NAME, f"{empty_server.url}/{NAME}", f"md5:{MD5}")
    assert fetch(resource, tmp_path / "cache", mirror=server.url).read_bytes() == PAYLOAD
    assert empty_server.requests == []


def test_resolve_url() -> None:
    resource = Resource("f.gz", "https://example.org/data/f.gz", f"md5:{MD5}")
    assert resolve_url(resource) == "https://example.org/data/f.gz"
    assert resolve_url(resource, "http://mirror.local/x/") == "http://mirror.local/x/f.gz"


def test_progress_is_logged_for_large_files(
    server: Server,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(download, "_PROGRESS_MIN_BYTES", 1000)
    monkeypatch.setattr(download, "_CHUNK_SIZE", 64 * 1024)
    with caplog.at_level(logging.INFO, logger="orchard.data.download"):
        fetch(Resource(NAME, f"{server.url}/{NAME}", f"md5:{MD5}"), tmp_path / "cache")
    progress = [r.getMessage() for r in caplog.records if "%)" in r.getMessage()]
    assert progress[-1] == f"{NAME}: 1.0 of 1.0 MB (100%)"
    assert len(progress) == 10


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("f68b3c2dcbeaaa9fbdd348bbdeb94873", "algorithm:hexdigest"),
        ("crc32:deadbeef", "'crc32' is not supported"),
        ("md5:f68b", "32 lowercase hexadecimal"),
        ("sha256:" + "g" * 64, "64 lowercase hexadecimal"),
    ],
)
def test_bad_checksums_are_rejected(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        Resource("f.gz", "https://example.org/f.gz", text)


def test_checksum_parsing_normalises_case() -> None:
    parsed = Checksum.parse("MD5:F68B3C2DCBEAAA9FBDD348BBDEB94873")
    assert parsed == Checksum("md5", "f68b3c2dcbeaaa9fbdd348bbdeb94873")
    assert str(parsed) == "md5:f68b3c2dcbeaaa9fbdd348bbdeb94873"


@pytest.mark.parametrize("filename", ["", "..", "a/b.gz", "../b.gz"])
def test_resource_filenames_must_be_plain(filename: str) -> None:
    with pytest.raises(ValueError, match="plain file name"):
        Resource(filename, "https://example.org/f.gz", f"md5:{MD5}")


def test_default_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ORCHARD_DATA_DIR", str(tmp_path / "explicit"))
    assert default_data_dir() == tmp_path / "explicit"
    monkeypatch.delenv("ORCHARD_DATA_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_data_dir() == tmp_path / "xdg" / "orchard" / "datasets"


def test_failed_redownload_mentions_the_stale_cache_file(
    empty_server: Server, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / NAME).write_bytes(b"stale")
    stale_md5 = hashlib.md5(b"stale").hexdigest()
    with pytest.raises(DownloadError) as info:
        fetch(Resource(NAME, f"{empty_server.url}/{NAME}", f"md5:{MD5}"), cache)
    assert f"{cache / NAME} has the wrong checksum md5:{stale_md5}" in str(info.value)
    assert (cache / NAME).read_bytes() == b"stale"  # left for inspection, never half-replaced
