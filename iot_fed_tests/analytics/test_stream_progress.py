"""The scorer's micro-batch log (fed the query's progress dicts, ``lastProgress``)."""

from __future__ import annotations

import logging

import pytest

from iot_fed.analytics.stream_progress import ProgressLog


def progress(batch_id: int, rows: int, total_ms: int, name: str = "scorer") -> dict:
    durations = {
        "triggerExecution": total_ms,
        "latestOffset": 5,
        "queryPlanning": 30,
        "walCommit": 40,
        "addBatch": total_ms - 120,
        "commitOffsets": 45,
    }
    state = {"allUpdatesTimeMs": 300, "allRemovalsTimeMs": 20, "commitTimeMs": 35}
    return {
        "name": name, "batchId": batch_id, "numInputRows": rows, "durationMs": durations,
        "stateOperators": [state],
    }  # fmt: skip


def test_slow_batches_are_logged_with_their_parts_and_a_summary_follows(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    driver = {7: {"collect_ms": 800.4, "store_ms": 210.0}, 3: {"collect_ms": 1, "store_ms": 1}}
    log = ProgressLog("scorer", trigger_s=1.0, driver_batches=driver, summary_s=60)
    clock = iter([100.0, 130.0, 170.0])
    monkeypatch.setattr("iot_fed.analytics.stream_progress.time.monotonic", lambda: next(clock))
    log._since = 95.0
    with caplog.at_level(logging.INFO, logger="iot_fed.analytics.stream_progress"):
        log.observe(progress(6, 12, 900))  # under 1.5 triggers: no line
        log.observe(progress(7, 1530, 1600))
        log.observe(progress(7, 1530, 1600))  # seen again (the loop and the batch both feed it)
        log.observe(progress(8, 0, 5000))  # no data: not a batch to judge
        log.observe(progress(9, 40, 700, name="other"))  # another query
        log.observe(progress(10, 20, 1000))
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == (
        "slow batch 7: 1530 rows in 1600 ms (latestOffset=5 queryPlanning=30 walCommit=40 "
        "addBatch=1480 commitOffsets=45 | state allUpdates=300 allRemovals=20 commit=35 "
        "| collect=800 store=210)"
    )
    assert lines[1].startswith("last 75 s: 3 micro-batches, 1562 rows (20.8 rows/s)")
    assert lines[1].endswith("batch median 1000, max 1600 ms")
    assert len(lines) == 2
    assert driver == {}  # the driver's figures are dropped once their batch is logged
