"""Produce readings -> ingester -> sensor ticks -> a round: one run per shard (2 shards),
then one aggregation run whose global version records the round's shards; a failed shard
run is recorded, left out, and its devices retrained by the next round."""

from __future__ import annotations

import dagster as dg
import pytest

from iot_fed.config import get_settings
from iot_fed.definitions import defs
from iot_fed.defs.partitions import ROUND_TAG
from iot_fed.store import repository as repo
from iot_fed.store.shards import device_progress
from iot_fed_tests.defs.helpers import diurnal_readings, launch, tick
from iot_fed_tests.stream.helpers import ingest_all, produce_readings


@pytest.fixture
def two_per_shard(pipeline_env, monkeypatch):
    monkeypatch.setenv("IOT_FED_DEVICES_PER_SHARD", "2")
    get_settings.cache_clear()
    return pipeline_env


def test_a_round_of_two_shards_makes_a_version_recording_them(two_per_shard, instance, settings):
    env, db = two_per_shard, two_per_shard["db"]
    produce_readings(settings, env["topic"], diurnal_readings(4, 120))
    ingest_all(get_settings(), db, 4 * 120)

    data = tick(instance, env["resources"], None)
    assert [r.partition_key for r in data.run_requests] == ["shard-0000", "shard-0001"]
    for req in data.run_requests:
        res = launch(instance, env["resources"], req)
        assert res.success
        meta = res.get_asset_materialization_events()[0].materialization.metadata
        assert (meta["devices_in_run"].value, meta["devices_trained"].value) == (2, 2)
    assert sorted(db.local_models.distinct("device")) == ["1", "2", "3", "4"]
    assert all(p.pending == 0 for p in device_progress(db).values()), "trained through"

    [agg] = tick(instance, env["resources"], data.cursor).run_requests
    assert agg.partition_key is None and agg.tags[ROUND_TAG] == data.run_requests[0].tags[ROUND_TAG]
    res = launch(instance, env["resources"], agg)
    checks = {e.check_name: e.passed for e in res.get_asset_check_evaluations()}
    assert checks == {"not_worse_than_promoted": True}
    promoted = repo.promoted_global_model(db)
    assert promoted["version"] == 1 and len(promoted["lineage"]) == 4
    rnd = promoted["metrics"]["round"]
    assert rnd["shards_included"] == ["shard-0000", "shard-0001"]
    assert rnd["shards_failed"] == [] and rnd["shards_missing"] == []

    definitions = defs()
    with dg.build_sensor_context(instance=instance, definitions=definitions) as ctx:
        later = definitions.get_sensor_def("aggregation_sensor").evaluate_tick(ctx)
    assert later.run_requests == [], "the round was aggregated by the stream sensor"


def test_a_failed_shard_is_recorded_left_out_and_retrained(two_per_shard, instance, settings):
    env, db = two_per_shard, two_per_shard["db"]
    produce_readings(settings, env["topic"], diurnal_readings(4, 120))
    ingest_all(get_settings(), db, 4 * 120)
    first = tick(instance, env["resources"], None)
    ok, broken = first.run_requests
    assert launch(instance, env["resources"], ok).success
    # the second shard's run fails (asked for a device of another shard)
    bad = {"ops": {"local_model": {"config": {"devices": [1]}}}}
    assert not launch(instance, env["resources"], broken, bad, raise_on_error=False).success

    closing = tick(instance, env["resources"], first.cursor)
    [agg] = closing.run_requests
    assert launch(instance, env["resources"], agg).success
    g1 = repo.latest_global_model(db)
    assert sorted(x["device"] for x in g1["lineage"]) == ["1", "2"]
    assert g1["metrics"]["round"]["shards_included"] == ["shard-0000"]
    assert g1["metrics"]["round"]["shards_failed"] == ["shard-0001"]
    pending = {m: p.pending for m, p in device_progress(db).items()}
    assert pending == {1: 0, 2: 0, 3: 120, 4: 120}, "the failed run advanced nothing"

    [again] = tick(instance, env["resources"], closing.cursor).run_requests
    assert again.partition_key == "shard-0001" and again.run_key != broken.run_key
    assert launch(instance, env["resources"], again).success
    assert sorted(db.local_models.distinct("device")) == ["1", "2", "3", "4"]
