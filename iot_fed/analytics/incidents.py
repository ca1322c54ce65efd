"""Incidents: a device's consecutive flagged readings as ONE alarm (pure: pandas/numpy only).

:func:`advance` takes one device's incident state (or None) and its newly scored readings
(a verdict frame, :data:`~iot_fed.analytics.verdicts.VERDICT_COLUMNS`, optionally with the
raw channel columns) and returns the new state and the incident documents to upsert. The
streaming scorer threads the state through its per-mote Spark state, the batch
``predictions`` asset calls it once per device over the whole series: same readings, same
incidents.

Rules (all in data time, ``ts_ms``, never wall clock):

* A flagged reading opens an incident, ``_id`` = ``<moteid>:<start ts ms>`` (the id of its
  first anomaly), or joins the open one when it comes less than ``quiet_s`` after the
  incident's last flagged reading (``last_seen``).
* The device's first reading more than ``quiet_s`` after ``last_seen`` closes it:
  ``resolved`` if the device reported (unflagged) within the quiet period, ``stale`` if it
  was silent throughout. A device that never reports again is closed by the fleet's data
  time (:func:`close_due`), by the same rule.
* A reading no newer (by ``epoch``) than the newest one the state has seen (late, or sent
  again) is ignored: it can neither open nor close an incident twice.

Each document carries ``rev`` (``2 * last reading ts + closed``), which only grows, so the
store keeps the newest revision of an incident whatever order the writes come in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from iot_fed.analytics.verdicts import channels_responsible
from iot_fed.fl.sanity import SANITY_PREFIX
from iot_fed.readings import CHANNELS, FAIL_VOLTAGE

LOW_VOLTAGE = FAIL_VOLTAGE + 0.1
"""An episode whose flagged readings go below this voltage is a battery fault."""
STUCK_SHARE = 0.5
"""A channel that repeats its previous flagged value in this share of them is stuck."""
DRIFT_CORRELATION = 0.6
"""Errors this correlated with their order in the episode: drift (they grow)."""
OFFSET_CV = 0.5
"""Errors this steady (std / mean): offset; more erratic: noise."""
FAULT_TYPES = ("data_fault", "battery", "spike", "stuck", "drift", "offset", "noise")
STATES = ("open", "resolved", "stale")
_N = len(CHANNELS)


@dataclass(frozen=True)
class Episode:
    """An open incident's running statistics (incremental: a stream in chunks adds up to
    exactly the batch's floats, reading by reading in the same order)."""

    start_ms: int
    last_seen_ms: int
    """Data time of the newest flagged reading."""
    last_reading_ms: int
    """Data time of the device's newest reading (flagged or not) since the start."""
    n_flagged: int = 0
    n_readings: int = 0
    n_data_fault: int = 0
    n_battery: int = 0
    peak_ratio: float | None = None
    peak_ms: int | None = None
    model_version: int = 0
    channel_counts: list[int] = field(default_factory=lambda: [0] * _N)
    err_sum: list[float] = field(default_factory=lambda: [0.0] * _N)
    err_sq: list[float] = field(default_factory=lambda: [0.0] * _N)
    err_k: list[float] = field(default_factory=lambda: [0.0] * _N)
    """Per channel, sum of k * err over the flagged readings (k = 0, 1, ...): the trend."""
    err_n: list[int] = field(default_factory=lambda: [0] * _N)
    vmin: list[float | None] = field(default_factory=lambda: [None] * _N)
    prev: list[float | None] = field(default_factory=lambda: [None] * _N)
    """Per channel, the previous flagged reading's value, and how often it repeated."""
    repeats: list[int] = field(default_factory=lambda: [0] * _N)


@dataclass(frozen=True)
class IncidentState:
    """One device's incident state between calls (JSON in the scorer's Spark state)."""

    last_epoch: int | None = None
    """The newest reading's epoch seen: older or equal ones are ignored."""
    open: Episode | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "last_epoch": self.last_epoch,
            "open": None if self.open is None else asdict(self.open),
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any] | None) -> IncidentState | None:
        if d is None:
            return None
        ep = d.get("open")
        return cls(d.get("last_epoch"), None if ep is None else Episode(**ep))


def _finite(v: Any) -> float | None:
    return float(v) if v is not None and np.isfinite(v) else None


def _add_flagged(ep: Episode, ts: int, row: Mapping[str, Any], errs: np.ndarray) -> Episode:
    """The episode with one more flagged reading."""
    reason = row["reason"] if isinstance(row["reason"], str) else None
    score, thr = _finite(row["score"]), _finite(row["threshold"])
    ratio = score / thr if score is not None and thr else None
    counts, esum, esq, ek, en = (
        list(x) for x in (ep.channel_counts, ep.err_sum, ep.err_sq, ep.err_k, ep.err_n)
    )
    vmin, prev, repeats = list(ep.vmin), list(ep.prev), list(ep.repeats)
    for c in channels_responsible(errs, reason):
        counts[CHANNELS.index(c)] += 1
    for j, c in enumerate(CHANNELS):
        e = errs[j]
        if np.isfinite(e):
            esum[j] += float(e)
            esq[j] += float(e) ** 2
            ek[j] += ep.n_flagged * float(e)
            en[j] += 1
        v = _finite(row.get(c))
        if v is not None:
            vmin[j] = v if vmin[j] is None else min(vmin[j], v)
            repeats[j] += v == prev[j]
        prev[j] = v
    peak = ratio is not None and (ep.peak_ratio is None or ratio > ep.peak_ratio)
    return replace(
        ep,
        last_seen_ms=ts,
        last_reading_ms=ts,
        n_flagged=ep.n_flagged + 1,
        n_readings=ep.n_readings + 1,
        n_data_fault=ep.n_data_fault + bool(reason and reason.startswith("data_fault:")),
        n_battery=ep.n_battery + bool(reason and reason.startswith(f"{SANITY_PREFIX}voltage")),
        peak_ratio=ratio if peak else ep.peak_ratio,
        peak_ms=ts if peak else ep.peak_ms,
        model_version=max(ep.model_version, int(row["model_version"])),
        channel_counts=counts,
        err_sum=esum,
        err_sq=esq,
        err_k=ek,
        err_n=en,
        vmin=vmin,
        prev=prev,
        repeats=repeats,
    )


def channels_of(ep: Episode) -> list[str]:
    """The channels named by the episode's flagged readings, most often first."""
    order = sorted(range(_N), key=lambda j: (-ep.channel_counts[j], j))
    return [CHANNELS[j] for j in order if ep.channel_counts[j] > 0]


def fault_type(ep: Episode) -> str:
    """A guess at the fault, in this order: ``data_fault`` (most flagged readings are data
    faults), ``battery`` (a voltage sanity reason or voltage < :data:`LOW_VOLTAGE`),
    ``spike`` (1-2 flagged readings), then from the main channel (the one most often
    responsible): ``stuck`` (it repeats its previous flagged value in at least
    :data:`STUCK_SHARE` of them), ``drift`` (its errors grow
    through the episode), ``offset`` (steady errors) or ``noise`` (erratic errors)."""
    if ep.n_data_fault * 2 >= ep.n_flagged:
        return "data_fault"
    volt = ep.vmin[CHANNELS.index("voltage")]
    if ep.n_battery or (volt is not None and volt < LOW_VOLTAGE):
        return "battery"
    if ep.n_flagged <= 2:
        return "spike"
    main = channels_of(ep)
    j = CHANNELS.index(main[0]) if main else int(np.argmax(ep.err_sum))
    if ep.repeats[j] >= STUCK_SHARE * ep.n_flagged:
        return "stuck"
    n = ep.err_n[j]
    if n < 3:
        return "noise"
    mean = ep.err_sum[j] / n
    sd = float(np.sqrt(max(ep.err_sq[j] / n - mean**2, 0.0)))
    # correlation of the errors with their order k = 0..n-1 (k's mean (n-1)/2, var (n^2-1)/12)
    cov = ep.err_k[j] / n - mean * (n - 1) / 2
    corr = cov / (sd * np.sqrt((n * n - 1) / 12)) if sd > 0 else 0.0
    if corr >= DRIFT_CORRELATION:
        return "drift"
    return "offset" if mean > 0 and sd / mean < OFFSET_CV else "noise"


def _closed(ep: Episode) -> str:
    """How a due episode closes: resolved if the device reported after its last flagged
    reading (within the quiet period), stale if it was silent."""
    return "resolved" if ep.last_reading_ms > ep.last_seen_ms else "stale"


def incident_doc(moteid: int, ep: Episode, state: str) -> dict[str, Any]:
    """The document of an episode (dates as ms since the epoch: the store converts them)."""
    closed = state != "open"
    return {
        "_id": f"{int(moteid)}:{ep.start_ms}",
        "moteid": int(moteid),
        "start_ms": ep.start_ms,
        "last_seen_ms": ep.last_seen_ms,
        "end_ms": ep.last_seen_ms if closed else None,
        "last_reading_ms": ep.last_reading_ms,
        "state": state,
        "channels": channels_of(ep),
        "peak_ratio": ep.peak_ratio,
        "peak_ms": ep.peak_ms,
        "fault_type": fault_type(ep),
        "n_flagged": ep.n_flagged,
        "n_readings": ep.n_readings,
        "model_version": ep.model_version,
        "rev": 2 * ep.last_reading_ms + int(closed),
    }


def joins(ts_ms: Any, last_seen_ms: Any, quiet_ms: int) -> Any:
    """Whether a reading at ``ts_ms`` still belongs to the incident last flagged at
    ``last_seen_ms`` (the rule of :func:`advance`; element-wise on arrays)."""
    return ts_ms - last_seen_ms <= quiet_ms


def incident_starts(
    device: np.ndarray, ts_ms: np.ndarray, flags: np.ndarray, quiet_s: float
) -> np.ndarray:
    """Per reading (sorted by device, then time): whether it opens an incident, by the rule
    of :func:`advance` (vectorised: the evaluation counts incidents at many thresholds)."""
    dev, ts, fl = np.asarray(device), np.asarray(ts_ms, np.int64), np.asarray(flags, bool)
    idx = np.flatnonzero(fl)
    starts = np.zeros(fl.size, bool)
    if idx.size:
        first = np.ones(idx.size, bool)
        same = dev[idx[1:]] == dev[idx[:-1]]
        first[1:] = ~same | ~joins(ts[idx[1:]], ts[idx[:-1]], int(quiet_s * 1000))
        starts[idx[first]] = True
    return starts


def advance(
    moteid: int, state: IncidentState | None, scored: pd.DataFrame, quiet_s: float
) -> tuple[IncidentState, list[dict[str, Any]]]:
    """Thread one device's state through its newly scored readings (any order: they are
    taken by ``epoch``; those no newer than the state's are ignored). Returns the new
    state and the documents of every incident opened, extended or closed (one each)."""
    state = state or IncidentState()
    quiet_ms = int(quiet_s * 1000)
    rows = scored.sort_values("epoch", kind="stable")
    if state.last_epoch is not None:
        rows = rows[rows["epoch"].to_numpy() > state.last_epoch]
    rows = rows.drop_duplicates("epoch")
    if rows.empty:
        return state, []
    errs = rows[[f"err_{c}" for c in CHANNELS]].to_numpy(np.float64)
    docs: dict[str, dict[str, Any]] = {}
    ep = state.open
    for i, row in enumerate(rows.to_dict("records")):
        ts = int(row["ts_ms"])
        if ep is not None and not joins(ts, ep.last_seen_ms, quiet_ms):
            doc = incident_doc(moteid, ep, _closed(ep))
            docs[doc["_id"]] = doc
            ep = None
        if bool(row["flag"]):
            ep = _add_flagged(ep or Episode(ts, ts, ts), ts, row, errs[i])
        elif ep is not None:
            ep = replace(ep, last_reading_ms=ts, n_readings=ep.n_readings + 1)
        if ep is not None:
            docs[f"{int(moteid)}:{ep.start_ms}"] = incident_doc(moteid, ep, "open")
    return IncidentState(int(rows["epoch"].iloc[-1]), ep), list(docs.values())


def due_state(last_seen_ms: int, last_reading_ms: int, fleet_ms: int, quiet_s: float) -> str | None:
    """How the fleet's data time (``fleet_ms``: the newest reading of any device) closes
    an open incident: None while its quiet period lasts, then ``resolved`` if its device
    reported after the last flagged reading, ``stale`` if it was silent."""
    if fleet_ms - last_seen_ms <= int(quiet_s * 1000):
        return None
    return "resolved" if last_reading_ms > last_seen_ms else "stale"
