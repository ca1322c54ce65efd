"""The Spark assets materialize through the SparkResource (lazy pyspark, typed fields)."""

from __future__ import annotations

import dagster as dg

from iot_fed.config import get_settings
from iot_fed.defs.assets.analytics import evaluation_report, predictions, streaming_evaluation
from iot_fed.defs.resources import MongoDBResource, SparkResource
from iot_fed.store.collections import PREDICTIONS
from iot_fed_tests.analytics.helpers import (
    make_bundle,
    make_readings,
    store_global,
    store_readings,
)
from iot_fed_tests.stream.helpers import produce_readings


def test_spark_assets_materialize(spark, monkeypatch, mongo_db, kafka_topic, settings, tmp_path):
    monkeypatch.setenv("IOT_FED_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("IOT_FED_KAFKA_TOPIC", kafka_topic)
    get_settings.cache_clear()
    df = make_readings(motes=3, per_mote=60)
    store_readings(mongo_db, df)
    store_global(mongo_db, make_bundle(df, seed=1))
    produce_readings(settings, kafka_topic, make_readings(motes=2, per_mote=10, start="2004-03-05"))
    resources = {
        "pyspark": SparkResource(master="local[2]"),
        "mongodb": MongoDBResource(database=mongo_db.name),
    }
    res = dg.materialize(
        [evaluation_report, predictions, streaming_evaluation], resources=resources
    )
    assert res.success
    report = res.asset_materializations_for_node("evaluation_report")[0].metadata
    assert "per_device" in report and "plot" in report
    pred = res.asset_materializations_for_node("predictions")[0].metadata
    assert pred["n"].value == len(df)
    stream = res.asset_materializations_for_node("streaming_evaluation")[0].metadata
    assert stream["records"].value == 20
    assert mongo_db[PREDICTIONS].count_documents({}) == len(df) + 20
