"""A small process supervisor: start each child, restart it with backoff when it dies,
log it under ``<data_dir>/logs/<name>.log``, stop all on Ctrl-C / SIGTERM.

A child is a :class:`Child` (name + argv); :func:`iot_fed.runner.main_job.children` lists
the main job's, so supervising one more process is one more line there.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from iot_fed.services.process import wait_or_kill

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Child:
    """One supervised process."""

    name: str
    argv: Sequence[str]
    env: dict[str, str] = field(default_factory=dict)
    restart: bool = True  # restart when it exits (with backoff)
    stop_grace_s: float = 15.0
    stop_signal: int = signal.SIGTERM  # e.g. SIGINT for `dagster dev`, which then cleans up
    niceness: int = 0  # added to ours: batch work yields the CPU to the live path


@dataclass
class _Running:
    child: Child
    proc: subprocess.Popen | None = None
    restarts: int = 0
    next_start: float = 0.0
    started_at: float = 0.0


class Supervisor:
    """Run children until :meth:`stop`; backoff doubles from ``backoff_s`` to ``max_backoff_s``
    and resets after a child has stayed up ``stable_s``."""

    def __init__(
        self,
        children: Sequence[Child],
        log_dir: Path,
        *,
        backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        stable_s: float = 60.0,
    ) -> None:
        self.log_dir = log_dir
        self.backoff_s, self.max_backoff_s, self.stable_s = backoff_s, max_backoff_s, stable_s
        self.running = [_Running(c) for c in children]
        self.stopping = threading.Event()

    def _start(self, r: _Running) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        out = open(self.log_dir / f"{r.child.name}.log", "ab")  # noqa: SIM115 (child owns it)
        r.proc = subprocess.Popen(
            list(r.child.argv),
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **r.child.env},
            start_new_session=True,  # Ctrl-C reaches us, not the children directly
            preexec_fn=(lambda: os.nice(r.child.niceness)) if r.child.niceness else None,
        )
        out.close()
        r.started_at = time.monotonic()
        log.info("started %s (pid %d, log %s)", r.child.name, r.proc.pid, out.name)

    def poll(self) -> None:
        """Start children that are due; schedule restarts for the ones that exited."""
        now = time.monotonic()
        for r in self.running:
            if r.proc is None:
                if now >= r.next_start:
                    self._start(r)
                continue
            code = r.proc.poll()
            if code is None:
                continue
            up = now - r.started_at
            _reap_group(r.proc, r.child.name)
            r.proc = None
            if not r.child.restart:
                log.info("%s exited with %d", r.child.name, code)
                r.next_start = float("inf")
                continue
            if up >= self.stable_s:
                r.restarts = 0
            delay = min(self.max_backoff_s, self.backoff_s * 2**r.restarts)
            r.restarts += 1
            r.next_start = now + delay
            log.warning(
                "%s exited with %d after %.0fs; restart in %.0fs", r.child.name, code, up, delay
            )

    def pids(self) -> dict[str, int | None]:
        return {r.child.name: None if r.proc is None else r.proc.pid for r in self.running}

    def run(self, interval_s: float = 0.5) -> None:
        """Supervise until SIGINT/SIGTERM or :meth:`stop`, then stop every child."""
        handlers = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                handlers[sig] = signal.signal(sig, lambda *_: self.stopping.set())
        try:
            while not self.stopping.is_set():
                self.poll()
                self.stopping.wait(interval_s)
        finally:
            self.shutdown()
            for sig, h in handlers.items():
                signal.signal(sig, h)

    def stop(self) -> None:
        self.stopping.set()

    def shutdown(self) -> None:
        """Signal every child's process group (reverse order), SIGKILL after its grace."""
        live = [r for r in reversed(self.running) if r.proc is not None and r.proc.poll() is None]
        for r in live:
            log.info("stopping %s (pid %d)", r.child.name, r.proc.pid)
            _signal_group(r.proc, r.child.stop_signal)
        for r in live:
            proc = r.proc

            def kill(r: _Running = r, proc: subprocess.Popen = proc) -> None:
                log.warning("%s did not stop in %.0fs; killing", r.child.name, r.child.stop_grace_s)
                _signal_group(proc, signal.SIGKILL)

            wait_or_kill(lambda proc=proc: proc.poll() is None, kill, r.child.stop_grace_s)
            proc.wait()
            _reap_group(proc, r.child.name)
            r.proc = None


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _reap_group(proc: subprocess.Popen, name: str, grace_s: float = 5.0) -> None:
    """After a child's leader exited: stop what is left of its process group (SIGTERM, then
    SIGKILL after ``grace_s``). E.g. a Spark JVM whose run worker died while starting it
    (its driver gone before the gateway was up) stays alive for ever otherwise."""
    if not _group_alive(proc.pid):
        return
    log.warning("%s: stopping processes left in its group after it exited", name)
    _signal_group(proc, signal.SIGTERM)
    wait_or_kill(
        lambda: _group_alive(proc.pid), lambda: _signal_group(proc, signal.SIGKILL), grace_s
    )
