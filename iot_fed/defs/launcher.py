"""``WarmRunLauncher``: each Dagster run in a process forked from a warm forkserver.

Dagster's default launcher has the code server *spawn* a fresh interpreter per run, which
imports Dagster, the definitions, JAX, optax and the store again on the critical path of
every federated round (seconds: ``bench/bench_round.py``, docs/performance.md). It is an
optional local speed-up: the code runs under Dagster's stock launchers too. Here a
``multiprocessing`` forkserver imports the modules named
in ``preload_modules`` once; each run is a child forked from it that executes the body of
``dagster api execute_run`` (the entry point Dagster's container launchers run), so events,
statuses, run monitoring and retries stay Dagster's own. The forkserver only imports: JAX
initialises its backend in the forked run, never before the fork.

- **Warm start:** ``WarmQueuedRunCoordinator`` (Dagster's queued coordinator, same config)
  starts the forkserver in the background as soon as ``dagster-daemon`` loads the instance,
  so the first run is warm too; any other process starts it on its first launch.
- **Termination:** SIGTERM to the worker (Dagster maps it to an interrupt; the run ends
  CANCELED), from any process on this host: the worker's pid is a run tag.
- **Run monitoring:** the tag also carries the worker's start time; a STARTED run whose worker
  is gone (killed with the daemon's process group, say) is reported FAILED at once, so the
  monitoring daemon fails it and ``run_retries`` re-executes it.
- **Shutdown:** like the default launcher's code server, a stopping daemon waits for the runs
  it launched (``multiprocessing`` joins its children); a daemon killed with kill -9 leaves
  them running to completion.

Configured in ``scripts/dagster.yaml`` (``run_launcher``); throwaway test instances keep
Dagster's default.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import socket
import sys
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from dagster import Array, DagsterInstance, Field, QueuedRunCoordinator
from dagster._core.launcher import (
    CheckRunHealthResult,
    LaunchRunContext,
    RunLauncher,
    WorkerStatus,
)
from dagster._core.storage.dagster_run import DagsterRun
from dagster._grpc.types import ExecuteRunArgs
from dagster._serdes import ConfigurableClass, ConfigurableClassData, serialize_value

from iot_fed.services.process import ProcessRecord, describe_process, is_alive

WORKER_TAG = "iot_fed/run_worker"
"""JSON: host, pid and start time (clock ticks) of the process executing the run."""
ENTRY_POINT_MODULES = ("dagster", "dagster._cli.api")
"""Always preloaded (the worker's entry point), before the configured ``preload_modules``."""


def execute_run(input_json: str) -> None:
    """The run worker (in the forked child): ``dagster api execute_run``'s own body."""
    from dagster._cli.api import execute_run_command

    execute_run_command.callback(input_json=input_json, compressed_input_json=None)


class WarmRunLauncher(RunLauncher, ConfigurableClass):
    """Launches runs as children of a forkserver that preloaded ``preload_modules``."""

    def __init__(
        self,
        preload_modules: Sequence[str] = (),
        inst_data: ConfigurableClassData | None = None,
    ) -> None:
        self._inst_data = inst_data
        self._preload = list(dict.fromkeys([*ENTRY_POINT_MODULES, *preload_modules]))
        self._ctx: Any = None
        self._lock = threading.Lock()
        self._children: dict[str, multiprocessing.process.BaseProcess] = {}
        super().__init__()

    @property
    def inst_data(self) -> ConfigurableClassData | None:
        return self._inst_data

    @classmethod
    def config_type(cls) -> dict[str, Field]:
        return {
            "preload_modules": Field(
                Array(str),
                is_required=False,
                default_value=[],
                description="modules the forkserver imports once, before any run is forked "
                "(besides Dagster's run entry point)",
            )
        }

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData, config_value: Mapping[str, Any]
    ) -> WarmRunLauncher:
        return cls(inst_data=inst_data, **config_value)

    # --- the forkserver ------------------------------------------------------------------
    def _context(self) -> Any:
        """The forkserver context, started (preloading) on first use; thread-safe."""
        with self._lock:
            if self._ctx is None:
                from multiprocessing import forkserver

                ctx = multiprocessing.get_context("forkserver")
                ctx.set_forkserver_preload(self._preload)
                forkserver.ensure_running()
                self._ctx = ctx
            return self._ctx

    def warm_up(self) -> None:
        """Start the forkserver in the background (imports take seconds; nothing waits)."""
        if self._ctx is None:
            threading.Thread(target=self._context, name="warm-run-launcher", daemon=True).start()

    # --- RunLauncher ---------------------------------------------------------------------
    def launch_run(self, context: LaunchRunContext) -> None:
        run = context.dagster_run
        if run.job_code_origin is None:
            raise ValueError(f"run {run.run_id} has no job code origin to execute")
        args = ExecuteRunArgs(
            job_origin=run.job_code_origin,
            run_id=run.run_id,
            instance_ref=self._instance.get_ref(),
            set_exit_code_on_failure=True,
        )
        proc = self._context().Process(
            target=execute_run, args=(serialize_value(args),), name=f"run-{run.run_id[:8]}"
        )
        proc.start()
        assert proc.pid is not None
        rec = describe_process("run_worker", proc.pid)
        worker = {"host": socket.gethostname(), "pid": rec.pid, "start_ticks": rec.start_ticks}
        self._instance.add_run_tags(run.run_id, {WORKER_TAG: json.dumps(worker)})
        self._children = {k: p for k, p in self._children.items() if p.is_alive()}
        self._children[run.run_id] = proc

    def _worker(self, run: DagsterRun) -> ProcessRecord | None:
        """The run's worker process on this host, None when unknown (or on another host)."""
        raw = run.tags.get(WORKER_TAG)
        if not raw:
            return None
        w = json.loads(raw)
        if w.get("host") != socket.gethostname():
            return None
        # pid + start time identify it (no command line recorded: is_alive skips that check)
        return ProcessRecord("run_worker", int(w["pid"]), int(w["start_ticks"]), [], "", 0.0)

    def terminate(self, run_id: str) -> bool:
        run = self._instance.get_run_by_id(run_id)
        if run is None or run.is_finished:
            return False
        worker = self._worker(run)
        if worker is None or not is_alive(worker):
            return False
        self._instance.report_run_canceling(run)
        os.kill(worker.pid, signal.SIGTERM)
        return True

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        worker = self._worker(run)
        if worker is None:
            return CheckRunHealthResult(WorkerStatus.UNKNOWN, "no run worker recorded here")
        if is_alive(worker):
            return CheckRunHealthResult(WorkerStatus.RUNNING, run_worker_id=str(worker.pid))
        proc = self._children.get(run.run_id)
        if proc is not None and proc.exitcode == 0:
            return CheckRunHealthResult(WorkerStatus.SUCCESS, run_worker_id=str(worker.pid))
        return CheckRunHealthResult(
            WorkerStatus.FAILED,
            f"run worker process {worker.pid} is gone",
            run_worker_id=str(worker.pid),
        )

    def dispose(self) -> None:
        self._children.clear()


class WarmQueuedRunCoordinator(QueuedRunCoordinator):
    """Dagster's queued run coordinator (same config: ``max_concurrent_runs``,
    ``tag_concurrency_limits``, ...) which, inside ``dagster-daemon``, warms the instance's
    :class:`WarmRunLauncher` when the daemon loads the instance."""

    def register_instance(self, instance: DagsterInstance) -> None:
        super().register_instance(instance)
        launcher = instance.run_launcher
        if isinstance(launcher, WarmRunLauncher) and _in_daemon():
            launcher.warm_up()


def _in_daemon() -> bool:
    """The Dagster daemon process itself: ``dagster-daemon run``, or ``python -m
    dagster._daemon run`` as ``dagster dev`` starts it (never one of its forked workers,
    which inherit its argv)."""
    if multiprocessing.parent_process() is not None:
        return False
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    as_module = spec is not None and spec.name.startswith("dagster._daemon")
    return as_module or os.path.basename(sys.argv[0]).startswith("dagster-daemon")
