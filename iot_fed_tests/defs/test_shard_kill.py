"""kill -9 of one shard run's process in a round of two shards, under Dagster's stock
``DefaultRunLauncher`` (each run its own ``dagster api execute_run`` process) and the real
``dagster-daemon``, on real Kafka and MongoDB (issue #26).

Dagster's code server sees its run process die by SIGKILL and fails the run; the round
then has ended: it aggregates the other shard, and its global version records the killed
shard (failed; missing had the round's deadline come first). The daemon's own run retries
are off here, so the sensor's mechanism is what is tested: the killed run stored nothing
and advanced no trained-through count, so the next round retrains the shard's devices.
(A run left STARTED with nobody to report it, the daemon's whole process tree killed, is
aggregated without at the round's deadline: test_sensor.py.)
"""

from __future__ import annotations

import os
import re
import signal

import dagster as dg
import pytest
import yaml

from iot_fed.config import get_settings
from iot_fed.services.dagster_instance import RunLauncher
from iot_fed.store import repository as repo
from iot_fed_tests.defs.daemon import training_runs, wait_for
from iot_fed_tests.defs.helpers import diurnal_readings
from iot_fed_tests.stream.helpers import produce_readings

pytestmark = [pytest.mark.services, pytest.mark.slow]
DEVICES, PER_DEVICE = 4, 40
PID = re.compile(r"Started process for run \(pid: (\d+)\)")


@pytest.fixture
def run_launcher() -> RunLauncher:
    return "default"


def worker_pid(instance: dg.DagsterInstance, shard: str) -> int | None:
    """The process of ``shard``'s run once its ``local_model`` step started (from the
    run's engine event that names it)."""
    for run in training_runs(instance):
        if run.tags.get("dagster/partition") != shard or run.status != dg.DagsterRunStatus.STARTED:
            continue
        if not instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_START):
            continue
        for event in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
            found = PID.search(event.message or "")
            if found:
                return int(found.group(1))
    return None


def test_a_killed_shard_run_is_left_out_then_retrained(
    pipeline_env: dict, settings, daemon_home, monkeypatch: pytest.MonkeyPatch
) -> None:
    daemon, instance = daemon_home
    db, topic = pipeline_env["db"], pipeline_env["topic"]
    monkeypatch.setenv("IOT_FED_DEVICES_PER_SHARD", "2")
    monkeypatch.setenv("IOT_FED_ROUND_DEADLINE_S", "150")
    monkeypatch.setenv("IOT_FED_TRAINING_RUN_MAX_RUNTIME_S", "300")
    get_settings.cache_clear()
    config = daemon.home / "dagster.yaml"
    doc = yaml.safe_load(config.read_text())
    doc["run_retries"] = {"enabled": False}
    config.write_text(yaml.safe_dump(doc))
    daemon.start()
    produce_readings(settings, topic, diurnal_readings(DEVICES, PER_DEVICE))

    pid = wait_for("shard-0001's step", lambda: worker_pid(instance, "shard-0001"), daemon, 240)
    os.kill(int(pid), signal.SIGKILL)

    first = wait_for("a global version", lambda: repo.latest_global_model(db), daemon, 400)
    rnd = first["metrics"]["round"]
    assert rnd["shards_included"] == ["shard-0000"]
    assert rnd["shards_missing"] + rnd["shards_failed"] == ["shard-0001"]
    assert sorted(x["device"] for x in first["lineage"]) == ["1", "2"]

    def retrained():
        latest = repo.latest_global_model(db)
        return latest if latest and latest["version"] > first["version"] else None

    second = wait_for("the next round's version", retrained, daemon, 600)
    assert second["metrics"]["round"]["shards_included"] == ["shard-0001"]
    assert sorted(x["device"] for x in second["lineage"]) == ["3", "4"]
    runs = [r for r in training_runs(instance) if r.tags["dagster/partition"] == "shard-0001"]
    statuses = sorted(r.status.value for r in runs)
    assert statuses == ["FAILURE", "SUCCESS"], "the killed run failed, then its shard retrained"
    assert {d: db.local_models.count_documents({"device": d}) for d in "1234"} == dict.fromkeys(
        "1234", 1
    ), "each device trained once: the killed run stored nothing"
