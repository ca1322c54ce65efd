"""Produce readings -> ingester -> sensor tick -> ONE run (train, aggregate, check,
promote) -> promoted."""

from __future__ import annotations

import dagster as dg

from iot_fed.config import get_settings
from iot_fed.definitions import defs
from iot_fed.store import repository as repo
from iot_fed_tests.defs.helpers import ASSETS, diurnal_readings, tick
from iot_fed_tests.stream.helpers import ingest_all, produce_readings


def test_stream_to_promoted_global_version(pipeline_env, instance, settings):
    env, db = pipeline_env, pipeline_env["db"]
    produce_readings(settings, env["topic"], diurnal_readings(4, 120))
    ingest_all(get_settings(), db, 4 * 120)

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
    checks = {e.check_name: e.passed for e in train.get_asset_check_evaluations()}
    assert checks == {"params_finite_loss_not_diverging": True, "not_worse_than_promoted": True}

    promoted = repo.promoted_global_model(db)
    assert promoted is not None and promoted["version"] == 1
    assert len(promoted["lineage"]) == 4
    assert len(instance.get_runs()) == 1, "one federated round = one run"

    definitions = defs()
    with dg.build_sensor_context(instance=instance, definitions=definitions) as ctx:
        later = definitions.get_sensor_def("aggregation_sensor").evaluate_tick(ctx)
    assert later.run_requests == [], "aggregated already in the training run"
