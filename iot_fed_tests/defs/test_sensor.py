"""iot_stream_sensor against the real broker and MongoDB-compatible server: readings are
landed by an ingestion group member, the sensor gives devices shards and runs the rounds
(one run per shard with ready devices, then aggregation) from what landed."""

from __future__ import annotations

import dagster as dg
import pytest

from iot_fed.config import get_settings
from iot_fed.definitions import defs
from iot_fed.defs.partitions import ROUND_TAG
from iot_fed.defs.resources import MongoDBResource
from iot_fed.store.collections import SENSOR_READINGS
from iot_fed.store.repository import save_global_model
from iot_fed.store.shards import device_progress, mark_trained
from iot_fed.stream.cursor import StreamCursor
from iot_fed_tests.defs.helpers import tick
from iot_fed_tests.stream.helpers import (
    ingest_all,
    produce_raw,
    produce_readings,
    readings_frame,
)

AGGREGATION = [dg.AssetKey("global_model"), dg.AssetKey("promoted_model")]


@pytest.fixture
def two_per_shard(pipeline_env, monkeypatch):
    monkeypatch.setenv("IOT_FED_DEVICES_PER_SHARD", "2")
    get_settings.cache_clear()
    return pipeline_env


def shard_run(instance, req: dg.RunRequest, status: dg.DagsterRunStatus) -> dg.DagsterRun:
    """A run of ``req`` in ``status`` on the instance, as the daemon would have made it."""
    job = defs().resolve_implicit_global_asset_job_def()
    return instance.create_run_for_job(
        job_def=job,
        asset_selection=frozenset(req.asset_selection),
        tags={
            **req.tags,
            **({"dagster/partition": req.partition_key} if req.partition_key else {}),
        },
        status=status,
    )


def trained(db, devices: list[int]) -> None:
    """What a successful shard run records once its models are stored."""
    progress = device_progress(db)
    mark_trained(db, {m: progress[m].readings for m in devices})


def test_each_shard_with_ready_devices_gets_one_run(two_per_shard, instance, settings):
    env = two_per_shard
    df = readings_frame(5 * 30, motes=5)  # 30 readings for motes 1..5
    df = df[~((df.moteid == 5) & (df.epoch >= 3))]  # mote 5: only 3 readings
    produce_readings(settings, env["topic"], df)
    ingest_all(get_settings(), env["db"], len(df))

    data = tick(instance, env["resources"], None)

    assert instance.get_dynamic_partitions("shards") == ["shard-0000", "shard-0001", "shard-0002"]
    shards = {m: p.shard for m, p in device_progress(env["db"]).items()}
    assert shards == {1: "shard-0000", 2: "shard-0000", 3: "shard-0001", 4: "shard-0001"} | {
        5: "shard-0002"
    }
    assert [r.partition_key for r in data.run_requests] == ["shard-0000", "shard-0001"]
    assert all(r.asset_selection == [dg.AssetKey("local_model")] for r in data.run_requests)
    assert len({r.tags[ROUND_TAG] for r in data.run_requests}) == 1, "one round"
    cur = StreamCursor.parse(data.cursor)
    assert sum(cur.offsets.values()) == len(df) and cur.round is not None
    pending = {m: p.pending for m, p in device_progress(env["db"]).items()}
    assert pending == {1: 30, 2: 30, 3: 30, 4: 30, 5: 3}, "trained only once a run stores"
    assert env["db"][SENSOR_READINGS].count_documents({}) == len(df)


def test_retick_is_idempotent(two_per_shard, instance, settings):
    env = two_per_shard
    produce_readings(settings, env["topic"], readings_frame(3 * 25, motes=3))
    ingest_all(get_settings(), env["db"], 75)
    first = tick(instance, env["resources"], None)
    assert len(first.run_requests) == 2
    # The daemon re-evaluates a tick whose cursor was lost: same run keys, no duplicates.
    again = tick(instance, env["resources"], None)
    assert [r.run_key for r in again.run_requests] == [r.run_key for r in first.run_requests]
    assert env["db"][SENSOR_READINGS].count_documents({}) == 75
    # While the round's runs are in flight nothing new is requested.
    for req in first.run_requests:
        shard_run(instance, req, dg.DagsterRunStatus.STARTED)
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
    assert [r.partition_key for r in data.run_requests] == ["shard-0000"]


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


def round_of_two_shards(env, instance, settings, second: dg.DagsterRunStatus):
    """4 ready devices in 2 shards: the first shard's run succeeded (its devices trained),
    the second's run is in ``second``. Returns the tick and the two runs."""
    db = env["db"]
    produce_readings(settings, env["topic"], readings_frame(4 * 25, motes=4))
    ingest_all(get_settings(), db, 100)
    first = tick(instance, env["resources"], None)
    ok, other = first.run_requests
    shard_run(instance, ok, dg.DagsterRunStatus.SUCCESS)
    trained(db, [1, 2])
    return first, ok, other, shard_run(instance, other, second)


def test_a_round_closes_when_its_runs_ended_and_retrains_a_failed_shard(
    two_per_shard, instance, settings
):
    env = two_per_shard
    first, ok, failed, run = round_of_two_shards(
        env, instance, settings, dg.DagsterRunStatus.STARTED
    )
    assert tick(instance, env["resources"], first.cursor).run_requests == [], "still running"
    instance.report_run_failed(run)
    instance.add_run_tags(run.run_id, {"dagster/will_retry": "true"})  # run_retries' mark
    assert tick(instance, env["resources"], first.cursor).run_requests == [], "retry coming"
    instance.add_run_tags(run.run_id, {"dagster/will_retry": "false"})

    closing = tick(instance, env["resources"], first.cursor)
    [agg] = closing.run_requests
    assert agg.asset_selection == AGGREGATION and agg.tags[ROUND_TAG] == ok.tags[ROUND_TAG]
    assert agg.run_key == f"aggregate-{ok.tags[ROUND_TAG]}"
    assert StreamCursor.parse(closing.cursor).round is None
    [retrain] = tick(instance, env["resources"], closing.cursor).run_requests
    assert retrain.partition_key == "shard-0001" and retrain.run_key != failed.run_key


def test_a_round_past_its_deadline_closes_without_its_running_shard(
    two_per_shard, instance, settings
):
    env, db = two_per_shard, two_per_shard["db"]
    first, _, _, _ = round_of_two_shards(env, instance, settings, dg.DagsterRunStatus.STARTED)
    cur = StreamCursor.parse(first.cursor)
    cur.round.started -= get_settings().round_deadline_s  # the deadline has passed
    closing = tick(instance, env["resources"], cur.dump())
    [agg] = closing.run_requests
    assert agg.asset_selection == AGGREGATION
    # the stuck run still holds its shard: the next round leaves it out until it ends
    produce_readings(settings, env["topic"], readings_frame(4 * 50, motes=4).iloc[100:])
    ingest_all(get_settings(), db, 100)
    shard_run(instance, agg, dg.DagsterRunStatus.SUCCESS)
    [nxt] = tick(instance, env["resources"], closing.cursor).run_requests
    assert nxt.partition_key == "shard-0000"


def test_a_closed_round_waits_until_aggregation_is_due(two_per_shard, instance, settings):
    """A fresh promoted version that calibrated every device: the round's aggregation (and
    the next round) wait for the interval."""
    env, db = two_per_shard, two_per_shard["db"]
    save_global_model(db, b"bundle", calibrated_devices=[1, 2], promoted=True)
    instance.report_runless_asset_event(dg.AssetMaterialization("global_model"))
    instance.report_runless_asset_event(dg.AssetMaterialization("promoted_model"))
    produce_readings(settings, env["topic"], readings_frame(2 * 25, motes=2))
    ingest_all(get_settings(), db, 50)
    first = tick(instance, env["resources"], None)
    [req] = first.run_requests
    shard_run(instance, req, dg.DagsterRunStatus.SUCCESS)
    trained(db, [1, 2])
    waiting = tick(instance, env["resources"], first.cursor)
    assert waiting.run_requests == []
    assert StreamCursor.parse(waiting.cursor).round.closed
