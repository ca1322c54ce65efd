"""Detached processes with a PID state file that never mistakes a recycled PID for ours."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pwd
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path


class ServiceError(RuntimeError):
    """A local service could not be installed, started, stopped or reached."""


@dataclass(frozen=True)
class ProcessRecord:
    """What iot-fed remembers about a process it started."""

    name: str
    pid: int
    start_ticks: int
    cmdline: list[str]
    log: str
    started_at: float

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> ProcessRecord | None:
        try:
            return cls(**json.loads(path.read_text()))
        except (FileNotFoundError, json.JSONDecodeError, TypeError):
            return None


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks) from /proc, or None if no such process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = raw[raw.rindex(")") + 2 :].split()  # fields after "pid (comm) "
    return fields[0], int(fields[19])


def _proc_cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _reap(pid: int) -> None:
    """Collect a zombie if it is our child (no-op otherwise)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def is_alive(record: ProcessRecord) -> bool:
    """True only if ``record.pid`` is still the very process we started (not a recycled PID)."""
    stat = _proc_stat(record.pid)
    if stat is None or stat[1] != record.start_ticks:
        return False
    if stat[0] in ("Z", "X"):
        _reap(record.pid)
        return False
    cmdline = _proc_cmdline(record.pid)
    # empty: unreadable right now, or not recorded (pid + start time identify the process)
    return not cmdline or not record.cmdline or cmdline == record.cmdline


def read_pid_alive(pid_file: Path) -> bool:
    """True when a server's pid file (the pid on its first line) names a live process."""
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return False
    stat = _proc_stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def current_process(name: str) -> ProcessRecord:
    """A record describing the calling process (used for session leases)."""
    return describe_process(name, os.getpid())


def describe_process(name: str, pid: int) -> ProcessRecord:
    """A record of the running process ``pid`` (start time and command line from /proc)."""
    stat = _proc_stat(pid)
    return ProcessRecord(
        name=name,
        pid=pid,
        start_ticks=stat[1] if stat else -1,
        cmdline=_proc_cmdline(pid),
        log="",
        started_at=time.time(),
    )


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def start_detached(
    name: str,
    cmd: Sequence[str],
    log: Path,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    user: str | None = None,
) -> ProcessRecord:
    """Start ``cmd`` in its own session, output appended to ``log``; it outlives the caller.

    ``user``: run as that system user (and its group); needs root.
    """
    as_user = {"user": user, "group": _user_group(user), "extra_groups": []} if user else {}
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        out.write(f"\n=== iot-fed start {time.strftime('%Y-%m-%d %H:%M:%S')} ===\n".encode())
        out.flush()
        proc = subprocess.Popen(
            list(cmd),
            cwd=cwd,
            env={**os.environ, **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            **as_user,
        )
    # The start time is fixed at fork; /proc/<pid>/cmdline may still be half-written by
    # execve at this instant, so remember the argv we passed (it is what exec installs).
    stat = _proc_stat(proc.pid)
    return ProcessRecord(
        name=name,
        pid=proc.pid,
        start_ticks=stat[1] if stat else -1,
        cmdline=list(cmd),
        log=str(log),
        started_at=time.time(),
    )


def _user_group(user: str) -> int:
    try:
        return pwd.getpwnam(user).pw_gid
    except KeyError:
        raise ServiceError(f"no system user {user!r} to run the service as") from None


KILL_WAIT_S = 10.0


def wait_or_kill(alive: Callable[[], bool], kill: Callable[[], None], grace_s: float) -> None:
    """Wait up to ``grace_s`` for ``alive()`` to turn False (a stop signal was sent); then
    ``kill()`` and wait a little more. The one "terminate, then kill" of the project."""
    deadline = time.monotonic() + grace_s
    while alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    if not alive():
        return
    kill()
    deadline = time.monotonic() + KILL_WAIT_S
    while alive() and time.monotonic() < deadline:
        time.sleep(0.1)


def stop(
    record: ProcessRecord, timeout: float = 30.0, sig: signal.Signals = signal.SIGTERM
) -> bool:
    """``sig`` to our process (its session group), wait, then SIGKILL. False if not running."""
    if not is_alive(record):
        return False
    _signal(record, sig)
    wait_or_kill(lambda: is_alive(record), lambda: _signal(record, signal.SIGKILL), timeout)
    return True


def _signal(record: ProcessRecord, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        if os.getpgid(record.pid) == record.pid:  # we made it a session/group leader
            os.killpg(record.pid, sig)
        else:
            os.kill(record.pid, sig)


def log_tail(log: Path, lines: int = 20) -> str:
    """The last lines of ``log`` written since the most recent iot-fed start marker."""
    try:
        text = log.read_text(errors="replace")
    except FileNotFoundError:
        return "(no log)"
    text = text.rsplit("=== iot-fed start", 1)[-1].split("\n", 1)[-1]
    return "\n".join(text.strip().splitlines()[-lines:]) or "(empty log)"


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock so two ``up``/``down`` calls do not race."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
