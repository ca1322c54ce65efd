"""Produce readings -> sensor tick -> training run -> aggregation sensor -> promoted version."""

from __future__ import annotations

import dagster as dg

from iot_fed.definitions import defs
from iot_fed.defs.sensors import aggregation_sensor
from iot_fed.store import repository as repo
from iot_fed_tests.defs.test_models import ASSETS, diurnal_readings
from iot_fed_tests.defs.test_sensor import tick
from iot_fed_tests.stream.helpers import produce_readings


def test_stream_to_promoted_global_version(pipeline_env, instance, settings):
    env, db = pipeline_env, pipeline_env["db"]
    produce_readings(settings, env["topic"], diurnal_readings(4, 120))

    data = tick(instance, env["resources"], None)
    assert len(data.run_requests) == 1
    req = data.run_requests[0]
    train = dg.materialize(
        ASSETS,
        instance=instance,
        resources=env["resources"],
        selection=req.asset_selection,
        tags=req.tags,
    )
    assert train.success
    assert sorted(db.local_models.distinct("device")) == ["1", "2", "3", "4"]
    assert all(d["metrics"]["kafka_offsets"] for d in db.local_models.find())

    with dg.build_sensor_context(
        instance=instance, definitions=defs, resources=env["resources"]
    ) as ctx:
        agg_req = aggregation_sensor.evaluate_tick(ctx).run_requests
    assert len(agg_req) == 1
    job = defs.resolve_job_def("aggregate_global_model")
    assert job.execute_in_process(instance=instance, resources=env["resources"]).success

    promoted = repo.promoted_global_model(db)
    assert promoted is not None and promoted["version"] == 1
    assert len(promoted["lineage"]) == 4
    assert len(instance.get_runs()) == 2, "one federated round = two runs"
