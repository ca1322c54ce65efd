"""Incidents from verdict frames (pure :mod:`iot_fed.analytics.incidents`): open, extend,
resolve, stale, the fault-type guess, and late / re-sent readings."""

from __future__ import annotations

import numpy as np
import pandas as pd

from iot_fed.analytics.incidents import IncidentState, advance, due_state, fault_type
from iot_fed.readings import CHANNELS

STEP_MS = 31_000  # an Intel Lab mote's reporting period
QUIET_S = 600.0  # ~19 readings


def frame(flags: list[bool], *, start: int = 0, moteid: int = 7, **cols: list) -> pd.DataFrame:
    """A verdict frame of one device, one reading per STEP_MS from epoch ``start``."""
    n = len(flags)
    epoch = np.arange(start, start + n)
    errs = {f"err_{c}": np.full(n, 0.1) for c in CHANNELS}
    errs["err_temperature"] = np.where(flags, 5.0, 0.1)
    base = {
        "moteid": np.full(n, moteid),
        "epoch": epoch,
        "ts_ms": 1_000_000_000 + epoch * STEP_MS,
        "score": np.where(flags, 5.0, 0.1),
        "threshold": np.full(n, 1.0),
        "flag": np.asarray(flags, bool),
        "reason": [None] * n,
        "label": [None] * n,
        "model_version": np.full(n, 3),
        **errs,
        "temperature": 20.0 + 0.01 * epoch,
        "humidity": np.full(n, 40.0),
        "light": np.full(n, 100.0),
        "voltage": np.full(n, 2.7),
    }
    base.update({k: v for k, v in cols.items()})
    return pd.DataFrame(base)


def run(df: pd.DataFrame, state: IncidentState | None = None):
    return advance(7, state, df, QUIET_S)


def test_one_episode_with_a_tail_is_one_incident() -> None:
    # a fault of 5 readings, 3 quiet ones, 2 more alarms (the tail): one incident
    flags = [False] * 40 + [True] * 5 + [False] * 3 + [True] * 2 + [False] * 10
    state, docs = run(frame(flags))
    assert len(docs) == 1
    d = docs[0]
    assert d["_id"] == f"7:{1_000_000_000 + 40 * STEP_MS}"
    assert d["state"] == "open" and d["end_ms"] is None
    assert d["n_flagged"] == 7 and d["last_seen_ms"] == 1_000_000_000 + 49 * STEP_MS
    assert d["channels"][0] == "temperature"
    assert d["peak_ratio"] == 5.0 and d["model_version"] == 3
    assert state.open is not None and state.last_epoch == 59


def test_resolved_after_the_quiet_period_then_a_new_incident() -> None:
    flags = [True] * 3 + [False] * 30 + [True]
    state, docs = run(frame(flags))
    by_id = {d["_id"]: d for d in docs}
    first, second = by_id["7:1000000000"], by_id[f"7:{1_000_000_000 + 33 * STEP_MS}"]
    assert first["state"] == "resolved" and first["end_ms"] == first["last_seen_ms"]
    assert first["last_reading_ms"] - first["last_seen_ms"] <= QUIET_S * 1000
    assert second["state"] == "open" and second["fault_type"] == "spike"
    assert state.open is not None and state.open.start_ms == second["start_ms"]


def test_silent_device_is_stale_on_return_and_by_fleet_time() -> None:
    state, docs = run(frame([True] * 4))
    assert [d["state"] for d in docs] == ["open"]
    last_seen = docs[0]["last_seen_ms"]
    # the fleet's data time: open within the quiet period, stale after it
    assert due_state(last_seen, last_seen, last_seen + int(QUIET_S * 1000), QUIET_S) is None
    assert due_state(last_seen, last_seen, last_seen + int(QUIET_S * 1000) + 1, QUIET_S) == "stale"
    assert due_state(last_seen, last_seen + STEP_MS, last_seen + 10**7, QUIET_S) == "resolved"
    # the device returns an hour later (a gap is no incident): the old one is stale
    state, docs = run(frame([False] * 3, start=4 + 120), state)
    assert [(d["_id"], d["state"]) for d in docs] == [("7:1000000000", "stale")]
    assert state.open is None


def test_chunks_give_the_same_incidents_as_one_call() -> None:
    rng = np.random.default_rng(0)
    flags = list(rng.random(300) < 0.08)
    df = frame(flags)
    whole_state, whole = run(df)
    state, chunked = None, {}
    for lo in range(0, 300, 17):
        state, docs = run(df.iloc[lo : lo + 17], state)
        state = IncidentState.from_json(state.to_json())  # through the Spark state's JSON
        chunked.update({d["_id"]: d for d in docs})
    assert state == whole_state
    assert chunked == {d["_id"]: d for d in whole}


def test_late_and_resent_readings_change_nothing() -> None:
    df = frame([False] * 5 + [True] * 4 + [False] * 5)
    state, docs = run(df)
    again, docs2 = run(df.iloc[3:12], state)  # sent again
    assert docs2 == [] and again == state
    late = df.iloc[[6]].assign(flag=True)  # a late reading, flagged out of context
    assert run(late, state) == (state, [])


def test_fault_types() -> None:
    n = 12
    flags = [True] * n

    def guess(**cols) -> str:
        return fault_type(run(frame(flags, **cols))[0].open)

    assert guess() == "offset"  # steady errors
    assert guess(err_temperature=np.linspace(1.5, 9, n)) == "drift"
    assert guess(err_temperature=np.tile([1.5, 9.0, 2.0], 4)) == "noise"
    assert guess(temperature=np.full(n, 21.5)) == "stuck"
    assert guess(voltage=np.full(n, 2.35)) == "battery"
    assert guess(reason=["sanity:voltage 2.2 < 2.3"] * n) == "battery"
    nan = np.full(n, np.nan)
    assert guess(reason=["data_fault:light is nan"] * n, score=nan) == "data_fault"
    assert fault_type(run(frame([True, True]))[0].open) == "spike"
