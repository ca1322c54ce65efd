"""WarmRunLauncher: runs forked from the preloaded forkserver, on a real (SQLite) instance.

What each test pins: a launched run executes in a forked worker that already holds the
preloaded modules, and succeeds; terminate cancels a running run (SIGTERM -> Dagster's
interrupt); a worker killed with kill -9 is reported FAILED by the health check that run
monitoring uses (so the run is failed and retried, never left STARTED); the coordinator warms
the forkserver only inside dagster-daemon.
"""

import json
import os
import signal
import time
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._core.launcher import LaunchRunContext, WorkerStatus

from iot_fed.defs.launcher import WORKER_TAG, WarmRunLauncher, _in_daemon
from iot_fed_tests.defs import launcher_jobs

# every test forks run workers from a preloaded server and waits for them: seconds each
pytestmark = pytest.mark.slow


@pytest.fixture
def instance(tmp_path: Path):
    (tmp_path / "dagster.yaml").write_text(
        yaml.safe_dump(
            {
                "telemetry": {"enabled": False},
                "run_launcher": {
                    "module": "iot_fed.defs.launcher",
                    "class": "WarmRunLauncher",
                    "config": {
                        "preload_modules": [
                            "dagster._cli.api",
                            "iot_fed_tests.defs.launcher_jobs",
                            "colorsys",
                        ]
                    },
                },
            }
        )
    )
    with dg.DagsterInstance.from_config(str(tmp_path)) as inst:
        yield inst


def launch(instance: dg.DagsterInstance, job: dg.JobDefinition) -> dg.DagsterRun:
    origin = dg.reconstructable(getattr(launcher_jobs, job.name)).get_python_origin()
    run = instance.create_run_for_job(job_def=job, job_code_origin=origin)
    instance.run_launcher.launch_run(LaunchRunContext(dagster_run=run, workspace=None))
    return instance.get_run_by_id(run.run_id)


def wait_for(instance: dg.DagsterInstance, run_id: str, statuses, timeout: float = 90):
    deadline = time.time() + timeout
    while time.time() < deadline:
        run = instance.get_run_by_id(run_id)
        if run.status in statuses:
            return run
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} still {run.status} after {timeout} s")


def test_a_launched_run_executes_in_a_preloaded_fork(instance) -> None:
    launcher = instance.run_launcher
    assert isinstance(launcher, WarmRunLauncher)
    run = launch(instance, launcher_jobs.preloaded_job)
    worker = json.loads(run.tags[WORKER_TAG])
    assert worker["pid"] != os.getpid()
    done = wait_for(
        instance, run.run_id, {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE}
    )
    assert done.status == dg.DagsterRunStatus.SUCCESS  # the op raises unless colorsys preloaded
    logs = [e.user_message for e in instance.all_logs(run.run_id)]
    assert any("preloaded colorsys: True" in m for m in logs)
    deadline = time.time() + 60  # the worker process exits after reporting success
    while launcher.check_run_worker_health(done).status == WorkerStatus.RUNNING:
        assert time.time() < deadline, "the finished run's worker never exited"
        time.sleep(0.2)
    assert launcher.check_run_worker_health(done).status == WorkerStatus.SUCCESS
    # a second run forks from the same warm server: colorsys is preloaded there too
    again = launch(instance, launcher_jobs.preloaded_job)
    assert wait_for(instance, again.run_id, {dg.DagsterRunStatus.SUCCESS}).status == (
        dg.DagsterRunStatus.SUCCESS
    )
    again_logs = [e.user_message for e in instance.all_logs(again.run_id)]
    assert any("preloaded colorsys: True" in m for m in again_logs)


def test_terminate_cancels_a_running_run(instance) -> None:
    run = launch(instance, launcher_jobs.sleepy_job)
    wait_for(instance, run.run_id, {dg.DagsterRunStatus.STARTED})
    assert instance.run_launcher.check_run_worker_health(run).status == WorkerStatus.RUNNING
    assert instance.run_launcher.terminate(run.run_id)
    done = wait_for(instance, run.run_id, {dg.DagsterRunStatus.CANCELED})
    assert done.status == dg.DagsterRunStatus.CANCELED
    assert not instance.run_launcher.terminate(run.run_id)  # finished: nothing to terminate


def test_a_worker_killed_with_kill9_is_reported_failed(instance) -> None:
    run = launch(instance, launcher_jobs.sleepy_job)
    wait_for(instance, run.run_id, {dg.DagsterRunStatus.STARTED})
    pid = json.loads(run.tags[WORKER_TAG])["pid"]
    os.kill(pid, signal.SIGKILL)
    deadline = time.time() + 10
    while time.time() < deadline:
        health = instance.run_launcher.check_run_worker_health(instance.get_run_by_id(run.run_id))
        if health.status != WorkerStatus.RUNNING:
            break
        time.sleep(0.1)
    assert health.status == WorkerStatus.FAILED and str(pid) in health.msg
    # the run itself still says STARTED: run monitoring fails it from this health result
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED


def test_only_the_daemon_process_warms_the_forkserver(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util
    import sys

    assert not _in_daemon()  # pytest is not the daemon
    monkeypatch.setattr(sys, "argv", ["/venv/bin/dagster-daemon", "run"])
    assert _in_daemon()
    monkeypatch.setattr(sys, "argv", ["/x/dagster/_daemon/__main__.py", "run"])
    spec = importlib.util.spec_from_loader("dagster._daemon.__main__", loader=None)
    monkeypatch.setattr(sys.modules["__main__"], "__spec__", spec, raising=False)
    assert _in_daemon()  # how `dagster dev` (make run) starts it
