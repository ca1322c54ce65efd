"""iot_stream_sensor against the real broker and MongoDB-compatible server: readings are
landed by an ingestion group member, the sensor triggers training from what landed."""

from __future__ import annotations

import dagster as dg
import pytest

from iot_fed.config import get_settings
from iot_fed.definitions import defs
from iot_fed.defs.partitions import RANGE_END_TAG, RANGE_START_TAG
from iot_fed.defs.resources import MongoDBResource
from iot_fed.store.collections import SENSOR_READINGS
from iot_fed.store.ingest_progress import landed_per_device
from iot_fed.store.repository import save_global_model
from iot_fed.stream.cursor import StreamCursor
from iot_fed_tests.defs.helpers import tick
from iot_fed_tests.stream.helpers import (
    ingest_all,
    produce_raw,
    produce_readings,
    readings_frame,
)

ROUND = [dg.AssetKey("local_model"), dg.AssetKey("global_model"), dg.AssetKey("promoted_model")]


def test_new_devices_become_partitions_and_ready_ones_share_one_run(
    pipeline_env, instance, settings
):
    env = pipeline_env
    df = readings_frame(5 * 30, motes=5)  # 30 readings for motes 1..5
    df = df[~((df.moteid == 5) & (df.epoch >= 3))]  # mote 5: only 3 readings
    produce_readings(settings, env["topic"], df)
    ingest_all(get_settings(), env["db"], len(df))

    data = tick(instance, env["resources"], None)

    assert instance.get_dynamic_partitions("devices") == ["1", "2", "3", "4", "5"]
    assert len(data.run_requests) == 1, "ready devices must share one run"
    req = data.run_requests[0]
    assert (req.tags[RANGE_START_TAG], req.tags[RANGE_END_TAG]) == ("1", "4")
    assert req.asset_selection == ROUND, "no global version yet: the run also aggregates"
    cur = StreamCursor.parse(data.cursor)
    assert sum(cur.offsets.values()) == len(df)
    landed = landed_per_device(env["db"])
    assert cur.pending(landed) == {"5": 3}, "mote 5 is not ready; its count carries over"
    assert sum(landed.values()) == env["db"][SENSOR_READINGS].count_documents({}) == len(df)


def test_retick_is_idempotent(pipeline_env, instance, settings):
    env = pipeline_env
    produce_readings(settings, env["topic"], readings_frame(3 * 25, motes=3))
    ingest_all(get_settings(), env["db"], 75)
    first = tick(instance, env["resources"], None)
    # The daemon re-evaluates a tick whose cursor was lost: same run key, no duplicates.
    again = tick(instance, env["resources"], None)
    assert [r.run_key for r in again.run_requests] == [r.run_key for r in first.run_requests]
    assert env["db"][SENSOR_READINGS].count_documents({}) == 75
    # With the advanced cursor nothing new is requested.
    later = tick(instance, env["resources"], first.cursor)
    assert later.run_requests == [] and later.asset_events == []
    assert StreamCursor.parse(later.cursor) == StreamCursor.parse(first.cursor)


def test_a_tick_fails_while_the_store_does_not_answer(pipeline_env, instance, settings):
    env = pipeline_env
    produce_readings(settings, env["topic"], readings_frame(40, motes=2))
    ingest_all(get_settings(), env["db"], 40)
    broken = {
        **env["resources"],
        "mongodb": MongoDBResource(uri="mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=500"),
    }
    with pytest.raises(Exception):  # noqa: B017 - any failure: the tick must not complete
        tick(instance, broken, None)
    data = tick(instance, env["resources"], None)  # the next good tick sees everything
    assert StreamCursor.parse(data.cursor).landed == 40
    assert len(data.run_requests) == 1


def test_new_readings_trigger_again_after_a_run(pipeline_env, instance, settings):
    env = pipeline_env
    produce_readings(settings, env["topic"], readings_frame(2 * 25, motes=2))
    ingest_all(get_settings(), env["db"], 50)
    first = tick(instance, env["resources"], None)
    assert len(first.run_requests) == 1
    more = readings_frame(2 * 50, motes=2).iloc[50:]  # 25 newer readings per mote
    produce_readings(settings, env["topic"], more)
    ingest_all(get_settings(), env["db"], 50)
    second = tick(instance, env["resources"], first.cursor)
    [req] = second.run_requests
    assert req.run_key != first.run_requests[0].run_key
    assert StreamCursor.parse(second.cursor).trained == {"1": 50, "2": 50}


def test_landed_batch_is_a_sensor_readings_materialization(pipeline_env, instance, settings):
    env = pipeline_env
    df = readings_frame(2 * 30, motes=2)
    produce_readings(settings, env["topic"], df)
    produce_raw(settings, env["topic"], [(b"1", b"not json"), (b"2", b'{"ts": 1}')])
    stats = ingest_all(get_settings(), env["db"], 62)
    assert (stats.inserted, stats.dead) == (60, 2)

    data = tick(instance, env["resources"], None)

    [event] = data.asset_events
    assert event.asset_key == dg.AssetKey("sensor_readings")
    meta = {k: v.value for k, v in event.metadata.items()}
    assert meta["new_readings"] == 60 and meta["devices"] == 2
    assert meta["untrained_readings_per_device"] == {"1": 30, "2": 30}
    assert meta["landed_by"] == ["test-ingester"]
    assert sum(meta["offsets_to"].values()) == 62, "dead letters are landed too"
    assert meta["offsets_from"] == {}
    latest = instance.get_latest_materialization_event(dg.AssetKey("sensor_readings"))
    assert latest is not None, "the reported materialization is on the instance"
    # Nothing new on the next tick: no materialization, no run.
    again = tick(instance, env["resources"], data.cursor)
    assert again.asset_events == [] and again.run_requests == []


def test_training_only_run_while_a_global_version_is_fresh(pipeline_env, instance, settings):
    env = pipeline_env
    instance.report_runless_asset_event(dg.AssetMaterialization("global_model"))
    instance.report_runless_asset_event(dg.AssetMaterialization("promoted_model"))
    produce_readings(settings, env["topic"], readings_frame(2 * 25, motes=2))
    ingest_all(get_settings(), env["db"], 50)
    [req] = tick(instance, env["resources"], None).run_requests
    assert req.asset_selection == [dg.AssetKey("local_model")], "aggregation is not due yet"


@pytest.mark.parametrize(("calibrated", "aggregates"), [([1], True), ([1, 2], False)])
def test_a_learning_device_in_the_run_makes_it_aggregate(
    pipeline_env, instance, settings, calibrated, aggregates
):
    """A fresh promoted version: the run aggregates only when one of its devices has no
    threshold in it (a new version would calibrate it; until then it is learning)."""
    env = pipeline_env
    save_global_model(env["db"], b"bundle", calibrated_devices=calibrated, promoted=True)
    instance.report_runless_asset_event(dg.AssetMaterialization("global_model"))
    instance.report_runless_asset_event(dg.AssetMaterialization("promoted_model"))
    produce_readings(settings, env["topic"], readings_frame(2 * 25, motes=2))
    ingest_all(get_settings(), env["db"], 50)
    [req] = tick(instance, env["resources"], None).run_requests
    assert req.asset_selection == (ROUND if aggregates else [dg.AssetKey("local_model")])


def test_ready_devices_wait_while_a_training_run_is_in_flight(pipeline_env, instance, settings):
    env = pipeline_env
    produce_readings(settings, env["topic"], readings_frame(2 * 25, motes=2))
    ingest_all(get_settings(), env["db"], 50)
    job = defs().resolve_implicit_global_asset_job_def()
    queued = instance.create_run_for_job(
        job_def=job,
        asset_selection=frozenset({dg.AssetKey("local_model")}),
        status=dg.DagsterRunStatus.STARTED,
    )
    busy = tick(instance, env["resources"], None)
    assert busy.run_requests == [], "one training run at a time: no queue of training runs"
    pending = StreamCursor.parse(busy.cursor).pending(landed_per_device(env["db"]))
    assert pending == {"1": 25, "2": 25}, "kept for later"
    instance.report_run_canceled(queued)
    [req] = tick(instance, env["resources"], busy.cursor).run_requests
    assert (req.tags[RANGE_START_TAG], req.tags[RANGE_END_TAG]) == ("1", "2")
