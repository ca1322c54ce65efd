"""Device data for a round, read through :mod:`iot_fed.store`: window features of the
training readings and of the held-out validation readings.

A reading belongs to the held-out set when ``epoch % HOLDOUT_MODULUS == 0`` (10 %),
decided by the reading itself, so the split is stable across rounds and devices and
training never sees a validation reading. The window features of every reading use the
device's preceding readings as context (held-out ones included: they are normal readings
the device really sent). Physically impossible readings (the parser's ``range_hits``
rule) and non-finite ones are left out of both sets and out of the context.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pymongo.database import Database

from iot_fed.data.parse import range_hits
from iot_fed.fl.holdout import HOLDOUT_MODULUS, held_out
from iot_fed.fl.rounds import DeviceData
from iot_fed.fl.spec import ModelSpec
from iot_fed.fl.window_features import window_features_at
from iot_fed.readings import CHANNELS, datetime_ms
from iot_fed.store.device_state import holdout_epochs, read_device_states
from iot_fed.store.ingest_progress import landed_last_epochs
from iot_fed.store.repository import reading_counts, readings_for_devices, trained_through

NEW_DEVICE_SPAN = 2
"""A device's first training reads its newest ``NEW_DEVICE_SPAN x training_window``
epochs (held-out ones counted): a full window while it dropped up to half its readings."""
VALIDATION_PER_DEVICE = 500
"""Held-out windows per device kept for validation and calibration (newest first)."""
CONTEXT_EPOCHS = 4
"""Readings before ``since`` are fetched back to ``window x CONTEXT_EPOCHS`` epochs, as
context only (motes drop readings, so a window spans more epochs than readings)."""


@dataclass
class DeviceWindow:
    """One device's usable readings of a round as window features."""

    moteid: int
    data: DeviceData
    epochs: np.ndarray  # (n,) epochs of the training rows
    n_faulty: int = 0
    offsets: dict[str, dict[str, int]] = field(default_factory=dict)
    held_epochs: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    """Epochs of the held-out rows (``data.held_out``)."""

    @property
    def n(self) -> int:
        return self.data.n

    @property
    def last_epoch(self) -> int | None:
        return int(self.epochs.max()) if self.epochs.size else None


def _offset_ranges(docs: Sequence[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """``{partition: {"min": o, "max": o}}`` of the Kafka offsets the readings came from."""
    out: dict[str, dict[str, int]] = {}
    for d in docs:
        off = d.get("kafka_offset")
        if off is None:
            continue
        r = out.setdefault(str(d.get("kafka_partition", 0)), {"min": off, "max": off})
        r["min"], r["max"] = min(r["min"], off), max(r["max"], off)
    return out


@dataclass(frozen=True)
class UsableReadings:
    """A device's in-range, finite readings in epoch order, as arrays."""

    epoch: np.ndarray  # (n,) int64, ascending
    ts_ms: np.ndarray  # (n,) int64 ms since the Unix epoch
    values: np.ndarray  # (n, len(CHANNELS)) float64

    def __len__(self) -> int:
        return int(self.epoch.size)


def _ts_ms(docs: Sequence[dict[str, Any]]) -> np.ndarray:
    ts = [d["ts"] for d in docs]
    if all(t.tzinfo is not None for t in ts):  # the store's client is tz-aware: the fast way
        sec = np.fromiter((t.timestamp() for t in ts), np.float64, len(ts))
        return np.rint(sec * 1000).astype(np.int64)
    return np.fromiter((datetime_ms(t) for t in ts), np.int64, len(ts))


def usable_readings(docs: Sequence[dict[str, Any]]) -> tuple[UsableReadings, int]:
    """In-range (the parser's :func:`~iot_fed.data.parse.range_hits`), finite readings in
    epoch order, and how many were left out. Built as columns, not a frame per device."""
    n = len(docs)
    if not n:
        empty = np.zeros(0, np.int64)
        return UsableReadings(empty, empty, np.zeros((0, len(CHANNELS)))), 0
    values = np.array([[d.get(c) for c in CHANNELS] for d in docs], dtype=np.float64)
    bad = range_hits(dict(zip(CHANNELS, values.T, strict=True)), n).any(axis=1)
    good = np.flatnonzero(~bad & np.isfinite(values).all(axis=1))
    epoch = np.fromiter((d["epoch"] for d in docs), np.int64, n)
    order = good[np.argsort(epoch[good], kind="stable")]
    ts = _ts_ms([docs[i] for i in order])
    return UsableReadings(epoch[order], ts, values[order]), n - good.size


FEATURE_ROWS_PER_CALL = 50_000
"""Readings one window-features call covers (several devices' series laid end to end):
bounds its temporaries, about 1 KB a reading."""


@dataclass
class _Series:
    moteid: int
    docs: Sequence[dict[str, Any]]
    good: UsableReadings
    n_bad: int
    since: int | None
    train: np.ndarray  # row indices into ``good``
    held: np.ndarray
    asked: np.ndarray  # train and held rows, ascending: the rows whose features are computed


def to_windows(
    found: Mapping[int, Sequence[dict[str, Any]]],
    spec: ModelSpec,
    since: Mapping[int, int | None] | None = None,
    limit: int | None = None,
) -> dict[int, DeviceWindow]:
    """Per device, its readings -> window features; rows with ``epoch <= since`` are
    context only and ``limit`` keeps the newest training rows. The features of the rows
    kept are computed for many devices in one call (their series end to end, context never
    crossing from one to the next), each row exactly as in its own series alone."""
    series = []
    for m, docs in found.items():
        good, n_bad = usable_readings(docs)
        s = None if since is None else since.get(m)
        new = good.epoch > s if s is not None else np.ones(len(good), bool)
        hold = held_out(good.epoch)
        train = np.flatnonzero(new & ~hold)
        if limit is not None:
            train = train[-limit:] if limit > 0 else train[:0]
        held = np.flatnonzero(new & hold)
        asked = np.union1d(train, held)
        series.append(_Series(int(m), docs, good, n_bad, s, train, held, asked))
    feats = _features(series, spec)
    out = {}
    for x, f in zip(series, feats, strict=True):
        tr, he = f[np.searchsorted(x.asked, x.train)], f[np.searchsorted(x.asked, x.held)]
        ep = x.good.epoch
        n_faulty = (
            x.n_bad
            if x.since is None
            else sum(1 for d in x.docs if d["epoch"] > x.since) - int((ep > x.since).sum())
        )
        out[x.moteid] = DeviceWindow(
            x.moteid,
            DeviceData(x.moteid, tr, he),
            ep[x.train],
            max(n_faulty, 0),
            _offset_ranges(x.docs),
            ep[x.held],
        )
    return out


def _features(series: Sequence[_Series], spec: ModelSpec) -> list[np.ndarray]:
    """Window features of each series' train and held rows (ascending), a bounded number
    of readings per call."""
    cfg = spec.window_config()
    out: list[np.ndarray] = []
    start = 0
    while start < len(series):
        stop, rows_in = start, 0
        while stop < len(series) and (
            stop == start or rows_in + len(series[stop].good) <= FEATURE_ROWS_PER_CALL
        ):
            rows_in += len(series[stop].good)
            stop += 1
        group = series[start:stop]
        offsets = np.cumsum([0, *(len(x.good) for x in group)])
        asked = [x.asked for x in group]
        breaks = np.zeros(int(offsets[-1]), bool)
        breaks[offsets[:-1][offsets[:-1] < offsets[-1]]] = True
        rows = np.concatenate([o + a for o, a in zip(offsets[:-1], asked, strict=True)])
        f, _ = window_features_at(
            np.concatenate([x.good.ts_ms for x in group]),
            np.concatenate([x.good.values for x in group]),
            rows.astype(np.int64),
            cfg,
            breaks=breaks,
        )
        cuts = np.cumsum([len(a) for a in asked])[:-1]
        out += np.split(f, cuts)
        start = stop
    return out


def training_windows(
    db: Database,
    since_epochs: Mapping[int, int | None],
    limit: int,
    spec: ModelSpec,
    new_readings: Mapping[int, int] | None = None,
) -> dict[int, DeviceWindow]:
    """Per device, the newest ``limit`` training readings with ``epoch > since`` (and their
    context): one query per batch of devices, each bounded below by its ``since`` (a new
    device: by its newest epoch, :data:`NEW_DEVICE_SPAN`). ``new_readings`` (landed since
    the device's last training, where known) sizes the batches."""
    back = spec.window * CONTEXT_EPOCHS
    query = {m: (None if e is None else max(int(e) - back, -1)) for m, e in since_epochs.items()}
    # a device never trained: its newest NEW_DEVICE_SPAN x limit epochs, not its history
    new = [m for m, e in since_epochs.items() if e is None]
    span = NEW_DEVICE_SPAN * limit * HOLDOUT_MODULUS // (HOLDOUT_MODULUS - 1) + back
    newest = landed_last_epochs(db, new) if new else {}
    unknown = [m for m in new if m not in newest]  # landed before the ingesters kept it
    newest |= {
        m: c["max_epoch"] for m, c in (reading_counts(db, unknown) if unknown else {}).items()
    }
    for m, e in newest.items():
        query[m] = max(e - span, -1)
    known = new_readings or {}
    expected = {m: min(int(known[m]), span) + back for m in query if m in known}
    found = readings_for_devices(db, query, expected=expected)
    return to_windows(found, spec, since_epochs, limit)


HeldOut = tuple[np.ndarray, np.ndarray]
"""A device's held-out sample: (epochs, window features), oldest first."""


def validation_windows(
    db: Database, motes: Sequence[int], limit: int, spec: ModelSpec
) -> dict[int, HeldOut]:
    """Per device, window features of its newest ``limit`` held-out readings, read from
    the readings (one query per batch of devices), bounded below by the epoch it trained
    through: for devices whose local rounds have not kept a sample yet
    (:func:`validation_samples`)."""
    through = trained_through(db, motes)
    back = limit * HOLDOUT_MODULUS + spec.window * CONTEXT_EPOCHS
    since = {
        int(m): (max(through[int(m)] - back, -1) if int(m) in through else None) for m in motes
    }
    found = readings_for_devices(db, since, limit * HOLDOUT_MODULUS)
    windows = to_windows(found, spec)
    return {m: (w.held_epochs[-limit:], w.data.held_out[-limit:]) for m, w in windows.items()}


def holdout_fields(
    state: Mapping[str, Any] | None, w: DeviceWindow, limit: int = VALIDATION_PER_DEVICE
) -> dict[str, Any]:
    """A device's held-out sample after a round: its kept rows plus the round's new ones,
    the newest ``limit`` (``device_state`` fields)."""
    ep, feats = kept_holdout(state, w.data.held_out.shape[1])
    new = ~np.isin(ep, w.held_epochs)
    ep = np.concatenate([ep[new], w.held_epochs]).astype(np.int64)
    feats = np.concatenate([feats[new], w.data.held_out]).astype(np.float64)
    order = np.argsort(ep, kind="stable")[-limit:]
    return {
        "holdout_epochs": ep[order].astype("<i8").tobytes(),
        "holdout_features": np.ascontiguousarray(feats[order]).astype("<f8").tobytes(),
    }


def kept_holdout(state: Mapping[str, Any] | None, n_features: int) -> tuple[np.ndarray, np.ndarray]:
    """(epochs, features) of a device's kept held-out sample (empty without one)."""
    if not state or "holdout_epochs" not in state:
        return np.zeros(0, np.int64), np.zeros((0, n_features))
    ep = holdout_epochs(state)
    feats = np.frombuffer(bytes(state["holdout_features"]), "<f8")
    if feats.size != ep.size * n_features:  # kept under another feature layout: start over
        return np.zeros(0, np.int64), np.zeros((0, n_features))
    return ep, feats.reshape(ep.size, n_features).copy()


def validation_samples(
    db: Database, motes: Sequence[int], limit: int, spec: ModelSpec
) -> dict[int, HeldOut]:
    """Per device, its newest ``limit`` held-out windows and their epochs: the sample its
    local rounds keep (``device_state``, read in batches), else read from its readings."""
    kept = {m: kept_holdout(s, spec.n_features) for m, s in read_device_states(db, motes).items()}
    out = {m: (ep[-limit:], f[-limit:]) for m, (ep, f) in kept.items() if len(f)}
    missing = [int(m) for m in motes if int(m) not in out]
    if missing:
        out.update(validation_windows(db, missing, limit, spec))
    return out
