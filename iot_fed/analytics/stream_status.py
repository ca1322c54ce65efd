"""What the streaming scorer reports about itself: its totals (:class:`StreamCounts`), the
``scorer_status`` heartbeat document (:class:`Heartbeat`) and the records/s and backlog
read from a query's progress."""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from iot_fed.analytics.readings import MongoTarget
from iot_fed.store.live import write_scorer_status

log = logging.getLogger(__name__)


@dataclass
class StreamCounts:
    """Totals over the micro-batches this process ran (driver side)."""

    batches: int = 0
    records: int = 0
    n: int = 0  # valid records scored
    anomalies: int = 0
    inserted: int = 0
    updated: int = 0
    kept: int = 0  # a verdict of the same or a newer model version was already stored
    skipped: int = 0  # malformed: ingestion dead-letters them
    model_versions: list[int] = field(default_factory=list)  # in the order first used
    collect_ms: float = 0.0  # the micro-batch's Spark job, the executors' writes included
    store_ms: float = 0.0  # the driver's own writes: closing the quiet incidents
    last_batch_id: int | None = None
    last_batch_at: dt.datetime | None = None
    last_batch: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("last_batch")
        d["model_versions"] = ",".join(str(v) for v in self.model_versions)
        d["last_batch_at"] = None if self.last_batch_at is None else self.last_batch_at.isoformat()
        return d


class Heartbeat:
    """Driver side: the ``scorer_status`` document, written by the run loop every few
    seconds (so a stopped scorer is visible as a stale heartbeat) and after a batch when
    the last write is ``batch_min_s`` old: a write per batch was a database round trip
    inside every micro-batch."""

    batch_min_s = 2.0

    def __init__(self, target: MongoTarget, name: str) -> None:
        self.db = target.connect()
        self.name = name
        self.started_at = dt.datetime.now(dt.UTC)
        self.lock = threading.Lock()
        self.written_at = -float("inf")  # time.monotonic() of the last write

    def write(self, state: str, counts: StreamCounts, **extra: Any) -> None:
        last = counts.last_batch
        doc = {
            "updated_at": dt.datetime.now(dt.UTC),
            "state": state,
            "pid": os.getpid(),
            "started_at": self.started_at,
            "last_batch_id": counts.last_batch_id,
            "last_batch_at": counts.last_batch_at,
            "batch_records": last.get("records"),
            "batch_predictions": last.get("n"),
            "batch_anomalies": last.get("anomalies"),
            "batch_skipped": last.get("skipped"),
            "batch_max_latency_s": last.get("max_latency_s"),
            "model_version": counts.model_versions[-1] if counts.model_versions else None,
            "totals": {k: v for k, v in counts.summary().items() if isinstance(v, int)},
            **extra,
        }
        with self.lock:
            self.written_at = time.monotonic()
            try:
                write_scorer_status(self.db, doc, self.name)
            except Exception as exc:  # the heartbeat must never stop the scorer
                log.warning("could not write the scorer heartbeat: %s", exc)

    def close(self) -> None:
        self.db.client.close()


def progress_extra(progress: dict[str, Any] | None) -> dict[str, Any]:
    """records/s and the offset backlog from a query progress (``lastProgress``)."""
    p = progress or {}
    backlog = 0
    for src in p.get("sources", []):
        end, latest = src.get("endOffset") or {}, src.get("latestOffset") or {}
        if isinstance(end, dict) and isinstance(latest, dict):
            for topic, parts in latest.items():
                for part, off in (parts or {}).items():
                    backlog += max(0, int(off) - int((end.get(topic) or {}).get(part, off)))
    rate = p.get("processedRowsPerSecond")
    return {"records_per_s": None if rate is None else float(rate), "backlog_records": backlog}
