"""The live side in Dagster: the streaming scorer as an observable asset with a lag check,
a sensor that observes it every 30 s, and a sensor that runs ``evaluation_report`` once
per promoted version (run key ``evaluation_report_v<version>``)."""

from __future__ import annotations

import dagster as dg

from iot_fed.defs.resources import MongoDBResource

SCORER_KEY = dg.AssetKey("streaming_evaluation")
CHECK_NAME = "scorer_not_behind"


def _observe(mongodb: MongoDBResource) -> dict:
    from iot_fed.analytics.live_status import scorer_observation
    from iot_fed.store import connect

    settings = mongodb.settings()
    db = connect(settings.mongodb_uri, settings.mongodb_database, settings.mongodb_timeout_s)
    try:
        return scorer_observation(db, max_lag_s=settings.scorer_max_lag_s)
    finally:
        db.client.close()


def _metadata(obs: dict) -> dict:
    return {k: v for k, v in obs.items() if v is not None and k != "ok"}


def _check(obs: dict) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        asset_key=SCORER_KEY, check_name=CHECK_NAME, passed=bool(obs["ok"]), metadata=_metadata(obs)
    )


@dg.observable_source_asset(
    name="streaming_evaluation",
    group_name="analytics",
    description="The long-running Spark Structured Streaming scorer (supervised by iot-fed "
    "run): lag, records/s, anomalies in the last minute, model version, last batch time "
    "from its heartbeat in MongoDB scorer_status.",
)
def streaming_evaluation(mongodb: MongoDBResource) -> dg.ObserveResult:
    obs = _observe(mongodb)
    return dg.ObserveResult(metadata=_metadata(obs))


@dg.asset_check(
    asset=SCORER_KEY,
    name=CHECK_NAME,
    description="fails when the scorer is more "
    "than IOT_FED_SCORER_MAX_LAG_S (60 s) behind or not running",
)
def scorer_not_behind(mongodb: MongoDBResource) -> dg.AssetCheckResult:
    return _check(_observe(mongodb))


@dg.sensor(
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="observes streaming_evaluation and evaluates scorer_not_behind",
)
def streaming_evaluation_sensor(
    context: dg.SensorEvaluationContext, mongodb: MongoDBResource
) -> dg.SkipReason:
    obs = _observe(mongodb)
    context.instance.report_runless_asset_event(
        dg.AssetObservation(asset_key=SCORER_KEY, metadata=_metadata(obs))
    )
    context.instance.report_runless_asset_event(
        dg.AssetCheckEvaluation(
            asset_key=SCORER_KEY,
            check_name=CHECK_NAME,
            passed=bool(obs["ok"]),
            metadata=_metadata(obs),
        )
    )
    return dg.SkipReason(f"observed: {obs.get('state')}, behind {obs.get('behind_s')}s")


SPARK_POOL_TAG = {"iot_fed/pool": "spark"}  # run_coordinator tag_concurrency_limits: one at a time

evaluation_report_job = dg.define_asset_job(
    "evaluation_report_job",
    selection=dg.AssetSelection.assets("evaluation_report"),
    tags=SPARK_POOL_TAG,
)


@dg.sensor(
    job=evaluation_report_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="one evaluation_report per promoted global version",
)
def evaluation_report_sensor(context: dg.SensorEvaluationContext, mongodb: MongoDBResource):
    from iot_fed.store import connect, promoted_version

    settings = mongodb.settings()
    db = connect(settings.mongodb_uri, settings.mongodb_database, settings.mongodb_timeout_s)
    try:
        version = promoted_version(db)
    finally:
        db.client.close()
    if version is None:
        return dg.SkipReason("no promoted global model yet")
    if context.cursor and int(context.cursor) >= version:
        return dg.SkipReason(f"v{version} already reported")
    context.update_cursor(str(version))
    return dg.RunRequest(
        run_key=f"evaluation_report_v{version}",
        run_config={"ops": {"evaluation_report": {"config": {"version": version}}}},
        tags={"iot_fed/global_version": str(version)},
    )
