"""The live side in Dagster: the streaming_evaluation observation, its lag check, the sensor
that reports both without a run, and one evaluation_report run request per promoted version."""

from __future__ import annotations

import datetime as dt

import dagster as dg
from dagster._core.definitions.observe import observe  # no public alias in dagster 1.13

from iot_fed.defs.live import (
    CHECK_NAME,
    SCORER_KEY,
    evaluation_report_sensor,
    scorer_not_behind,
    streaming_evaluation,
    streaming_evaluation_sensor,
)
from iot_fed.defs.resources import MongoDBResource
from iot_fed.store import init_database, promote
from iot_fed.store.live import upsert_anomalies, write_scorer_status
from iot_fed_tests.analytics.helpers import make_bundle, make_readings, store_global


def _heartbeat(db, age_s: float, latency_s: float, state: str = "running") -> None:
    now = dt.datetime.now(dt.UTC)
    write_scorer_status(
        db,
        {
            "updated_at": now - dt.timedelta(seconds=age_s),
            "state": state,
            "model_version": 3,
            "last_batch_at": now - dt.timedelta(seconds=age_s),
            "batch_max_latency_s": latency_s,
            "records_per_s": 12.5,
            "last_batch_id": 9,
        },
    )


def test_observation_and_lag_check(mongo_db):
    init_database(mongo_db)
    res = MongoDBResource(database=mongo_db.name)
    assert not scorer_not_behind(mongodb=res).passed  # no heartbeat at all
    now = dt.datetime.now(dt.UTC)
    upsert_anomalies(
        mongo_db,
        [
            {
                "moteid": 1,
                "ts": now,
                "model_version": 3,
                "channels": ["light"],
                "flagged_at": now,
                "source": "streaming",
            }
        ],
    )
    _heartbeat(mongo_db, age_s=1, latency_s=1.5)
    with dg.instance_for_test() as instance:
        result = observe([streaming_evaluation], instance=instance, resources={"mongodb": res})
        assert result.success
        obs = instance.fetch_observations(SCORER_KEY, limit=1).records[0].asset_observation
        md = {k: v.value for k, v in obs.metadata.items()}
        assert md["model_version"] == 3 and md["records_per_s"] == 12.5
        assert md["anomalies_last_interval"] == 1 and md["state"] == "running"
        assert "last_batch_at" in md and md["behind_s"] >= 1.5
    check = scorer_not_behind(mongodb=res)
    assert check.passed and check.check_name == CHECK_NAME
    _heartbeat(mongo_db, age_s=1, latency_s=75)  # catching up: 75 s behind
    assert not scorer_not_behind(mongodb=res).passed
    _heartbeat(mongo_db, age_s=90, latency_s=0.5)  # dead scorer: stale heartbeat
    assert not scorer_not_behind(mongodb=res).passed


def test_sensor_reports_observation_and_check_without_a_run(mongo_db):
    init_database(mongo_db)
    _heartbeat(mongo_db, age_s=120, latency_s=0.5)
    with dg.instance_for_test() as instance:
        res = {"mongodb": MongoDBResource(database=mongo_db.name)}
        with dg.build_sensor_context(instance=instance, resources=res) as ctx:
            assert isinstance(streaming_evaluation_sensor(ctx), dg.SkipReason)
        assert instance.fetch_observations(SCORER_KEY, limit=1).records
        ev = instance.event_log_storage.get_latest_asset_check_execution_by_key(
            [dg.AssetCheckKey(SCORER_KEY, CHECK_NAME)]
        )[dg.AssetCheckKey(SCORER_KEY, CHECK_NAME)]
        assert ev.evaluation is not None and ev.evaluation.passed is False


def test_one_evaluation_report_request_per_promoted_version(mongo_db):
    init_database(mongo_db)
    res = {"mongodb": MongoDBResource(database=mongo_db.name)}
    with dg.instance_for_test() as instance:
        with dg.build_sensor_context(instance=instance, resources=res) as ctx:
            assert isinstance(evaluation_report_sensor(ctx), dg.SkipReason)  # nothing promoted
            df = make_readings(1, 20)
            store_global(mongo_db, make_bundle(df, seed=1))
            req = evaluation_report_sensor(ctx)
            assert req.run_key == "evaluation_report_v1"
            assert req.run_config["ops"]["evaluation_report"]["config"]["version"] == 1
            cursor = ctx.cursor
        with dg.build_sensor_context(instance=instance, resources=res, cursor=cursor) as ctx:
            assert isinstance(evaluation_report_sensor(ctx), dg.SkipReason)  # v1 requested
            v2 = store_global(mongo_db, make_bundle(df, seed=2), promoted=False)
            promote(mongo_db, v2)
            assert evaluation_report_sensor(ctx).run_key == "evaluation_report_v2"
