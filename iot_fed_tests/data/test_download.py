"""Download against a local http.server (Range support): verify, resume, sha mismatch."""

from __future__ import annotations

import hashlib
import http.server
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from iot_fed.config import load_settings
from iot_fed.data.download import (
    DownloadError,
    IntegrityError,
    download,
    obtain_mote_locs,
    obtain_raw,
)
from iot_fed.data.parse import parse_mote_locs

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with single ``bytes=N-`` Range requests (206), like real servers."""

    ranges: list[str | None] = []

    def log_message(self, *args: object) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:
        rng = self.headers.get("Range")
        type(self).ranges.append(rng)
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        if rng and rng.startswith("bytes="):
            start = int(rng[6:].split("-")[0])
            if start >= len(data):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            data = data[start:]
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    root = tmp_path / "www"
    root.mkdir()
    (root / "data.txt.gz").write_bytes(PAYLOAD)
    RangeHandler.ranges = []
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), partial(RangeHandler, directory=str(root))
    )
    # a short poll interval: shutdown() waits up to one interval (0.5 s by default)
    t = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    httpd.shutdown()
    httpd.server_close()


SHA = hashlib.sha256(PAYLOAD).hexdigest()


def test_download_verifies(server, tmp_path: Path) -> None:
    url, _ = server
    dest = download(
        f"{url}/data.txt.gz", tmp_path / "out" / "data.txt.gz", sha256=SHA, size=len(PAYLOAD)
    )
    assert dest.read_bytes() == PAYLOAD
    assert not dest.with_name("data.txt.gz.part").exists()
    # already present and valid: no second request
    download(f"{url}/data.txt.gz", dest, sha256=SHA)
    assert RangeHandler.ranges == [None]


def test_resume_from_partial_file(server, tmp_path: Path) -> None:
    url, _ = server
    dest = tmp_path / "data.txt.gz"
    part = tmp_path / "data.txt.gz.part"
    part.write_bytes(PAYLOAD[:300_000])
    download(f"{url}/data.txt.gz", dest, sha256=SHA, size=len(PAYLOAD))
    assert RangeHandler.ranges == ["bytes=300000-"]
    assert dest.read_bytes() == PAYLOAD and not part.exists()


def test_complete_partial_file_needs_no_bytes(server, tmp_path: Path) -> None:
    url, _ = server
    (tmp_path / "data.txt.gz.part").write_bytes(PAYLOAD)
    dest = download(f"{url}/data.txt.gz", tmp_path / "data.txt.gz", sha256=SHA)
    assert dest.read_bytes() == PAYLOAD and RangeHandler.ranges == [f"bytes={len(PAYLOAD)}-"]


def test_sha_mismatch_raises_and_discards(server, tmp_path: Path) -> None:
    url, _ = server
    dest = tmp_path / "data.txt.gz"
    with pytest.raises(IntegrityError, match="sha256"):
        download(f"{url}/data.txt.gz", dest, sha256="0" * 64)
    assert not dest.exists() and not (tmp_path / "data.txt.gz.part").exists()


def test_size_mismatch_raises(server, tmp_path: Path) -> None:
    url, _ = server
    with pytest.raises(IntegrityError, match="size"):
        download(f"{url}/data.txt.gz", tmp_path / "x.gz", size=len(PAYLOAD) + 1)


def test_http_error_and_unreachable(server, tmp_path: Path) -> None:
    url, _ = server
    with pytest.raises(DownloadError, match="HTTP 404"):
        download(f"{url}/missing.gz", tmp_path / "m.gz")
    with pytest.raises(DownloadError):
        download("http://127.0.0.1:9/data.txt.gz", tmp_path / "n.gz", timeout=1)


def test_obtain_raw_download_local_and_synthetic(server, tmp_path: Path) -> None:
    url, root = server
    s = load_settings(data_dir=tmp_path / "a", data_url=f"{url}/data.txt.gz", data_sha256=SHA)
    got = obtain_raw(s)
    assert got.source == "download" and got.path.read_bytes() == PAYLOAD

    local = load_settings(data_dir=tmp_path / "b", data_file=root / "data.txt.gz")
    assert obtain_raw(local).source == "local"
    with pytest.raises(FileNotFoundError, match="IOT_FED_DATA_FILE"):
        obtain_raw(load_settings(data_file=tmp_path / "nope.txt"))

    offline = load_settings(
        data_dir=tmp_path / "c",
        data_url="http://127.0.0.1:9/data.txt.gz",
        download_timeout_s=1,
        generator_motes=3,
        generator_days=0.2,
    )
    syn = obtain_raw(offline)
    assert syn.source == "synthetic" and "download unavailable" in syn.detail
    assert syn.path.exists() and syn.labels_path is not None and syn.labels_path.exists()
    again = obtain_raw(offline)  # reused, same bytes
    assert "reused" in again.detail and again.path.read_bytes() == syn.path.read_bytes()


def test_obtain_raw_integrity_error_is_not_masked(server, tmp_path: Path) -> None:
    url, _ = server
    s = load_settings(data_dir=tmp_path, data_url=f"{url}/data.txt.gz", data_sha256="1" * 64)
    with pytest.raises(IntegrityError):
        obtain_raw(s)


def test_obtain_mote_locs_fallback(tmp_path: Path) -> None:
    s = load_settings(
        data_dir=tmp_path, mote_locs_url="http://127.0.0.1:9/mote_locs.txt", download_timeout_s=1
    )
    got = obtain_mote_locs(s)
    assert got.source == "synthetic" and len(parse_mote_locs(got.path)) == 54
