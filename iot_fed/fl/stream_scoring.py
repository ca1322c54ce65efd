"""Score one device's readings in a stream or a batch, with the same result (numpy only).

``score_device(bundle, history, moteid=..., epochs=..., ts_ms=..., values=...)`` scores
new readings of one device (ascending, all newer than ``history``) and returns the
:class:`ScoredReadings` and the new :class:`DeviceHistory` (the last ``window - 1``
finite readings: the context the next call needs). Scoring a series in one call gives
exactly the same result as scoring it chunk by chunk while threading the history.

* A reading with a NaN / inf / missing channel is a *data fault*: score NaN, flagged,
  reason ``"data_fault:<channel> is nan"``; it never enters the history, so the readings
  after it are scored on clean context.
* A reading scored above ``EXCLUDE_LEVEL`` times its threshold does not enter the
  context either (it is flagged as usual), so the readings after an anomaly are judged
  against the normal readings before it: a bias or drift stays flagged while it lasts
  (the context does not learn the faulty level) and the return to normal afterwards is
  not flagged. After ``window`` such readings in a row the device's new level is taken
  as normal and enters the context (a real level shift does not alarm for ever).
  Readings just over the threshold stay in the context, so one false alarm does not
  start a chain of them. Each reading's flags depend on earlier ones only, so a batch
  is solved block by block to the same result as a stream.
* A device is *learning* while its readings cannot be judged against its own calibrated
  threshold: they are scored against the global threshold and stored, but never flagged
  by the model. Reason ``"learning:no_device_threshold"`` (the served version has no
  threshold for the device yet) or ``"learning:short_history"`` (fewer than
  ``window - 1`` readings of context: a new device, or after a gap longer than the
  window's reset gap), or ``"learning:no_device_params"`` (the served version stores
  no params for the device: the fleet's normaliser, never another device's). Otherwise
  the device is *calibrated* (reason None unless flagged by a rule below).
* The fixed sanity rule (:mod:`iot_fed.fl.sanity`) flags a physically impossible value
  or a dying battery whether the device is learning or calibrated, reason
  ``"sanity:<channel> <value> <op> <limit>"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from iot_fed.fl.detector import channel_errors, combine, standardize_by
from iot_fed.fl.device_history import DeviceHistory
from iot_fed.fl.sanity import insane, sanity_reason
from iot_fed.fl.serialization import ModelBundle
from iot_fed.fl.window_features import segment_start, window_features_at
from iot_fed.readings import CHANNELS

__all__ = [
    "LEARNING_NO_PARAMS",
    "LEARNING_NO_THRESHOLD",
    "LEARNING_SHORT_HISTORY",
    "DeviceHistory",
    "DeviceReadings",
    "ScoredReadings",
    "score_device",
    "score_many",
    "score_series",
]

EXCLUDE_LEVEL = 2.0
"""A reading scored above this many times its threshold is left out of the context."""
EXCLUDE_WINDOWS = 1
"""At most this many windows of readings in a row stay out of the context."""
BLOCK = 64
"""Rows solved together in a batch (iterated to the stream's result)."""


@dataclass(frozen=True)
class ScoredReadings:
    score: np.ndarray
    """(n,) float64; NaN for a data-fault reading."""
    channel_errors: np.ndarray
    """(n, 4) float64, per-channel contribution, CHANNELS order (NaN on a data fault)."""
    flag: np.ndarray
    """(n,) bool: anomaly (score > threshold) OR data fault."""
    threshold: np.ndarray
    """(n,) float64: the threshold applied to each reading."""
    reason: tuple[str | None, ...]


LEARNING_NO_THRESHOLD = "learning:no_device_threshold"
"""The served version has no calibrated threshold for the device: scored, not flagged."""
LEARNING_SHORT_HISTORY = "learning:short_history"
"""Too little context for the device's own threshold: scored, not flagged."""
LEARNING_NO_PARAMS = "learning:no_device_params"
"""The served version stores no per-device params for the device (its normaliser and
threshold): scored with the fleet's normaliser and the global threshold, not flagged."""


def _fault_reason(row: np.ndarray) -> str | None:
    for c, v in zip(CHANNELS, row, strict=True):
        if not np.isfinite(v):
            return f"data_fault:{c} is {'nan' if np.isnan(v) else 'inf'}"
    return None


@dataclass(frozen=True)
class SeriesScores:
    """Scores of the last ``n_new`` rows of a series (see :func:`score_series`)."""

    score: np.ndarray
    channel_errors: np.ndarray
    threshold: np.ndarray
    n_context: np.ndarray
    excluded: np.ndarray
    """(m,) rows left out of the context (the history's as given, then the new rows')."""
    excluded_run: int


def _capped(hot: np.ndarray, run: int, cap: int) -> tuple[np.ndarray, int]:
    """Rows left out of the context: above the level, at most ``cap`` in a row."""
    out = np.zeros(hot.shape[0], bool)
    for i, h in enumerate(hot):
        run = run + 1 if h else 0
        out[i] = h and run <= cap
    return out, run


@dataclass(frozen=True)
class Series:
    """One device's finite readings for :func:`score_many_series`: the last ``n_new`` are
    scored, the rows before are context (``excluded``: those that are not)."""

    moteid: int
    ts_ms: np.ndarray
    values: np.ndarray
    n_new: int
    excluded: np.ndarray | None = None
    excluded_run: int = 0


def score_series(
    bundle: ModelBundle,
    moteid: int,
    ts_ms: np.ndarray,
    values: np.ndarray,
    n_new: int,
    *,
    excluded: np.ndarray | None = None,
    excluded_run: int = 0,
) -> SeriesScores:
    """Scores of the last ``n_new`` of one device's finite readings (see :class:`Series`
    and :func:`score_many_series`)."""
    series = Series(moteid, ts_ms, values, n_new, excluded, excluded_run)
    return score_many_series(bundle, [series])[0]


def score_many_series(bundle: ModelBundle, series: Sequence[Series]) -> list[SeriesScores]:
    """:class:`SeriesScores` of several devices' series, computed together: the series are
    laid end to end with a context break before each one, so each call of the window
    features and the network serves every device at once.

    Per device, solved in blocks of :data:`BLOCK` rows, each iterated until its exclusions
    are stable: as every row depends on earlier rows only, that is the stream's result.
    The devices' blocks advance in lockstep (each recomputation covers every device whose
    block is not stable yet); devices never share context, so each gets exactly what it
    would get scored alone."""
    spec, cfg = bundle.spec, bundle.spec.window_config()
    tss = [np.asarray(s.ts_ms, np.int64).reshape(-1) for s in series]
    xs = [np.asarray(s.values, np.float64).reshape(-1, len(CHANNELS)) for s in series]
    lens = np.array([len(t) for t in tss], np.int64)
    offs = np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(np.int64)
    starts = [int(m - s.n_new) for m, s in zip(lens, series, strict=True)]
    ts = np.concatenate(tss) if tss else np.zeros(0, np.int64)
    x = np.concatenate(xs) if xs else np.zeros((0, len(CHANNELS)))
    breaks = np.zeros(ts.size, bool)
    breaks[offs[lens > 0]] = True
    ex = np.zeros(ts.size, bool)
    for s, o, st in zip(series, offs, starts, strict=True):
        if s.excluded is not None:
            ex[o : o + st] = np.asarray(s.excluded, bool).reshape(-1)[:st]
    device = np.repeat(np.arange(len(series)), lens)
    norms = [bundle.norm_for(s.moteid) for s in series]
    means = np.stack([n.mean for n in norms]) if norms else np.zeros((0, 0))
    stds = np.stack([n.std for n in norms]) if norms else np.zeros((0, 0))
    dev_thr = np.array([bundle.threshold_for(s.moteid)[0] for s in series], np.float64)
    glob = float(bundle.threshold)
    cap = EXCLUDE_WINDOWS * spec.window
    out = [
        SeriesScores(
            np.zeros(s.n_new),
            np.zeros((s.n_new, len(CHANNELS))),
            np.zeros(s.n_new),
            np.zeros(s.n_new, np.int64),
            ex[o : o + m],  # a view: the exclusions as they settle
            int(s.excluded_run),
        )
        for s, o, m in zip(series, offs, lens, strict=True)
    ]

    def compute(spans: list[tuple[int, int, int]]) -> list[tuple[np.ndarray, ...]]:
        """Scores, errors, thresholds and context counts of rows ``[lo, hi)`` of each
        ``(device, lo, hi)`` span (rows counted within the device's series)."""
        rows = np.concatenate([np.arange(offs[d] + lo, offs[d] + hi) for d, lo, hi in spans])
        f, nc = window_features_at(ts, x, rows, cfg, ex, breaks)
        d = device[rows]
        ce = channel_errors(
            bundle.params, spec, standardize_by(means[d], stds[d], f), bundle.residual_scale
        )
        got = combine(ce), ce, np.where(nc >= spec.window - 1, dev_thr[d], glob), nc
        cuts = np.cumsum([hi - lo for _, lo, hi in spans])[:-1]
        return [tuple(part) for part in zip(*(np.split(a, cuts) for a in got), strict=True)]

    def keep(d: int, lo: int, got: tuple[np.ndarray, ...]) -> None:
        i, j = lo - starts[d], lo - starts[d] + len(got[0])
        r = out[d]
        r.score[i:j], r.channel_errors[i:j], r.threshold[i:j], r.n_context[i:j] = got

    # all at once first: up to a device's first reading over the level nothing is
    # excluded, so those rows are final (usually all of them, in one vectorised call)
    todo = [d for d, s in enumerate(series) if s.n_new]
    spans = [(d, starts[d], int(lens[d])) for d in todo]
    whole = dict(zip(todo, compute(spans) if todo else [], strict=True))
    # per device with a reading over the level: its current block, and the block's scores
    # when they are up to date with its exclusions (None: recompute)
    blocks: dict[int, tuple[int, tuple[np.ndarray, ...] | None]] = {}
    runs = [int(s.excluded_run) for s in series]
    for d, got in whole.items():
        hot = np.flatnonzero(got[0] > EXCLUDE_LEVEL * got[2])
        first = int(hot[0]) if hot.size else series[d].n_new
        keep(d, starts[d], tuple(a[:first] for a in got))
        if first:
            runs[d] = 0
        if hot.size:  # the first block's first pass is the whole call's rows
            lo = starts[d] + first
            hi = min(lo + BLOCK, int(lens[d]))
            blocks[d] = (lo, tuple(a[first : first + hi - lo] for a in got))
    while blocks:
        stale = [d for d, (_, got) in blocks.items() if got is None]
        if stale:
            spans = [(d, blocks[d][0], min(blocks[d][0] + BLOCK, int(lens[d]))) for d in stale]
            for (d, lo, _), got in zip(spans, compute(spans), strict=True):
                blocks[d] = (lo, got)
        for d in list(blocks):
            lo, got = blocks[d]
            assert got is not None
            hi = lo + len(got[0])
            new, run_end = _capped(got[0] > EXCLUDE_LEVEL * got[2], runs[d], cap)
            o = int(offs[d])
            if not np.array_equal(new, ex[o + lo : o + hi]):
                ex[o + lo : o + hi] = new
                blocks[d] = (lo, None)
                continue
            runs[d] = run_end
            keep(d, lo, got)
            if hi < lens[d]:
                blocks[d] = (hi, None)
            else:
                del blocks[d]
    return [replace(r, excluded=r.excluded.copy(), excluded_run=runs[d]) for d, r in enumerate(out)]


@dataclass(frozen=True)
class DeviceReadings:
    """One device's new readings (ascending, all newer than ``history``) for
    :func:`score_many`."""

    moteid: int
    history: DeviceHistory
    epochs: np.ndarray
    ts_ms: np.ndarray
    values: np.ndarray


def score_device(
    bundle: ModelBundle,
    history: DeviceHistory,
    *,
    moteid: int,
    epochs: np.ndarray,
    ts_ms: np.ndarray,
    values: np.ndarray,
) -> tuple[ScoredReadings, DeviceHistory]:
    """Score one device's new readings; see the module docstring."""
    return score_many(bundle, [DeviceReadings(moteid, history, epochs, ts_ms, values)])[0]


@dataclass(frozen=True)
class _Prepared:
    """A device's readings checked, and its series with the history in front."""

    ok: np.ndarray  # (n,) finite readings (the others are data faults)
    x: np.ndarray
    all_ep: np.ndarray
    series: Series


def _prepare(r: DeviceReadings) -> _Prepared:
    ep = np.asarray(r.epochs, np.int64).reshape(-1)
    ts = np.asarray(r.ts_ms, np.int64).reshape(-1)
    x = np.asarray(r.values, np.float64).reshape(-1, len(CHANNELS))
    n = ep.shape[0]
    if ts.shape[0] != n or x.shape[0] != n:
        raise ValueError(f"{n} epochs, {ts.shape[0]} timestamps, {x.shape[0]} value rows")
    ok = np.isfinite(x).all(axis=1)
    history = r.history
    h_ep = np.asarray(history.epochs, np.int64)
    h_ts = np.asarray(history.ts_ms, np.int64)
    h_x = np.asarray(history.values, np.float64).reshape(-1, len(CHANNELS))
    # the newest reading seen, when it is not in the context: for the gap and the reset
    seen = history.last_seen
    if seen is not None and (h_ts.size == 0 or seen[1] > h_ts[-1]):
        h_ep, h_ts = np.append(h_ep, seen[0]), np.append(h_ts, seen[1])
        h_x = np.concatenate([h_x, np.zeros((1, len(CHANNELS)))])
    h_ex = np.zeros(h_ts.size, bool)
    h_ex[len(history.ts_ms) :] = True
    series = Series(
        int(r.moteid),
        np.concatenate([h_ts, ts[ok]]),
        np.concatenate([h_x, x[ok]]),
        int(ok.sum()),
        h_ex,
        history.excluded_run,
    )
    return _Prepared(ok, x, np.concatenate([h_ep, ep[ok]]), series)


def score_many(
    bundle: ModelBundle, readings: Sequence[DeviceReadings]
) -> list[tuple[ScoredReadings, DeviceHistory]]:
    """:func:`score_device` of several devices at once (one :func:`score_many_series`
    call): each device's result is exactly what it gets scored alone."""
    if bundle.norm is None or bundle.threshold is None:
        raise ValueError("bundle lacks a normaliser or a global threshold: not calibrated")
    prepared = [_prepare(r) for r in readings]
    scored = score_many_series(bundle, [p.series for p in prepared])
    return [
        _result(bundle, r, p, res) for r, p, res in zip(readings, prepared, scored, strict=True)
    ]


def _result(
    bundle: ModelBundle, r: DeviceReadings, p: _Prepared, res: SeriesScores
) -> tuple[ScoredReadings, DeviceHistory]:
    """A device's :class:`ScoredReadings` (data faults, sanity rule and learning told) and
    its next history. Verdict precedence: data fault, sanity rule, learning, model."""
    ok, x, n = p.ok, p.x, p.ok.shape[0]
    _, no_own = bundle.threshold_for(r.moteid)
    unknown = bundle.known_devices is not None and int(r.moteid) not in bundle.known_devices
    no_own = no_own or unknown
    learning = (
        LEARNING_NO_PARAMS
        if unknown
        else (LEARNING_NO_THRESHOLD if no_own else LEARNING_SHORT_HISTORY)
    )
    full = res.n_context >= bundle.spec.window - 1
    score = np.full(n, np.nan)
    errors = np.full((n, len(CHANNELS)), np.nan)
    thr = np.full(n, float(bundle.threshold))
    score[ok], errors[ok], thr[ok] = res.score, res.channel_errors, res.threshold
    # the model flags only readings judged against the device's own threshold
    judged = full & (not no_own)
    flag = ~ok.copy()
    flag[ok] = judged & (res.score > res.threshold)
    bad = insane(x)
    flag |= bad
    reason: list[str | None] = [None] * n
    j = 0
    for i in range(n):
        if not ok[i]:
            reason[i] = _fault_reason(x[i])
            continue
        if bad[i]:
            reason[i] = sanity_reason(x[i])
        elif not judged[j]:
            reason[i] = learning
        j += 1
    if p.series.n_new == 0:
        return ScoredReadings(score, errors, flag, thr, tuple(reason)), r.history
    # the next context: the newest non-excluded readings since the last reset
    all_ts, all_x, all_ep = p.series.ts_ms, p.series.values, p.all_ep
    seg = segment_start(all_ts, bundle.spec.window_config())[-1]
    ctx = np.flatnonzero(~res.excluded)
    ctx = ctx[ctx >= seg][-(bundle.spec.window - 1) :]
    new_hist = DeviceHistory(  # tolist: Python ints and floats in one C call per array
        tuple(all_ep[ctx].tolist()),
        tuple(all_ts[ctx].tolist()),
        tuple(map(tuple, all_x[ctx].tolist())),  # type: ignore[arg-type]
        (int(all_ep[-1]), int(all_ts[-1])),
        res.excluded_run,
    )
    return ScoredReadings(score, errors, flag, thr, tuple(reason)), new_hist
