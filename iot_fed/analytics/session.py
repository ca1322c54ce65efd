"""Spark session configuration: one dict for Dagster's PySparkResource and the CLI.

``spark_config(settings)`` is the single source of truth; ``start_session`` turns such a
dict into a ``SparkSession``: for the Dagster assets (``iot_fed.defs.spark``, a
``PySparkResource``) and, through ``build_session``, the CLI, tests and benchmarks.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from iot_fed.analytics.jars import spark_jar_paths
from iot_fed.config import LOCAL_HOSTS, Settings

DRIVER_MEMORY = "2g"
ARROW_BATCH_ROWS = 50_000
DAEMON_MODULE = "iot_fed.analytics.spark_daemon"


def spark_local_dir(settings: Settings) -> Path:
    return settings.data_dir / "spark"


def jvm_option(option: str) -> str:
    """``option`` as one word of a Spark ``extraJavaOptions`` string (quoted when it holds a
    space, as in a project path: Spark splits that string on blanks outside quotes)."""
    if not any(c.isspace() for c in option):
        return option
    return '"' + option.replace("\\", "\\\\").replace('"', '\\"') + '"'


def driver_java_options(settings: Settings, archive: bool = True) -> str:
    """The Spark JVM's options: Derby's home, ``spark_java_options`` and, when ``archive``
    and it is built, the class-data-sharing archive (:mod:`iot_fed.analytics.jvm_archive`)."""
    from iot_fed.analytics.jvm_archive import archive_option

    derby = jvm_option(f"-Dderby.system.home={spark_local_dir(settings) / 'derby'}")
    shared = jvm_option(archive_option(settings)) if archive else ""
    opts = (derby, settings.spark_java_options, shared)
    return " ".join(o for o in opts if o)


def _loopback_master(master: str) -> bool:
    """A cluster master on this machine's loopback (a test cluster): the driver stays there."""
    return master.startswith("spark://") and urlparse(master).hostname in LOCAL_HOSTS


def spark_config(settings: Settings, with_jars: bool = True) -> dict[str, Any]:
    """Spark settings for iot_fed (``spark.*`` keys, values as strings).

    Master from ``settings.spark_master``; connector jars from ``iot-fed spark install``;
    UI off, driver bound to 127.0.0.1 for local masters, Arrow on, scratch space and the
    warehouse under ``<data_dir>/spark``.
    """
    local = spark_local_dir(settings)
    conf: dict[str, Any] = {
        "spark.master": settings.spark_master,
        "spark.app.name": "iot_fed",
        "spark.sql.shuffle.partitions": str(settings.spark_shuffle_partitions),
        "spark.default.parallelism": str(settings.spark_shuffle_partitions),
        "spark.driver.memory": DRIVER_MEMORY,
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.execution.arrow.maxRecordsPerBatch": str(ARROW_BATCH_ROWS),
        "spark.sql.session.timeZone": "UTC",
        "spark.local.dir": str(local / "tmp"),
        "spark.sql.warehouse.dir": str(local / "warehouse"),
        "spark.driver.extraJavaOptions": driver_java_options(settings),
        "spark.sql.streaming.forceDeleteTempCheckpointLocation": "true",
        "spark.python.worker.reuse": "true",
        # workers forked from a daemon that drops pyspark's zips and spark-core's jar from
        # their import path: on Python 3.11 each Python task otherwise re-read ~20k zip
        # entries in importlib.invalidate_caches(), 0.6 s per task, two tasks per scorer
        # micro-batch (see iot_fed/analytics/spark_daemon.py, bench/bench_scorer.py)
        "spark.python.daemon.module": DAEMON_MODULE,
        # the executors' Python: the same locked environment, at this path on every worker
        "spark.pyspark.python": settings.spark_worker_python or sys.executable,
        "spark.pyspark.driver.python": sys.executable,
    }
    if settings.spark_master.startswith("local") or _loopback_master(settings.spark_master):
        conf["spark.driver.host"] = "127.0.0.1"
        conf["spark.driver.bindAddress"] = "127.0.0.1"
    if with_jars:
        conf["spark.jars"] = ",".join(str(p) for p in spark_jar_paths(settings))
    return conf


def build_session(
    settings: Settings, app_name: str = "iot_fed", with_jars: bool = True, **overrides: Any
):
    """A (possibly existing) ``SparkSession`` configured by :func:`spark_config`."""
    return start_session(
        {**spark_config(settings, with_jars), "spark.app.name": app_name, **overrides}
    )


def start_session(conf: Mapping[str, Any]):
    """A (possibly existing) ``SparkSession`` from ``conf`` (a :func:`spark_config` dict):
    for :func:`build_session` and Dagster's ``PySparkResource`` (``iot_fed/defs/spark.py``)."""
    from pyspark.sql import SparkSession

    if local_dir := conf.get("spark.local.dir"):
        Path(local_dir).mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PYSPARK_PYTHON", conf.get("spark.pyspark.python", sys.executable))
    builder = SparkSession.builder
    for key, value in conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark
