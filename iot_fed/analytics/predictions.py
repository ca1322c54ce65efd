"""Anomaly score + flag per reading for the promoted global model, upserted to MongoDB.

Readings are grouped by mote (``applyInPandas``) and each device's series is scored in
epoch order through ``score_device`` (:func:`~iot_fed.analytics.batch_scoring.score_devices`),
the same function the stream uses; the documents come from the same builder as the stream's
(:mod:`iot_fed.analytics.verdicts`), so batch == stream. Each Spark task writes its verdicts
and anomalies (:func:`iot_fed.store.live.store_verdicts`: a stored verdict is replaced only
by a newer model version's), so re-running is idempotent and nothing large is collected on
the driver. Each task also builds its device's incidents over the whole series
(:func:`iot_fed.analytics.incidents.advance`, as the stream does micro-batch by
micro-batch) and upserts them; the driver then closes the open ones the fleet's newest
reading has left quiet.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import asdict, dataclass

import pandas as pd
from pyspark.broadcast import Broadcast
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T

from iot_fed.analytics.batch_scoring import score_devices
from iot_fed.analytics.incidents import advance
from iot_fed.analytics.models import bundle_from_blob, load_global_model
from iot_fed.analytics.readings import MongoTarget, read_readings
from iot_fed.analytics.verdicts import verdict_docs
from iot_fed.config import Settings
from iot_fed.store.incidents import close_due_incidents, upsert_incidents
from iot_fed.store.live import store_verdicts

log = logging.getLogger(__name__)

WRITE_CHUNK = 5_000
COUNT_FIELDS = ("n", "anomalies", "inserted", "updated", "kept")
TASK_FIELDS = (*COUNT_FIELDS, "incidents", "last_ts_ms")  # summed, except last_ts_ms: max
COUNTS_SCHEMA = T.StructType([T.StructField(c, T.LongType(), False) for c in TASK_FIELDS])


@dataclass(frozen=True)
class PredictionsResult:
    """Counts of one predictions run (``inserted + updated + kept == n``)."""

    model_version: int
    threshold: float
    n: int
    anomalies: int
    inserted: int
    updated: int
    kept: int
    seconds: float
    incidents: int = 0

    def summary(self) -> dict[str, float | int]:
        return asdict(self)


def store_scored(db, scored: pd.DataFrame, source: str) -> dict[str, int]:
    """Store a verdict frame (:func:`score_devices`) chunk by chunk through the one document
    builder (:func:`~iot_fed.analytics.verdicts.verdict_docs`) and the one verdict write
    (:func:`~iot_fed.store.live.store_verdicts`); return the counts."""
    counts = dict.fromkeys(COUNT_FIELDS, 0)
    counts["n"] = len(scored)
    scored_at = dt.datetime.now(dt.UTC)
    for i in range(0, len(scored), WRITE_CHUNK):
        preds, anomalies = verdict_docs(
            scored.iloc[i : i + WRITE_CHUNK], source=source, scored_at=scored_at
        )
        for k, v in store_verdicts(db, preds, anomalies).items():
            counts[k] += v
    counts["anomalies"] = int(scored["flag"].sum())
    return counts


def _score_and_store(
    target: MongoTarget,
    blob: Broadcast,
    version: int,
    threshold: float,
    source: str,
    quiet_s: float,
):
    """applyInPandas body: score and upsert one mote's readings and its incidents; return
    its counts and newest reading's time."""

    def run(pdf: pd.DataFrame) -> pd.DataFrame:
        bundle = bundle_from_blob(blob.value)
        total = dict.fromkeys(TASK_FIELDS, 0)
        if len(pdf):
            db = target.shared()
            scored = score_devices(bundle, threshold, pdf, version)
            total.update(store_scored(db, scored, source))
            _, docs = advance(int(scored["moteid"].iloc[0]), None, scored, quiet_s)
            total["incidents"] = upsert_incidents(db, docs, source=source)
            total["last_ts_ms"] = int(scored["ts_ms"].max())
        return pd.DataFrame([total])

    return run


def score_and_store(
    spark: SparkSession,
    settings: Settings,
    readings: DataFrame,
    *,
    model_version: int | None = None,
    source: str = "batch",
) -> PredictionsResult:
    """Score ``readings`` (:data:`~iot_fed.analytics.readings.READINGS_SCHEMA`) with the
    global model (default: promoted) and upsert the predictions partition by partition."""
    t0 = time.monotonic()
    target = MongoTarget.from_settings(settings)
    db = target.connect()
    try:
        model = load_global_model(db, model_version)
    finally:
        db.client.close()
    blob = spark.sparkContext.broadcast(model.blob)
    try:
        rows = (
            readings.groupBy("moteid")
            .applyInPandas(
                _score_and_store(
                    target, blob, model.version, model.threshold, source, settings.incident_quiet_s
                ),
                COUNTS_SCHEMA,
            )
            .collect()
        )
    finally:
        blob.unpersist()
    sums = {c: int(sum(r[c] for r in rows)) for c in (*COUNT_FIELDS, "incidents")}
    if rows:  # the fleet's data time: its newest reading
        db = target.connect()
        try:
            fleet_ms = max(int(r["last_ts_ms"]) for r in rows)
            close_due_incidents(db, fleet_ms, settings.incident_quiet_s)
        finally:
            db.client.close()
    result = PredictionsResult(
        model.version, model.threshold, **sums, seconds=round(time.monotonic() - t0, 3)
    )
    log.info("predictions with global model v%d: %s", model.version, result)
    return result


def write_predictions(
    spark: SparkSession, settings: Settings, *, model_version: int | None = None
) -> PredictionsResult:
    """Predictions for every stored reading with the promoted global model (or
    ``model_version``), written idempotently to MongoDB ``predictions``."""
    return score_and_store(
        spark, settings, read_readings(spark, settings), model_version=model_version, source="batch"
    )
