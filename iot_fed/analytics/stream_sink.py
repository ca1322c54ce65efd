"""The streaming scorer's sink: its output rows written to MongoDB by the executors.

Each micro-batch runs ``batch.mapInPandas(partition_writer(...))`` (one Spark job): every
task writes its partition's rows (:func:`write_rows`: verdicts, anomalies, incidents; the
same idempotent upserts as before, ``_id`` = ``<moteid>:<ts ms>``) and returns ONE row of
counts (:data:`COUNTS_SCHEMA`). The driver collects only those rows, closes the incidents
the fleet's data time has left quiet (one query per micro-batch) and writes the heartbeat.

A task retried (a lost executor) or a micro-batch replayed (a restarted scorer) rewrites
the same ids from the same state: no duplicate, no gap.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import pandas as pd
from pyspark.sql import types as T

from iot_fed.analytics.live_state import OUT_OF_ORDER
from iot_fed.analytics.readings import MongoTarget
from iot_fed.analytics.verdicts import verdict_docs
from iot_fed.store.incidents import close_due_incidents, upsert_incidents
from iot_fed.store.live import store_verdicts

log = logging.getLogger(__name__)

SUMMED = ("records", "n", "skipped", "anomalies", "inserted", "updated", "kept", "incidents")
COUNTS_SCHEMA = T.StructType(
    [
        *[T.StructField(k, T.LongType(), False) for k in SUMMED],
        T.StructField("versions", T.ArrayType(T.IntegerType(), False), False),
        T.StructField("max_ts_ms", T.LongType(), True),
        T.StructField("max_latency_s", T.DoubleType(), True),
    ]
)
"""One partition's counts; :func:`merge_counts` adds them up."""


def write_rows(db: Any, pdf: pd.DataFrame) -> dict[str, Any]:
    """Write output rows of the stateful step (verdicts, then incidents); return their
    counts, with ``max_ts_ms``, the newest reading's data time (None without one)."""
    scored_at = dt.datetime.now(dt.UTC)
    rows = pdf[pdf["kind"] == "prediction"]
    skipped = pdf[pdf["kind"] == "skipped"]
    for r in skipped.head(5).itertuples(index=False):
        log.info(
            "skipped malformed record %s: %s (ingestion dead-letters it)", r.kafka_offset, r.reason
        )
    counts: dict[str, Any] = {
        "records": len(rows) + len(skipped),  # Kafka records (incident rows are not)
        "n": len(rows),
        "skipped": len(skipped),
        "anomalies": 0,
        "inserted": 0,
        "updated": 0,
        "kept": 0,
        "incidents": 0,
        "versions": sorted({int(v) for v in rows["model_version"]}) if len(rows) else [],
        "max_ts_ms": None,
        "max_latency_s": None,
    }
    if rows.empty:
        return counts
    preds, anomalies = verdict_docs(rows, source="streaming", scored_at=scored_at)
    # a verdict made without context (a late or repeated reading) is stored only where
    # none is: a producer that sends its readings again must not degrade the verdicts
    late = [i for i, d in enumerate(preds) if d["reason"] == OUT_OF_ORDER]
    counts.update(store_verdicts(db, preds, anomalies, insert_only=late))
    incidents = [json.loads(t) for t in pdf.loc[pdf["kind"] == "incident", "incident"]]
    counts["incidents"] = upsert_incidents(db, incidents, source="streaming", at=scored_at)
    counts["max_ts_ms"] = int(rows["ts_ms"].max())
    lat = [(scored_at - d["kafka_ts"]).total_seconds() for d in preds if d["kafka_ts"]]
    counts["max_latency_s"] = max(lat) if lat else None
    return counts


def store_batch(db: Any, pdf: pd.DataFrame, quiet_s: float) -> dict[str, Any]:
    """:func:`write_rows` of a whole micro-batch, then the closing of the open incidents
    its data time has left quiet for ``quiet_s``; return its counts."""
    counts = write_rows(db, pdf)
    close_quiet_incidents(db, counts, quiet_s)
    return counts


def close_quiet_incidents(db: Any, counts: dict[str, Any], quiet_s: float) -> None:
    """Close the open incidents the fleet's data time (the batch's newest reading: closing
    is monotone in it) has left quiet for ``quiet_s``."""
    if counts["max_ts_ms"] is not None:
        close_due_incidents(db, counts["max_ts_ms"], quiet_s, at=dt.datetime.now(dt.UTC))


def partition_writer(target: MongoTarget):
    """The ``mapInPandas`` function: write the partition's rows, yield its counts."""

    def run(frames: Iterable[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        db = target.shared()
        total = merge_counts([write_rows(db, pdf) for pdf in frames if len(pdf)])
        yield pd.DataFrame([total])

    return run


def merge_counts(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The counts of several partitions (or Spark rows of :data:`COUNTS_SCHEMA`) as one."""
    maxed = {k: [p[k] for p in parts if p[k] is not None] for k in ("max_ts_ms", "max_latency_s")}
    return {
        **{k: int(sum(p[k] for p in parts)) for k in SUMMED},
        "versions": sorted({int(v) for p in parts for v in p["versions"]}),
        **{k: (max(v) if v else None) for k, v in maxed.items()},
    }
