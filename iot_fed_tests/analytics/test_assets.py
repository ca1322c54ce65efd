"""The Spark assets materialize through dagster-pyspark's PySparkResource (made by
``PySparkFactory``: typed fields, pyspark imported only in the run)."""

from __future__ import annotations

import dagster as dg

from iot_fed.config import get_settings
from iot_fed.defs.assets.analytics import evaluation_report, predictions
from iot_fed.defs.resources import MongoDBResource, PySparkFactory
from iot_fed.store.collections import PREDICTIONS
from iot_fed_tests.analytics.helpers import (
    make_bundle,
    make_readings,
    store_global,
    store_readings,
)


def test_spark_assets_materialize(spark, monkeypatch, mongo_db, settings, tmp_path):
    """(streaming_evaluation is observable now: iot_fed_tests/defs/test_live.py)"""
    monkeypatch.setenv("IOT_FED_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    df = make_readings(motes=3, per_mote=60)
    store_readings(mongo_db, df)
    store_global(mongo_db, make_bundle(df, seed=1))
    resources = {
        "pyspark": PySparkFactory(master="local[2]"),
        "mongodb": MongoDBResource(database=mongo_db.name),
    }
    res = dg.materialize([evaluation_report, predictions], resources=resources)
    assert res.success
    report = res.asset_materializations_for_node("evaluation_report")[0].metadata
    assert "per_device" in report and "plot" in report
    pred = res.asset_materializations_for_node("predictions")[0].metadata
    assert pred["n"].value == len(df)
    assert mongo_db[PREDICTIONS].count_documents({}) == len(df)
