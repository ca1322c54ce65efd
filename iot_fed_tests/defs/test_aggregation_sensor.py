"""aggregation_sensor: one aggregation run per batch of new local models."""

from __future__ import annotations

import dagster as dg

from iot_fed.definitions import defs
from iot_fed.defs.sensors import aggregation_due


def evaluate(instance: dg.DagsterInstance, cursor: str | None):
    definitions = defs()
    sensor = definitions.get_sensor_def("aggregation_sensor")
    with dg.build_sensor_context(instance=instance, cursor=cursor, definitions=definitions) as ctx:
        return sensor.evaluate_tick(ctx)


def test_requests_once_per_new_local_models(instance):
    assert evaluate(instance, None).run_requests == []  # nothing trained yet
    instance.add_dynamic_partitions("shards", ["shard-0000", "shard-0001"])
    for key in ("shard-0000", "shard-0001"):
        instance.report_runless_asset_event(dg.AssetMaterialization("local_model", partition=key))
    first = evaluate(instance, None)
    assert len(first.run_requests) == 1
    assert first.run_requests[0].job_name in (None, "aggregate_global_model")
    # Same cursor again: the same run key (Dagster dedupes); advanced cursor: nothing new.
    assert evaluate(instance, None).run_requests[0].run_key == first.run_requests[0].run_key
    assert evaluate(instance, first.cursor).run_requests == []
    instance.report_runless_asset_event(
        dg.AssetMaterialization("local_model", partition="shard-0000")
    )
    assert len(evaluate(instance, first.cursor).run_requests) == 1


def test_skips_local_models_already_aggregated_in_their_run(instance):
    instance.add_dynamic_partitions("shards", ["shard-0000"])
    instance.report_runless_asset_event(
        dg.AssetMaterialization("local_model", partition="shard-0000")
    )
    instance.report_runless_asset_event(dg.AssetMaterialization("global_model"))
    data = evaluate(instance, None)
    assert data.run_requests == [] and data.cursor is not None


def test_aggregation_is_due_every_round_until_a_version_is_promoted(instance):
    assert aggregation_due(instance, 300)  # no version yet
    instance.report_runless_asset_event(dg.AssetMaterialization("global_model"))
    assert aggregation_due(instance, 300), "held back by its check: the next round tries again"
    instance.report_runless_asset_event(dg.AssetMaterialization("promoted_model"))
    assert not aggregation_due(instance, 300), "promoted and fresh: wait for the interval"
    assert aggregation_due(instance, 0)


def test_learning_devices_make_aggregation_due_before_the_interval(instance):
    instance.report_runless_asset_event(dg.AssetMaterialization("global_model"))
    instance.report_runless_asset_event(dg.AssetMaterialization("promoted_model"))
    asked: list[bool] = []

    def awaiting(devices):
        def ask():
            asked.append(True)
            return devices

        return ask

    assert aggregation_due(instance, 300, awaiting([2])), "mote 2 has no threshold yet"
    assert not aggregation_due(instance, 300, awaiting([])), "all calibrated: wait"
    asked.clear()
    assert aggregation_due(instance, 0, awaiting([]))
    assert asked == [], "the interval has passed: the store is not asked"
