"""Anomaly score + flag per reading for the promoted global model, upserted to MongoDB.

Readings are grouped by mote (``applyInPandas``) and each device's series is scored in
epoch order through ``score_device`` (:func:`~iot_fed.analytics.batch_scoring.score_devices`),
the same function the stream uses, so batch == stream. Each Spark task and writes them with pymongo
bulk writes keyed on ``(moteid, ts)`` (:func:`iot_fed.store.upsert_predictions`; never
replacing a newer model's verdict), so re-running is idempotent and nothing large is
collected on the driver.
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
from iot_fed.analytics.models import bundle_from_blob, load_global_model
from iot_fed.analytics.readings import MongoTarget, read_readings
from iot_fed.config import Settings
from iot_fed.store import upsert_predictions

log = logging.getLogger(__name__)

WRITE_CHUNK = 5_000
COUNT_FIELDS = ("n", "anomalies", "inserted", "updated", "unchanged", "stale")
COUNTS_SCHEMA = T.StructType([T.StructField(c, T.LongType(), False) for c in COUNT_FIELDS])


@dataclass(frozen=True)
class PredictionsResult:
    """Counts of one predictions run (``inserted + updated + unchanged + stale == n``)."""

    model_version: int
    threshold: float
    n: int
    anomalies: int
    inserted: int
    updated: int
    unchanged: int
    stale: int
    seconds: float

    def summary(self) -> dict[str, float | int]:
        return asdict(self)


def prediction_docs(
    scored: pd.DataFrame, model_version: int, threshold: float, source: str, created_at: dt.datetime
) -> list[dict]:
    """``predictions`` documents from a scored frame (ts, epoch, moteid, label, score,
    is_anomaly), with plain Python values for BSON."""
    ts = pd.to_datetime(scored["ts"], utc=True).dt.floor("ms")  # MongoDB keeps milliseconds
    ts_list = ts.array.to_pydatetime().tolist()
    labels = scored["label"].astype(object).where(scored["label"].notna(), None).tolist()
    return [
        {
            "moteid": m,
            "ts": t,
            "epoch": e,
            "score": s,
            "threshold": threshold,
            "is_anomaly": a,
            "model_version": model_version,
            "label": lab,
            "created_at": created_at,
            "source": source,
        }
        for m, t, e, s, a, lab in zip(
            scored["moteid"].astype("int64").tolist(),
            ts_list,
            scored["epoch"].astype("int64").tolist(),
            scored["score"].astype(float).tolist(),
            scored["is_anomaly"].astype(bool).tolist(),
            labels,
            strict=True,
        )
    ]


def store_scored(
    db, scored: pd.DataFrame, model_version: int, threshold: float, source: str
) -> dict[str, int]:
    """Upsert a scored frame in chunks; return :data:`COUNT_FIELDS` counts."""
    counts = dict.fromkeys(COUNT_FIELDS, 0)
    counts["n"] = len(scored)
    counts["anomalies"] = int(scored["is_anomaly"].sum())
    docs = prediction_docs(scored, model_version, threshold, source, dt.datetime.now(dt.UTC))
    for i in range(0, len(docs), WRITE_CHUNK):
        got = upsert_predictions(db, docs[i : i + WRITE_CHUNK])
        # runs report an older model's skipped verdicts as kept (``unchanged``)
        got["unchanged"] += got.pop("stale")
        for k, v in got.items():
            counts[k] += v
    return counts


def _score_and_store(
    target: MongoTarget, blob: Broadcast, version: int, threshold: float, source: str
):
    """applyInPandas body: score and upsert one mote's readings; return its counts."""

    def run(pdf: pd.DataFrame) -> pd.DataFrame:
        bundle = bundle_from_blob(blob.value)
        total = dict.fromkeys(COUNT_FIELDS, 0)
        if len(pdf):
            db = target.shared()
            scored = score_devices(bundle, threshold, pdf)
            total = store_scored(db, scored, version, threshold, source)
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
                _score_and_store(target, blob, model.version, model.threshold, source),
                COUNTS_SCHEMA,
            )
            .collect()
        )
    finally:
        blob.unpersist()
    sums = {c: int(sum(r[c] for r in rows)) for c in COUNT_FIELDS}
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
