"""The real ``dagster-daemon`` for the tests that run rounds under it: the process, waiting
on it, and the training runs it launched."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import dagster as dg

from iot_fed.defs.assets.models import local_model

DAGSTER_DAEMON = str(Path(sys.executable).with_name("dagster-daemon"))


class Daemon:
    """One ``dagster-daemon run -m iot_fed.definitions`` in its own process group."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        log = open(self.home / "daemon.log", "a")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            [DAGSTER_DAEMON, "run", "-m", "iot_fed.definitions"],
            env=dict(os.environ),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()

    def kill9(self, *, tree: bool) -> None:
        assert self.proc is not None
        if tree:
            os.killpg(self.proc.pid, signal.SIGKILL)
        else:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)

    def runs(self) -> list[dg.DagsterRun]:
        with dg.DagsterInstance.get() as instance:
            return list(instance.get_runs())

    def log_tail(self) -> str:
        return (self.home / "daemon.log").read_text()[-4000:]


def wait_for(what: str, pred: Callable[[], object], daemon: Daemon, timeout: float) -> object:
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.5)
    runs = [(r.run_id[:8], r.job_name, r.status.value, r.asset_selection) for r in daemon.runs()]
    raise AssertionError(f"timed out waiting for {what}; runs {runs}; log:\n{daemon.log_tail()}")


def training_runs(instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
    return [r for r in instance.get_runs() if local_model.key in (r.asset_selection or ())]


def settled(instance: dg.DagsterInstance, successes: int) -> bool:
    """``successes`` training runs succeeded and no training or aggregation is in flight
    (the evaluation reports the promotions trigger may still run)."""
    runs = [r for r in instance.get_runs() if r.job_name != "evaluation_report_job"]
    done = [r for r in training_runs(instance) if r.status == dg.DagsterRunStatus.SUCCESS]
    return len(done) >= successes and all(r.is_finished for r in runs)
