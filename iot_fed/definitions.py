"""The one Dagster ``Definitions`` of iot_fed; resources chosen by environment.

``defs`` is a ``@dg.definitions`` loader: importing this module reads no setting and
imports no heavy library (pandas, JAX, pyspark are imported where they are used); Dagster
calls ``defs()`` when it loads the code location (webserver, daemon, every run worker).

``IOT_FED_DEPLOYMENT=local`` (default) takes every endpoint from :mod:`iot_fed.config`
settings (defaults: local services). ``production`` passes the endpoints and the SASL
secret as ``dg.EnvVar`` so Dagster resolves them at run time and shows where they come from.
Every other setting is a typed field of the ``settings`` resource (unset = from the settings).
"""

from __future__ import annotations

import os

import dagster as dg

from iot_fed.config import load_settings
from iot_fed.defs.assets.analytics import evaluation_report, predictions
from iot_fed.defs.assets.benchmark import anomaly_benchmark
from iot_fed.defs.assets.dataset import intel_lab_clean, intel_lab_raw, mote_locations
from iot_fed.defs.assets.models import (
    global_model,
    local_model,
    not_worse_than_promoted,
    promoted_model,
)
from iot_fed.defs.assets.reporting import PostgresResource, reporting_sensor, reporting_tables
from iot_fed.defs.assets.stream import iot_stream, sensor_readings
from iot_fed.defs.checks import device_models_fresh
from iot_fed.defs.live import (
    evaluation_report_job,
    evaluation_report_sensor,
    scorer_not_behind,
    streaming_evaluation,
    streaming_evaluation_sensor,
)
from iot_fed.defs.resources import (
    KafkaResource,
    MongoDBResource,
    PySparkFactory,
    SettingsResource,
)
from iot_fed.defs.sensors import aggregate_job, build_sensors

ASSETS = [
    # dataset
    intel_lab_raw,
    intel_lab_clean,
    mote_locations,
    # stream
    iot_stream,
    sensor_readings,
    # federation
    local_model,
    global_model,
    promoted_model,
    # analytics
    evaluation_report,
    predictions,
    streaming_evaluation,  # observable: the live scorer's progress
    # evaluation
    anomaly_benchmark,
    # reporting
    reporting_tables,
]
ASSET_CHECKS = [
    not_worse_than_promoted,
    device_models_fresh,
    scorer_not_behind,
]
JOBS = [
    aggregate_job,
    evaluation_report_job,
]


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
        "pyspark": PySparkFactory(),  # dagster_pyspark.PySparkResource, made in the run
        "postgres": PostgresResource(),
    }


@dg.definitions
def defs() -> dg.Definitions:
    settings = load_settings()  # at load time: a bad setting stops the load, named
    return dg.Definitions(
        assets=ASSETS,
        asset_checks=ASSET_CHECKS,
        jobs=JOBS,
        sensors=[
            *build_sensors(settings),
            streaming_evaluation_sensor,
            evaluation_report_sensor,
            reporting_sensor,
        ],
        executor=dg.in_process_executor,  # one process per run: JAX compiles once per run
        resources=resources_for(os.environ.get("IOT_FED_DEPLOYMENT", "local")),
    )
