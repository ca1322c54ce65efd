"""A federated round under Dagster's stock ``DefaultRunLauncher`` and
``QueuedRunCoordinator`` (issue #26): the real ``dagster-daemon``, each run a fresh
``dagster api execute_run`` process spawned by the code server, on real Kafka and MongoDB.

Readings of a few devices are produced and landed by an ingester; the stream sensor's
round queues one shard run (the fleet is one shard), then one aggregation run (aggregate,
check, promote); the queue starts them; a global version is promoted and records its
round's shard. Nothing of the project's ``WarmRunLauncher`` is loaded (its run tag is
absent).
"""

from __future__ import annotations

import dagster as dg
import pytest

from iot_fed.defs.partitions import ROUND_TAG
from iot_fed.services.dagster_instance import RunLauncher
from iot_fed.store import repository as repo
from iot_fed_tests.defs.daemon import settled, training_runs, wait_for
from iot_fed_tests.defs.helpers import diurnal_readings
from iot_fed_tests.stream.helpers import produce_readings

pytestmark = [pytest.mark.services, pytest.mark.slow]
DEVICES, PER_DEVICE = 4, 40
WARM_WORKER_TAG = "iot_fed/run_worker"  # what WarmRunLauncher tags its runs with


@pytest.fixture
def run_launcher() -> RunLauncher:
    return "default"


def test_a_round_runs_under_dagsters_stock_launcher_and_queue(
    pipeline_env: dict, settings, daemon_home
) -> None:
    daemon, instance = daemon_home
    assert type(instance.run_launcher) is dg.DefaultRunLauncher
    assert type(instance.run_coordinator) is dg.QueuedRunCoordinator
    db, topic = pipeline_env["db"], pipeline_env["topic"]
    daemon.start()
    produce_readings(settings, topic, diurnal_readings(DEVICES, PER_DEVICE))
    wait_for("a promoted version", lambda: repo.promoted_global_model(db), daemon, 300)
    wait_for("the round settled", lambda: settled(instance, 1), daemon, 120)

    (run,) = training_runs(instance)
    assert run.status == dg.DagsterRunStatus.SUCCESS
    assert run.tags["dagster/partition"] == "shard-0000", "a fleet of 4 is one shard"
    (agg,) = [r for r in instance.get_runs() if dg.AssetKey("promoted_model") in r.asset_selection]
    assert agg.status == dg.DagsterRunStatus.SUCCESS
    assert agg.tags[ROUND_TAG] == run.tags[ROUND_TAG], "the round's aggregation"
    for r in (run, agg):
        assert WARM_WORKER_TAG not in r.tags
        enqueued = instance.all_logs(r.run_id, of_type=dg.DagsterEventType.RUN_ENQUEUED)
        assert enqueued, "the run went through the queued coordinator"
    motes = [str(m) for m in range(1, DEVICES + 1)]
    assert sorted(db.local_models.distinct("device")) == motes
    promoted = repo.promoted_global_model(db)
    assert promoted["version"] == 1 and len(promoted["lineage"]) == DEVICES
    assert promoted["metrics"]["round"]["shards_included"] == ["shard-0000"]
