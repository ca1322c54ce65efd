"""The one Dagster ``Definitions`` of iot_fed; resources chosen by environment.

``IOT_FED_DEPLOYMENT=local`` (default) takes every endpoint from :mod:`iot_fed.config`
settings (defaults: local services). ``production`` passes the endpoints and the SASL
secret as ``dg.EnvVar`` so Dagster resolves them at run time and shows where they come from.
"""

from __future__ import annotations

import os

import dagster as dg
from dagster_pyspark import PySparkResource

from iot_fed.analytics import session
from iot_fed.analytics.jars import SparkJarsError
from iot_fed.config import load_settings
from iot_fed.defs.assets.analytics import evaluation_report, predictions
from iot_fed.defs.assets.benchmark import anomaly_benchmark
from iot_fed.defs.assets.dataset import intel_lab_clean, intel_lab_raw, mote_locations
from iot_fed.defs.assets.models import global_model, local_model, promoted_model
from iot_fed.defs.assets.stream import iot_stream
from iot_fed.defs.checks import device_models_fresh
from iot_fed.defs.live import (
    evaluation_report_job,
    evaluation_report_sensor,
    scorer_not_behind,
    streaming_evaluation,
    streaming_evaluation_sensor,
)
from iot_fed.defs.resources import KafkaResource, MongoDBResource, SettingsResource
from iot_fed.defs.sensors import aggregate_job, aggregation_sensor, iot_stream_sensor


def spark_config() -> dict[str, str]:
    """Spark settings incl. the Kafka connector jars (``iot-fed spark install``); without the
    jars the batch assets still work and streaming_evaluation says what is missing."""
    settings = load_settings()
    try:
        return session.spark_config(settings)
    except SparkJarsError:
        return session.spark_config(settings, with_jars=False)


def resources_for(deployment: str) -> dict[str, object]:
    if deployment == "production":
        kafka = KafkaResource(
            bootstrap_servers=dg.EnvVar("IOT_FED_KAFKA_BOOTSTRAP"),
            sasl_password=dg.EnvVar("IOT_FED_KAFKA_SASL_PASSWORD"),
        )
        mongodb = MongoDBResource(uri=dg.EnvVar("IOT_FED_MONGODB_URI"))
    elif deployment == "local":
        kafka, mongodb = KafkaResource(), MongoDBResource()
    else:
        raise ValueError(f"IOT_FED_DEPLOYMENT must be local or production, got {deployment!r}")
    return {
        "kafka": kafka,
        "mongodb": mongodb,
        "settings": SettingsResource(),
        "pyspark": PySparkResource(spark_config=spark_config()),
    }


defs = dg.Definitions(
    assets=[
        intel_lab_raw,
        intel_lab_clean,
        mote_locations,
        iot_stream,
        local_model,
        global_model,
        promoted_model,
        evaluation_report,
        predictions,
        streaming_evaluation,
        anomaly_benchmark,
    ],
    asset_checks=[device_models_fresh, scorer_not_behind],
    jobs=[aggregate_job, evaluation_report_job],
    sensors=[
        iot_stream_sensor,
        aggregation_sensor,
        streaming_evaluation_sensor,
        evaluation_report_sensor,
    ],
    executor=dg.in_process_executor,  # one process per run: JAX compiles once per run
    resources=resources_for(os.environ.get("IOT_FED_DEPLOYMENT", "local")),
)
