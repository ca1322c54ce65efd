"""The Python worker daemon (``iot_fed.analytics.spark_daemon``): a trimmed import path and
a frozen, preloaded heap."""

from __future__ import annotations

import json
from pathlib import Path

import pyspark

from iot_fed.analytics.spark_daemon import worker_path

SITE = str(Path(pyspark.__file__).parents[1])
LIB = str(Path(pyspark.__file__).parent / "python" / "lib")
JAR = str(Path(pyspark.__file__).parent / "jars" / "spark-core_2.13-4.0.5.jar")


def test_drops_jars_and_the_installed_pysparks_own_zips():
    path = ["/app", f"{LIB}/pyspark.zip", f"{LIB}/py4j-0.10.9.9-src.zip", JAR, SITE]
    assert worker_path(path) == ["/app", SITE]


def test_keeps_the_zips_when_they_are_the_only_pyspark(tmp_path):
    other = tmp_path / "spark" / "python" / "lib"  # a cluster's SPARK_HOME, not installed
    path = ["/app", str(other / "pyspark.zip"), str(other / "py4j-src.zip"), JAR]
    assert worker_path(path) == ["/app", str(other / "pyspark.zip"), str(other / "py4j-src.zip")]


def test_keeps_zips_of_another_spark_install(tmp_path):
    other = str(tmp_path / "pyspark.zip")
    assert worker_path([other, SITE]) == [other, SITE]


def test_spark_workers_import_nothing_from_zips(spark):
    def probe(batches):
        import sys

        import pandas as pd

        for _ in batches:
            pass
        # a zip on the path makes every task's importlib.invalidate_caches() re-read it
        zips = [p for p in sys.path if p.endswith((".zip", ".jar")) and "pyspark" in p]
        info = {"pyspark": pyspark.__file__, "zips": zips}
        yield pd.DataFrame({"info": [json.dumps(info)]})

    row = spark.range(1).mapInPandas(probe, "info string").collect()[0]
    info = json.loads(row["info"])
    assert info["zips"] == [], info
    assert ".zip" not in info["pyspark"], info


def test_spark_workers_start_with_the_scorer_preloaded_and_the_heap_frozen(spark):
    """A worker's per-task ``gc.collect()`` walks only what was made since the fork."""

    def probe(batches):
        import gc
        import sys

        import pandas as pd

        for _ in batches:
            pass
        info = {
            "frozen": gc.get_freeze_count(),
            "tracked": len(gc.get_objects()),  # what a collection walks (not the frozen)
            "preloaded": "iot_fed.analytics.live_state" in sys.modules,
        }
        yield pd.DataFrame({"info": [json.dumps(info)]})

    info = json.loads(spark.range(1).mapInPandas(probe, "info string").collect()[0]["info"])
    assert info["preloaded"], info
    assert info["frozen"] > 50_000, info  # pyspark, pandas, pyarrow and the scorer
    # a collection walks a small part of the heap (all of it, 80 ms, when unfrozen)
    assert info["tracked"] < info["frozen"] / 4, info
