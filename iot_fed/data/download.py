"""Fetch the Intel Lab files: verified, resumable HTTP download with a generator fallback.

``download`` writes to ``<dest>.part`` and resumes it with an HTTP ``Range`` request;
the file is renamed to ``dest`` only after its size and sha256 (when given) match.
``obtain_raw`` / ``obtain_mote_locs`` pick the source: a configured local file, else the
download, else (network unreachable) the synthetic generator — and say which in ``RawSource``.
"""

from __future__ import annotations

import hashlib
import logging
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from iot_fed.config import Settings
from iot_fed.data.generator import generate, generate_mote_locs

log = logging.getLogger(__name__)

CHUNK = 1 << 20
Source = Literal["download", "local", "synthetic"]


class DownloadError(RuntimeError):
    """The download failed or the file does not match its expected size / sha256."""


class IntegrityError(DownloadError):
    """The downloaded bytes do not match the expected size or sha256 (not retried)."""


@dataclass(frozen=True)
class RawSource:
    """Where a raw file came from: ``source`` is download | local | synthetic."""

    path: Path
    source: Source
    detail: str
    labels_path: Path | None = None


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _verify(path: Path, size: int | None, sha256: str | None) -> None:
    actual = path.stat().st_size
    if size is not None and actual != size:
        raise IntegrityError(f"{path.name}: size {actual} bytes, expected {size}")
    if sha256 is not None:
        digest = sha256_file(path)
        if digest.lower() != sha256.lower():
            raise IntegrityError(f"{path.name}: sha256 {digest}, expected {sha256.lower()}")


def download(
    url: str,
    dest: Path,
    *,
    sha256: str | None = None,
    size: int | None = None,
    timeout: float = 10.0,
    progress_every_s: float = 5.0,
) -> Path:
    """Download ``url`` to ``dest`` (resuming ``dest.part``); verify ``size`` / ``sha256``.

    An existing ``dest`` that verifies is kept. Network problems raise ``DownloadError``
    (the partial file stays for a later resume); a size or sha256 mismatch raises
    ``IntegrityError`` and deletes the partial file.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        try:
            _verify(dest, size, sha256)
            log.info("%s already present (%d bytes), not downloading", dest, dest.stat().st_size)
            return dest
        except IntegrityError as exc:
            log.warning("existing %s does not verify (%s); downloading again", dest, exc)
            dest.unlink()
    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if part.exists() else 0
    if size is not None and offset > size:
        part.unlink()
        offset = 0
    if not (size is not None and offset == size):
        _fetch(url, part, offset, timeout, progress_every_s)
    try:
        _verify(part, size, sha256)
    except IntegrityError:
        part.unlink(missing_ok=True)
        raise
    part.replace(dest)
    log.info("downloaded %s -> %s (%d bytes)", url, dest, dest.stat().st_size)
    return dest


def _fetch(url: str, part: Path, offset: int, timeout: float, every_s: float) -> None:
    req = urllib.request.Request(url, headers={"User-Agent": "iot_fed"})
    if offset:
        req.add_header("Range", f"bytes={offset}-")
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)  # noqa: S310 (http(s) URL)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # nothing left to send: the part file is complete
            log.info("server has no bytes after %d: %s looks complete", offset, part.name)
            return
        raise DownloadError(f"GET {url}: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise DownloadError(f"GET {url}: {getattr(exc, 'reason', exc)}") from exc
    with resp:
        if offset and resp.status == 206:
            mode = "ab"
            log.info("resuming %s at byte %d", url, offset)
        else:
            mode, offset = "wb", 0
        length = resp.headers.get("Content-Length")
        total = offset + int(length) if length and length.isdigit() else None
        done, last = offset, time.monotonic()
        try:
            with open(part, mode) as f:
                while chunk := resp.read(CHUNK):
                    f.write(chunk)
                    done += len(chunk)
                    if time.monotonic() - last >= every_s:
                        last = time.monotonic()
                        pct = f" ({100 * done / total:.1f}%)" if total else ""
                        log.info("downloading %s: %d bytes%s", part.name, done, pct)
        except (OSError, urllib.error.URLError) as exc:
            raise DownloadError(f"GET {url}: interrupted after {done} bytes: {exc}") from exc
    if total is not None and done < total:
        raise DownloadError(f"GET {url}: got {done} of {total} bytes (resume later)")


def _raw_dir(settings: Settings) -> Path:
    return Path(settings.data_dir) / "intel_lab"


def _url_name(url: str, default: str) -> str:
    name = url.rstrip("/").rsplit("/", 1)[-1]
    return name or default


def _configured_or_downloaded(
    file: Path | str | None,
    env: str,
    url: str | None,
    url_setting: str,
    default_name: str,
    out_dir: Path,
    timeout: float,
    **verify: Any,
) -> RawSource | str:
    """The configured local file, else ``url`` downloaded into ``out_dir``; otherwise the
    reason neither worked (for the synthetic fallback). A missing configured file and an
    integrity mismatch raise; other download errors fall back."""
    if file is not None:
        path = Path(file)
        if not path.is_file():
            raise FileNotFoundError(f"IOT_FED_{env}={path} does not exist")
        return RawSource(path, "local", f"configured file {path}")
    if not url:
        return f"no {url_setting} configured"
    dest = out_dir / _url_name(url, default_name)
    try:
        download(url, dest, timeout=timeout, **verify)
    except IntegrityError:
        raise
    except DownloadError as exc:
        return str(exc)
    return RawSource(dest, "download", f"downloaded from {url}")


def obtain_raw(settings: Settings) -> RawSource:
    """The Intel Lab readings file: ``data_file``, else ``data_url``, else the generator."""
    out_dir = _raw_dir(settings)
    got = _configured_or_downloaded(
        settings.data_file,
        "DATA_FILE",
        settings.data_url,
        "data_url",
        "data.txt.gz",
        out_dir,
        settings.download_timeout_s,
        sha256=settings.data_sha256,
        size=settings.data_size,
    )
    if isinstance(got, RawSource):
        return got
    reason = got
    name = (
        f"synthetic_s{settings.generator_seed}_m{settings.generator_motes}"
        f"_d{settings.generator_days:g}_f{settings.generator_fault_rate:g}"
        f"_r{settings.generator_drop_rate:g}_v{settings.generator_low_voltage_fraction:g}.txt"
    )
    path = out_dir / name
    labels = path.with_name(path.name + ".labels.csv")
    log.warning("Intel Lab download unavailable (%s): using the synthetic generator", reason)
    if path.exists() and labels.exists():
        detail = f"synthetic (reused {path.name}); download unavailable: {reason}"
    else:
        generate(
            path,
            motes=settings.generator_motes,
            days=settings.generator_days,
            seed=settings.generator_seed,
            spike_rate=settings.generator_fault_rate,
            drop_rate=settings.generator_drop_rate,
            low_voltage_fraction=settings.generator_low_voltage_fraction,
        )
        detail = f"synthetic (generated {path.name}); download unavailable: {reason}"
    return RawSource(path, "synthetic", detail, labels)


def obtain_mote_locs(settings: Settings) -> RawSource:
    """``mote_locs.txt``: ``mote_locs_file``, else ``mote_locs_url``, else a generated layout."""
    out_dir = _raw_dir(settings)
    got = _configured_or_downloaded(
        settings.mote_locs_file,
        "MOTE_LOCS_FILE",
        settings.mote_locs_url,
        "mote_locs_url",
        "mote_locs.txt",
        out_dir,
        settings.download_timeout_s,
    )
    if isinstance(got, RawSource):
        return got
    reason = got
    path = out_dir / f"synthetic_mote_locs_m{settings.generator_motes}.txt"
    log.warning("mote_locs download unavailable (%s): using a generated layout", reason)
    generate_mote_locs(path, motes=settings.generator_motes, seed=settings.generator_seed)
    return RawSource(path, "synthetic", f"generated layout; download unavailable: {reason}")
