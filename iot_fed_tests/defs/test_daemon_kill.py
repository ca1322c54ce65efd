"""kill -9 of the Dagster daemon during a training run, under the real ``dagster-daemon``
on real Kafka and MongoDB (issue #13).

Two batches of readings are produced (and landed by an ingester); the first one's
training run is in its ``local_model`` step when the daemon is killed. After a restart,
the sensor's cursor and the run keys still give exactly one successful training per batch,
every reading is landed exactly once, and every device has one local model per batch:

- daemon only: the run worker survives its launcher and finishes the run;
- the daemon's whole process tree (daemon, code server, run worker): the run is left
  STARTED with nobody to finish it; run monitoring fails it once it is older than its
  ``dagster/max_runtime`` tag, ``run_retries`` re-executes it, and meanwhile the sensor
  holds the ready devices instead of launching a second training.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import dagster as dg
import pytest
import yaml

from iot_fed.defs.assets.models import local_model
from iot_fed.services.dagster_instance import base_document
from iot_fed.store import repository as repo
from iot_fed_tests.defs.helpers import diurnal_readings
from iot_fed_tests.stream.helpers import produce_readings

pytestmark = [pytest.mark.services, pytest.mark.slow]
DEVICES, PER_DEVICE = 8, 40
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


@pytest.fixture
def daemon_home(
    pipeline_env: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Daemon, dg.DagsterInstance]]:
    """A throwaway instance (the project's dagster.yaml, monitoring polled every 2 s) and a
    daemon for it; the daemon's process group is stopped after the test."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    doc = base_document()
    doc["run_monitoring"] = {**doc.get("run_monitoring", {}), "poll_interval_seconds": 2}
    (home / "dagster.yaml").write_text(yaml.safe_dump(doc))
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("IOT_FED_SENSOR_INTERVAL_S", "2")
    monkeypatch.setenv("IOT_FED_AGGREGATION_INTERVAL_S", "2")
    monkeypatch.setenv("IOT_FED_TRAINING_RUN_MAX_RUNTIME_S", "120")
    daemon = Daemon(home)
    # the ingestion consumer group (one member) lands the readings the sensor triggers on
    ingester = subprocess.Popen(
        [str(Path(sys.executable).with_name("iot-fed")), "ingest", "--name", "test"],
        env=dict(os.environ),
        stdout=open(home / "ingester.log", "wb"),  # noqa: SIM115 - closed with the process
        stderr=subprocess.STDOUT,
    )
    with dg.DagsterInstance.get() as instance:
        try:
            yield daemon, instance
        finally:
            daemon.stop()
            ingester.terminate()
            ingester.wait(60)


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


def local_model_step_running(instance: dg.DagsterInstance) -> bool:
    for run in training_runs(instance):
        if run.status != dg.DagsterRunStatus.STARTED:
            continue
        events = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_START)
        if events:
            return True
    return False


def settled(instance: dg.DagsterInstance, successes: int) -> bool:
    """``successes`` training runs succeeded and no training or aggregation is in flight
    (the evaluation reports the promotions trigger may still run)."""
    runs = [r for r in instance.get_runs() if r.job_name != "evaluation_report_job"]
    done = [r for r in training_runs(instance) if r.status == dg.DagsterRunStatus.SUCCESS]
    return len(done) >= successes and all(r.is_finished for r in runs)


@pytest.mark.parametrize("tree", [False, True], ids=["daemon", "daemon-and-run-worker"])
def test_daemon_killed_during_a_training_run_trains_each_batch_once(
    pipeline_env: dict, settings, daemon_home, tree: bool
) -> None:
    daemon, instance = daemon_home
    db, topic = pipeline_env["db"], pipeline_env["topic"]
    daemon.start()
    produce_readings(settings, topic, diurnal_readings(DEVICES, PER_DEVICE))
    wait_for("the first training step", lambda: local_model_step_running(instance), daemon, 180)

    daemon.kill9(tree=tree)
    daemon.start()
    wait_for("batch 1 trained", lambda: settled(instance, 1), daemon, 420)
    produce_readings(settings, topic, diurnal_readings(DEVICES, PER_DEVICE, start_epoch=1000))
    wait_for("batch 2 trained", lambda: settled(instance, 2), daemon, 240)

    runs = training_runs(instance)
    succeeded = [r for r in runs if r.status == dg.DagsterRunStatus.SUCCESS]
    assert len(succeeded) == 2, [(r.run_id, r.status, r.tags) for r in runs]
    # one run key per batch; a retry of the killed run carries its parent's key
    assert len({r.tags["dagster/run_key"] for r in runs}) == 2
    if tree:
        failed = [r for r in runs if r.status == dg.DagsterRunStatus.FAILURE]
        assert len(failed) == 1, "the orphaned run was failed by run monitoring"
        retry = next(r for r in succeeded if r.tags.get("dagster/parent_run_id"))
        assert retry.tags["dagster/parent_run_id"] == failed[0].run_id
    else:
        assert len(runs) == 2, "the run worker outlived its daemon and finished the run"

    docs = db.sensor_readings.find({}, {"moteid": 1, "epoch": 1})
    keys = [(d["moteid"], d["epoch"]) for d in docs]
    assert len(keys) == 2 * DEVICES * PER_DEVICE and len(set(keys)) == len(keys), "0 lost, 0 dup"
    motes = [str(m) for m in range(1, DEVICES + 1)]
    per_device = {m: db.local_models.count_documents({"device": m}) for m in motes}
    assert per_device == dict.fromkeys(motes, 2), "one local model per device per batch"
    assert repo.promoted_global_model(db) is not None
