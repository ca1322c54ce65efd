"""kill -9 of the Dagster daemon during a training run, under the real ``dagster-daemon``
on real Kafka and MongoDB (issue #13).

Two batches of readings are produced (and landed by an ingester); the first one's
shard run (the fleet is one shard) is in its ``local_model`` step when the daemon is
killed. After a restart, the sensor's cursor and the run keys still give exactly one
successful training per batch, every reading is landed exactly once, and every device has
one local model per batch:

- daemon only: the run worker survives its launcher and finishes the run;
- the daemon's whole process tree (daemon, code server, run worker): the run is left
  STARTED with nobody to finish it; run monitoring fails it once it is older than its
  ``dagster/max_runtime`` tag, ``run_retries`` re-executes it (the retry carries its
  round's tag), and meanwhile the sensor holds the round open instead of launching a
  second training.
"""

from __future__ import annotations

import dagster as dg
import pytest

from iot_fed.store import repository as repo
from iot_fed_tests.defs.daemon import settled, training_runs, wait_for
from iot_fed_tests.defs.helpers import diurnal_readings
from iot_fed_tests.stream.helpers import produce_readings

pytestmark = [pytest.mark.services, pytest.mark.slow]
DEVICES, PER_DEVICE = 8, 40


def local_model_step_running(instance: dg.DagsterInstance) -> bool:
    for run in training_runs(instance):
        if run.status != dg.DagsterRunStatus.STARTED:
            continue
        events = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_START)
        if events:
            return True
    return False


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
    # the round's aggregation is its own run, requested once the shard run ended
    wait_for("a promoted version", lambda: repo.promoted_global_model(db), daemon, 240)
