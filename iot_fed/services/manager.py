"""``up`` / ``down`` / ``status`` / ``install`` over the local services."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from iot_fed.config import Settings
from iot_fed.redact import redact
from iot_fed.services.base import LOCAL_HOST, Service, ServiceStatus
from iot_fed.services.kafka import KafkaService
from iot_fed.services.mongodb import MongoService
from iot_fed.services.postgres import PostgresService
from iot_fed.services.process import (
    ProcessRecord,
    ServiceError,
    current_process,
    file_lock,
    is_alive,
    log_tail,
    port_open,
    start_detached,
    stop,
)
from iot_fed.services.superset import SupersetService

log = logging.getLogger(__name__)

# Start order: the quick one first; `down` stops in reverse.
SERVICE_TYPES: dict[str, type[Service]] = {
    "mongodb": MongoService,
    "kafka": KafkaService,
    "postgres": PostgresService,  # reporting store: off only with IOT_FED_REPORTING=false
    "superset": SupersetService,  # dashboards, after postgres (its metadata database)
}
SERVICE_NAMES = tuple(SERVICE_TYPES)
DEFAULT_START_TIMEOUT_S = 90.0
DEFAULT_STOP_TIMEOUT_S = 30.0


def services_for(settings: Settings, only: Iterable[str] | None = None) -> list[Service]:
    """The requested services (all by default), in start order."""
    names = list(only) if only else list(SERVICE_NAMES)
    unknown = [n for n in names if n not in SERVICE_TYPES]
    if unknown:
        raise ServiceError(f"unknown service(s) {unknown}; choose from {list(SERVICE_NAMES)}")
    out: list[Service] = []
    for n in SERVICE_NAMES:
        if n == "kafka" and n in names:
            out.extend(KafkaService.cluster(settings))  # one per node of a local cluster
        elif n in names:
            out.append(SERVICE_TYPES[n](settings))
    return out


def _lock(settings: Settings):
    return file_lock(settings.state_dir / "services.lock")


PORT_RELEASE_S = 5.0


def _busy_ports(svc: Service, wait_s: float = PORT_RELEASE_S) -> list[int]:
    """``svc``'s ports something else listens on, after up to ``wait_s`` for them to free.

    A process killed a moment ago (kill -9) can still hold its listening sockets: its main
    thread is already a zombie while the others (a JVM has dozens) are still exiting."""
    deadline = time.monotonic() + wait_s
    while True:
        busy = [p for p in svc.ports() if port_open(LOCAL_HOST, p)]
        if not busy or time.monotonic() >= deadline:
            return busy
        time.sleep(0.2)


def _own_record(svc: Service) -> ProcessRecord | None:
    """The record of a live process iot-fed started for ``svc``; stale records are removed."""
    rec = ProcessRecord.load(svc.record_path)
    if rec is None:
        return None
    if is_alive(rec):
        return rec
    svc.record_path.unlink(missing_ok=True)
    return None


def _status(
    svc: Service,
    state: str,
    healthy: bool | None,
    rec: ProcessRecord | None = None,
    detail: str = "",
) -> ServiceStatus:
    return ServiceStatus(
        name=svc.name,
        endpoint=redact(svc.endpoint),
        managed=svc.is_local,
        state=state,
        healthy=healthy,
        pid=rec.pid if rec else None,
        log=svc.log_path if svc.is_local and svc.log_path.exists() else None,
        detail=detail,
    )


def _wait_healthy(svc: Service, rec: ProcessRecord, timeout: float) -> None:
    """Poll until ``svc`` answers; raise a clear error if it dies or the timeout passes."""
    deadline = time.monotonic() + timeout
    reason = "not probed"
    while True:
        if not is_alive(rec):
            raise ServiceError(
                f"{svc.name}: process {rec.pid} exited during start; log {svc.log_path}:\n"
                + log_tail(svc.log_path)
            )
        remaining = deadline - time.monotonic()
        reason = svc.probe(min(2.0, max(remaining, 0.5))) or ""
        if not reason:
            return
        if time.monotonic() >= deadline:
            raise ServiceError(
                f"{svc.name}: not answering at {redact(svc.endpoint)} after {timeout:.0f}s "
                f"({reason}); see log {svc.log_path}"
            )
        time.sleep(0.3)


def _up_one(
    svc: Service, timeout: float, started: list[tuple[Service, ProcessRecord]]
) -> ServiceStatus:
    if not svc.is_local:
        reason = svc.probe(min(timeout, 10.0))
        if reason:
            raise ServiceError(
                f"{svc.name}: external, not managed ({svc.setting}={redact(svc.endpoint)}) "
                f"and not reachable: {reason}"
            )
        return _status(svc, "external, not managed", True)
    rec = _own_record(svc)
    if rec is not None:
        _wait_healthy(svc, rec, timeout)
        svc.after_start()
        return _status(svc, "already running", True, rec)
    busy = _busy_ports(svc)
    if busy:
        raise ServiceError(
            f"{svc.name}: port {LOCAL_HOST}:{busy[0]} is already in use by a process iot-fed "
            f"did not start; stop it or point {svc.setting} at another port (log {svc.log_path})"
        )
    if not svc.installed():
        log.info("%s: installing artifacts under %s", svc.name, svc.state_dir)
    svc.install()
    svc.prepare()
    t0 = time.monotonic()
    rec = start_detached(svc.name, svc.command(), svc.log_path, cwd=svc.workdir, user=svc.run_as())
    rec.save(svc.record_path)
    started.append((svc, rec))
    _wait_healthy(svc, rec, max(timeout, getattr(svc, "start_timeout", 0.0)))
    svc.after_start()
    log.info("%s: up at %s in %.1fs", svc.name, redact(svc.endpoint), time.monotonic() - t0)
    return _status(svc, "started", True, rec, detail=f"{time.monotonic() - t0:.1f}s")


def up(
    settings: Settings,
    only: Iterable[str] | None = None,
    timeout: float = DEFAULT_START_TIMEOUT_S,
) -> list[ServiceStatus]:
    """Make the services answer: start local ones not yet running (idempotent).

    On any failure, the processes this call started are stopped again and the error
    (a :class:`ServiceError` naming the service and its log) is raised.
    """
    with _lock(settings):
        return _up_locked(settings, only, timeout)


def _up_locked(
    settings: Settings, only: Iterable[str] | None, timeout: float
) -> list[ServiceStatus]:
    started: list[tuple[Service, ProcessRecord]] = []
    try:
        return [_up_or_report(svc, timeout, started) for svc in services_for(settings, only)]
    except BaseException:
        for svc, rec in reversed(started):
            log.warning("%s: stopping pid %d (this up failed)", svc.name, rec.pid)
            stop(rec, DEFAULT_STOP_TIMEOUT_S, svc.stop_signal)
            svc.record_path.unlink(missing_ok=True)
        raise


def _up_or_report(
    svc: Service, timeout: float, started: list[tuple[Service, ProcessRecord]]
) -> ServiceStatus:
    """:func:`_up_one`, unless a setting switched ``svc`` off; a failure names that switch."""
    off = svc.disabled()
    if off:
        return _status(svc, "disabled", None, detail=off)
    try:
        return _up_one(svc, timeout, started)
    except ServiceError as exc:
        if svc.off_switch is None:
            raise
        raise ServiceError(f"{exc} (to run without it on purpose, set {svc.off_switch})") from None


def down(
    settings: Settings,
    only: Iterable[str] | None = None,
    timeout: float = DEFAULT_STOP_TIMEOUT_S,
) -> list[ServiceStatus]:
    """Stop the processes iot-fed started (SIGTERM, wait, SIGKILL); data is kept."""
    with _lock(settings):
        return _down_locked(settings, only, timeout)


def _down_locked(
    settings: Settings, only: Iterable[str] | None, timeout: float
) -> list[ServiceStatus]:
    out = []
    for svc in reversed(services_for(settings, only)):
        if not svc.is_local:
            out.append(_status(svc, "external, not managed", None))
            continue
        if svc.disabled() and not svc.record_path.exists():
            out.append(_status(svc, "disabled", None, detail=svc.disabled() or ""))
            continue
        rec = _own_record(svc)
        if rec is not None:
            stop(rec, timeout, svc.stop_signal)
            svc.record_path.unlink(missing_ok=True)
        foreign = [p for p in svc.ports() if port_open(LOCAL_HOST, p)]
        detail = f"port {foreign[0]} is held by a process iot-fed did not start" if foreign else ""
        out.append(_status(svc, "stopped" if rec else "not running", None, rec, detail))
    return list(reversed(out))


@contextlib.contextmanager
def session(
    settings: Settings,
    timeout: float = DEFAULT_START_TIMEOUT_S,
    only: Iterable[str] | None = None,
) -> Iterator[list[ServiceStatus]]:
    """Services up for the duration of the block (e.g. a test session).

    Services this block started are stopped at its end, unless another live session
    (another process inside this block, tracked by lease files) still uses them.
    """
    leases = settings.state_dir / "leases"
    lease = leases / f"{os.getpid()}.json"
    with _lock(settings):
        current_process("lease").save(lease)
        try:
            statuses = _up_locked(settings, only, timeout)
        except BaseException:
            lease.unlink(missing_ok=True)
            raise
    started = [st.name for st in statuses if st.state == "started"]
    try:
        yield statuses
    finally:
        with _lock(settings):
            lease.unlink(missing_ok=True)
            others = False
            for path in leases.glob("*.json"):
                rec = ProcessRecord.load(path)
                if rec is not None and is_alive(rec):
                    others = True
                else:
                    path.unlink(missing_ok=True)
            if started and not others:
                _down_locked(settings, started, DEFAULT_STOP_TIMEOUT_S)
            elif started:
                log.info("leaving %s running: another session still uses them", started)


def status(
    settings: Settings, only: Iterable[str] | None = None, timeout: float = 3.0
) -> list[ServiceStatus]:
    """Endpoint, process and health of each service (starts nothing)."""
    out = []
    for svc in services_for(settings, only):
        if svc.disabled():
            out.append(_status(svc, "disabled", None, detail=svc.disabled() or ""))
            continue
        reason = svc.probe(timeout)
        healthy = reason is None
        if not svc.is_local:
            out.append(_status(svc, "external, not managed", healthy, detail=reason or ""))
            continue
        rec = _own_record(svc)
        if rec is not None:
            out.append(_status(svc, "running", healthy, rec, reason or ""))
        elif any(port_open(LOCAL_HOST, p) for p in svc.ports()):
            out.append(
                _status(
                    svc, "not started by iot-fed", healthy, detail="port held by another process"
                )
            )
        else:
            out.append(_status(svc, "not running", False))
    return out


def revive(
    settings: Settings,
    only: Iterable[str] | None = None,
    timeout: float = DEFAULT_START_TIMEOUT_S,
) -> list[ServiceStatus]:
    """Start again the local services iot-fed started whose process has died (killed, or
    crashed): their record is there, their process is not. One stopped on purpose
    (``down``) has no record and stays down. Returns the ones restarted."""
    out = []
    with _lock(settings):
        for svc in services_for(settings, only):
            if not svc.is_local or svc.disabled():
                continue
            rec = ProcessRecord.load(svc.record_path)
            if rec is None or is_alive(rec):
                continue
            log.warning("%s: pid %d is gone (killed or crashed); starting it", svc.name, rec.pid)
            svc.record_path.unlink(missing_ok=True)
            _up_one(svc, timeout, [])
            out.append(_status(svc, "restarted", True, ProcessRecord.load(svc.record_path)))
    return out


def watch(
    settings: Settings,
    interval_s: float = 5.0,
    only: Iterable[str] | None = None,
    stop: threading.Event | None = None,
) -> None:
    """:func:`revive` every ``interval_s`` until ``stop`` is set (``iot-fed services watch``,
    supervised by ``make run``); a service that cannot start yet is tried again later."""
    stop = stop or threading.Event()
    while not stop.is_set():
        try:
            for st in revive(settings, only):
                log.warning("%s: restarted (%s)", st.name, st.line())
        except ServiceError as exc:
            log.error("could not restart a service, trying again: %s", " ".join(str(exc).split()))
        stop.wait(interval_s)


def running(settings: Settings) -> set[str]:
    """Names of the local services that iot-fed started and that are alive now."""
    return {svc.name for svc in services_for(settings) if svc.is_local and _own_record(svc)}


def install(settings: Settings, only: Iterable[str] | None = None) -> dict[str, float]:
    """Fetch or build the artifacts; seconds spent per service (0 when cached)."""
    spent = {}
    with _lock(settings):
        for svc in services_for(settings, only):
            if svc.disabled():
                continue
            t0 = time.monotonic()
            try:
                svc.install()
            except ServiceError as exc:
                if svc.off_switch is None:
                    raise
                raise ServiceError(f"{exc} (to run without it, set {svc.off_switch})") from None
            spent[svc.name] = time.monotonic() - t0
    return spent


def purge(settings: Settings, only: Iterable[str] | None = None) -> list[Path]:
    """Stop the services and delete their data (what :meth:`Service.data_paths` names)."""
    with _lock(settings):
        _down_locked(settings, only, DEFAULT_STOP_TIMEOUT_S)
        removed = []
        for svc in services_for(settings, only):
            if not svc.is_local:
                continue
            for path in svc.data_paths():
                if path.exists():
                    shutil.rmtree(path)
                    removed.append(path)
        return removed
