"""The scorer's micro-batch log: where each batch's time went, from Spark's own progress.

:class:`ProgressLog` reads the query's progress (``StreamingQuery.lastProgress``, a dict)
on the driver: the streaming loop feeds it after each micro-batch and every few seconds.
For the one query it watches it logs

* one line per *slow* micro-batch with data (longer than ``slow_factor`` x the trigger):
  rows, the trigger's total and its parts (``durationMs``: offsets, planning, WAL,
  ``addBatch``, commit), the stateful operator's Python call (``allUpdatesTimeMs``), its
  timeout pass and state commit, and the driver's collect and MongoDB write (from
  :class:`~iot_fed.analytics.streaming.StreamCounts` of the same batch id);
* one summary line every ``summary_s``: batches, rows, rows/s, median and max batch time.

Spark's own "falling behind" warning says only that a batch was slow; this says where.
Not a ``StreamingQueryListener``: pyspark turns each progress event into Python objects
field by field over py4j, ~5% of a core on the driver at 1,000 rec/s (py-spy), where
``lastProgress`` is one JSON string.
"""

from __future__ import annotations

import logging
import statistics
import threading
import time
from typing import Any

log = logging.getLogger(__name__)

PARTS = ("latestOffset", "queryPlanning", "walCommit", "addBatch", "commitOffsets")
STATE_PARTS = ("allUpdatesTimeMs", "allRemovalsTimeMs", "commitTimeMs")


def batch_line(progress: dict[str, Any], driver: dict[str, Any] | None) -> str:
    """One micro-batch's breakdown, e.g. ``batch 12: 1530 rows in 1563 ms (...)``."""
    d = progress.get("durationMs") or {}
    parts = " ".join(f"{k}={int(d.get(k, 0))}" for k in PARTS)
    line = f"batch {progress['batchId']}: {progress.get('numInputRows', 0)} rows in "
    line += f"{int(d.get('triggerExecution', 0))} ms ({parts}"
    ops = progress.get("stateOperators") or []
    if ops:
        line += " | state " + " ".join(f"{k[:-6]}={int(ops[0].get(k, 0))}" for k in STATE_PARTS)
    if driver:
        line += f" | collect={driver['collect_ms']:.0f} store={driver['store_ms']:.0f}"
    return line + ")"


class ProgressLog:
    """Logs the slow micro-batches of query ``name`` and a summary every ``summary_s``."""

    def __init__(
        self,
        name: str,
        trigger_s: float,
        driver_batches: dict[int, dict[str, Any]],
        slow_factor: float = 1.5,
        summary_s: float = 60.0,
    ) -> None:
        self.name = name
        self.slow_ms = slow_factor * trigger_s * 1000
        self.driver_batches = driver_batches
        self.summary_s = summary_s
        self.last_batch_id = -1  # the newest batch observed: each one is judged once
        self._lock = threading.Lock()  # fed by the batch thread and the run loop
        self._since = time.monotonic()
        self._times: list[float] = []
        self._rows = 0

    def observe(self, progress: dict[str, Any] | None) -> None:
        """Judge one progress dict (a batch already observed is ignored)."""
        if not progress or progress.get("name") != self.name:
            return
        with self._lock:
            self._observe(progress)

    def _observe(self, progress: dict[str, Any]) -> None:
        batch_id = int(progress.get("batchId", -1))
        if batch_id <= self.last_batch_id:
            return
        self.last_batch_id = batch_id
        driver = self.driver_batches.pop(batch_id, None)
        for old in [b for b in list(self.driver_batches) if b < batch_id]:
            self.driver_batches.pop(old, None)
        rows = int(progress.get("numInputRows") or 0)
        if not rows:
            return
        total = float((progress.get("durationMs") or {}).get("triggerExecution", 0))
        self._times.append(total)
        self._rows += rows
        if total > self.slow_ms:
            log.info("slow %s", batch_line(progress, driver))
        now = time.monotonic()
        if now - self._since >= self.summary_s:
            self._summary(now)

    def _summary(self, now: float) -> None:
        span = now - self._since
        log.info(
            "last %.0f s: %d micro-batches, %d rows (%.1f rows/s), batch median %.0f, max %.0f ms",
            span,
            len(self._times),
            self._rows,
            self._rows / span,
            statistics.median(self._times),
            max(self._times),
        )
        self._since, self._times, self._rows = now, [], 0
