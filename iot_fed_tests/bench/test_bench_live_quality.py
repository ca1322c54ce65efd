"""``bench/bench_live_quality.py``'s per-minute table: flagged clean readings and the motes
that raised them (no pipeline run: the grouping alone)."""

from __future__ import annotations

import datetime as dt
import importlib

from iot_fed_tests.bench.helpers import ROOT


def test_flagged_clean_readings_per_minute_name_their_motes(monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    per_minute = importlib.import_module("bench_live_quality").per_minute
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)

    def doc(s: float, mote: int, flagged: bool, label: str | None = None) -> dict:
        return {
            "kafka_ts": t0 + dt.timedelta(seconds=s),
            "moteid": mote,
            "is_anomaly": flagged,
            "label": label,
            "reason": None,
            "model_version": 4,
        }

    docs = [doc(1, 16, True), doc(2, 16, True), doc(3, 7, True), doc(4, 7, False)]
    docs += [doc(5, 9, True, label="spike"), doc(70, 3, False)]  # a labelled fault is not clean
    rows = per_minute(docs)
    assert [r["minute"] for r in rows] == [1, 2]
    first = rows[0]
    assert first["scored"] == 5 and first["clean"] == 4 and first["flagged_clean"] == 3
    assert first["flagged_pct"] == 75.0 and first["flagged_motes"] == {16: 2, 7: 1}
    assert rows[1]["flagged_clean"] == 0 and rows[1]["flagged_motes"] == {}
