"""Score one device's readings in a stream or a batch, with the same result (numpy only).

``score_device(bundle, history, moteid=..., epochs=..., ts_ms=..., values=...)`` scores
new readings of one device (ascending, all newer than ``history``) and returns the
:class:`ScoredReadings` and the new :class:`DeviceHistory` (the last ``window - 1``
finite readings: the context the next call needs). Scoring a series in one call gives
exactly the same result as scoring it chunk by chunk while threading the history.
``score_batch`` scores many devices' readings at once, as columns (the streaming scorer's
buckets); ``score_many`` and ``score_device`` are its per-device views.

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
from dataclasses import dataclass

import numpy as np

from iot_fed.fl.detector import channel_errors, combine, standardize_by
from iot_fed.fl.device_history import DeviceHistory, HistoryColumns
from iot_fed.fl.sanity import insane, sanity_reason
from iot_fed.fl.serialization import ModelBundle
from iot_fed.fl.spans import offsets, spans
from iot_fed.fl.window_features import segment_start, window_features_at
from iot_fed.readings import CHANNELS

__all__ = [
    "LEARNING_NO_PARAMS",
    "LEARNING_NO_THRESHOLD",
    "LEARNING_SHORT_HISTORY",
    "DeviceHistory",
    "DeviceReadings",
    "ReadingsBatch",
    "ScoredReadings",
    "score_batch",
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

    def rows(self, lo: int, hi: int) -> ScoredReadings:
        """The readings ``lo:hi``."""
        return ScoredReadings(
            self.score[lo:hi],
            self.channel_errors[lo:hi],
            self.flag[lo:hi],
            self.threshold[lo:hi],
            self.reason[lo:hi],
        )


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


@dataclass(frozen=True)
class _Laid:
    """Several devices' series end to end: device ``d``'s ``lens[d]`` rows, the last
    ``n_new[d]`` scored, the rows before them context unless ``excluded``; ``runs``: each
    device's run of excluded readings before its first scored one."""

    moteid: np.ndarray
    ts: np.ndarray
    x: np.ndarray
    lens: np.ndarray
    n_new: np.ndarray
    excluded: np.ndarray
    runs: np.ndarray


@dataclass(frozen=True)
class _LaidScores:
    """The scored rows' columns (each device's ``n_new`` rows, end to end), the settled
    exclusions of every row of the :class:`_Laid` series, each device's run at its end."""

    score: np.ndarray
    channel_errors: np.ndarray
    threshold: np.ndarray
    n_context: np.ndarray
    excluded: np.ndarray
    runs: np.ndarray


def score_many_series(bundle: ModelBundle, series: Sequence[Series]) -> list[SeriesScores]:
    """:class:`SeriesScores` of several devices' series, computed together
    (:func:`_score_laid`): each device gets exactly what it would get scored alone."""
    tss = [np.asarray(s.ts_ms, np.int64).reshape(-1) for s in series]
    xs = [np.asarray(s.values, np.float64).reshape(-1, len(CHANNELS)) for s in series]
    lens = np.array([len(t) for t in tss], np.int64)
    n_new = np.array([s.n_new for s in series], np.int64)
    offs = offsets(lens)
    ex = np.zeros(int(lens.sum()), bool)
    for s, o, st in zip(series, offs.tolist(), (lens - n_new).tolist(), strict=True):
        if s.excluded is not None:
            ex[o : o + st] = np.asarray(s.excluded, bool).reshape(-1)[:st]
    laid = _Laid(
        np.array([int(s.moteid) for s in series], np.int64),
        np.concatenate(tss) if tss else np.zeros(0, np.int64),
        np.concatenate(xs) if xs else np.zeros((0, len(CHANNELS))),
        lens,
        n_new,
        ex,
        np.array([int(s.excluded_run) for s in series], np.int64),
    )
    got = _score_laid(bundle, laid)
    out_offs = offsets(n_new).tolist()
    return [
        SeriesScores(
            got.score[i : i + k],
            got.channel_errors[i : i + k],
            got.threshold[i : i + k],
            got.n_context[i : i + k],
            got.excluded[o : o + m],
            int(got.runs[d]),
        )
        for d, (i, k, o, m) in enumerate(
            zip(out_offs, n_new.tolist(), offs.tolist(), lens.tolist(), strict=True)
        )
    ]


def _score_laid(bundle: ModelBundle, laid: _Laid) -> _LaidScores:
    """Score several devices' series laid end to end with a context break before each one,
    so each call of the window features and the network serves every device at once.

    Per device, solved in blocks of :data:`BLOCK` rows, each iterated until its exclusions
    are stable: as every row depends on earlier rows only, that is the stream's result.
    The devices' blocks advance in lockstep (each recomputation covers every device whose
    block is not stable yet); devices never share context, so each gets exactly what it
    would get scored alone."""
    spec, cfg = bundle.spec, bundle.spec.window_config()
    ts, x, lens, n_new = laid.ts, laid.x, laid.lens, laid.n_new
    nd = lens.size
    offs = offsets(lens)
    starts = lens - n_new  # each device's first scored row, within its series
    breaks = np.zeros(ts.size, bool)
    breaks[offs[lens > 0]] = True
    ex = laid.excluded.copy()
    device = np.repeat(np.arange(nd), lens)
    motes = laid.moteid.tolist()
    norms = [bundle.norm_for(m) for m in motes]
    means = np.stack([n.mean for n in norms]) if norms else np.zeros((0, len(CHANNELS)))
    stds = np.stack([n.std for n in norms]) if norms else np.zeros((0, len(CHANNELS)))
    dev_thr = np.array([bundle.threshold_for(m)[0] for m in motes], np.float64)
    glob = float(bundle.threshold)
    cap = EXCLUDE_WINDOWS * spec.window
    out_offs = offsets(n_new)
    n_out = int(n_new.sum())
    score, thr = np.zeros(n_out), np.zeros(n_out)
    errors, n_context = np.zeros((n_out, len(CHANNELS))), np.zeros(n_out, np.int64)
    runs = laid.runs.astype(np.int64, copy=True)

    def compute(rows: np.ndarray) -> tuple[np.ndarray, ...]:
        """Scores, errors, thresholds and context counts of the series' ``rows``."""
        f, nc = window_features_at(ts, x, rows, cfg, ex, breaks)
        d = device[rows]
        ce = channel_errors(
            bundle.params, spec, standardize_by(means[d], stds[d], f), bundle.residual_scale
        )
        return combine(ce), ce, np.where(nc >= spec.window - 1, dev_thr[d], glob), nc

    def keep(d: int, lo: int, got: tuple[np.ndarray, ...]) -> None:
        i = int(out_offs[d]) + lo - int(starts[d])
        j = i + len(got[0])
        score[i:j], errors[i:j], thr[i:j], n_context[i:j] = got

    # all at once first: up to a device's first reading over the level nothing is
    # excluded, so those rows are final (usually all of them, in one vectorised call)
    blocks: dict[int, tuple[int, tuple[np.ndarray, ...] | None]] = {}
    if n_out:
        got = compute(spans(offs + starts, n_new))
        out_dev = np.repeat(np.arange(nd), n_new)
        hot = np.flatnonzero(got[0] > EXCLUDE_LEVEL * got[2])
        hot_devs, at = np.unique(out_dev[hot], return_index=True)
        first = out_offs + n_new  # each device's first reading over the level (else its end)
        first[hot_devs] = hot[at]
        final = np.arange(n_out) < first[out_dev]
        score[final], errors[final], thr[final], n_context[final] = (a[final] for a in got)
        runs[first > out_offs] = 0
        for d in hot_devs.tolist():  # the first block's first pass is the whole call's rows
            p = int(first[d])
            lo = int(starts[d]) + p - int(out_offs[d])
            hi = min(lo + BLOCK, int(lens[d]))
            blocks[d] = (lo, tuple(a[p : p + hi - lo] for a in got))
    while blocks:
        stale = [d for d, (_, got) in blocks.items() if got is None]
        if stale:
            los = np.array([blocks[d][0] for d in stale], np.int64)
            his = np.minimum(los + BLOCK, lens[stale])
            fresh = compute(spans(offs[stale] + los, his - los))
            cuts = np.cumsum(his - los)[:-1]
            parts = zip(*(np.split(a, cuts) for a in fresh), strict=True)
            for d, lo, part in zip(stale, los.tolist(), parts, strict=True):
                blocks[d] = (lo, tuple(part))
        for d in list(blocks):
            lo, got = blocks[d]
            assert got is not None
            hi = lo + len(got[0])
            new, run_end = _capped(got[0] > EXCLUDE_LEVEL * got[2], int(runs[d]), cap)
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
    return _LaidScores(score, errors, thr, n_context, ex, runs)


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
class ReadingsBatch:
    """Several devices' new readings end to end, for :func:`score_batch`: device ``i``'s
    rows are ``offsets[i]:offsets[i + 1]`` (ascending, all newer than ``histories[i]``)."""

    moteid: np.ndarray  # (d,) int64
    histories: HistoryColumns
    offsets: np.ndarray  # (d + 1,) int64
    epochs: np.ndarray  # (n,) int64
    ts_ms: np.ndarray  # (n,) int64
    values: np.ndarray  # (n, channels) float64

    @classmethod
    def of(cls, readings: Sequence[DeviceReadings]) -> ReadingsBatch:
        eps = [np.asarray(r.epochs, np.int64).reshape(-1) for r in readings]
        tss = [np.asarray(r.ts_ms, np.int64).reshape(-1) for r in readings]
        xs = [np.asarray(r.values, np.float64).reshape(-1, len(CHANNELS)) for r in readings]
        for ep, ts, x in zip(eps, tss, xs, strict=True):
            if ts.shape[0] != ep.shape[0] or x.shape[0] != ep.shape[0]:
                raise ValueError(
                    f"{ep.shape[0]} epochs, {ts.shape[0]} timestamps, {x.shape[0]} value rows"
                )
        return cls(
            np.array([int(r.moteid) for r in readings], np.int64),
            HistoryColumns.of([r.history for r in readings]),
            np.concatenate([[0], np.cumsum([e.shape[0] for e in eps])]).astype(np.int64),
            np.concatenate(eps) if eps else np.zeros(0, np.int64),
            np.concatenate(tss) if tss else np.zeros(0, np.int64),
            np.concatenate(xs) if xs else np.zeros((0, len(CHANNELS))),
        )


def score_many(
    bundle: ModelBundle, readings: Sequence[DeviceReadings]
) -> list[tuple[ScoredReadings, DeviceHistory]]:
    """:func:`score_device` of several devices at once (one :func:`score_batch` call):
    each device's result is exactly what it gets scored alone."""
    batch = ReadingsBatch.of(readings)
    scored, histories = score_batch(bundle, batch)
    bounds = batch.offsets.tolist()
    return [(scored.rows(bounds[i], bounds[i + 1]), h) for i, h in enumerate(histories.histories())]


def _with_histories(batch: ReadingsBatch, ok: np.ndarray) -> tuple[_Laid, np.ndarray]:
    """The devices' series for :func:`_score_laid`: each device's history, then the newest
    reading seen when it is not in the context (left out: for the gap and the reset), then
    its finite new readings; and the series' epochs."""
    h = batch.histories
    nd, c = len(h), len(CHANNELS)
    h_offs = offsets(h.lens)
    ctx_ts = h.ts_ms[np.maximum(h_offs + h.lens - 1, 0)] if h.ts_ms.size else np.zeros(nd, np.int64)
    has_seen = h.seen & ((h.lens == 0) | (h.last_seen[:, 1] > ctx_ts))
    k = np.bincount(np.repeat(np.arange(nd), np.diff(batch.offsets))[ok], minlength=nd)
    lens = h.lens + has_seen + k
    offs = offsets(lens)
    m = int(lens.sum())
    ts, ep = np.zeros(m, np.int64), np.zeros(m, np.int64)
    x, ex = np.zeros((m, c)), np.zeros(m, bool)
    at = spans(offs, h.lens)
    ts[at], ep[at], x[at] = h.ts_ms, h.epochs, h.values
    at = (offs + h.lens)[has_seen]
    ts[at], ep[at] = h.last_seen[has_seen, 1], h.last_seen[has_seen, 0]
    ex[at] = True
    at = spans(offs + h.lens + has_seen, k)
    ts[at], ep[at], x[at] = batch.ts_ms[ok], batch.epochs[ok], batch.values[ok]
    return _Laid(batch.moteid, ts, x, lens, k, ex, h.excluded_run.astype(np.int64)), ep


def score_batch(bundle: ModelBundle, batch: ReadingsBatch) -> tuple[ScoredReadings, HistoryColumns]:
    """Score several devices' new readings at once: one :class:`ScoredReadings` of all
    their rows (``batch``'s order) and each device's next history; each device gets
    exactly what :func:`score_device` gives it alone. Verdict precedence: data fault,
    sanity rule, learning, model."""
    if bundle.norm is None or bundle.threshold is None:
        raise ValueError("bundle lacks a normaliser or a global threshold: not calibrated")
    x, n, nd = batch.values, batch.epochs.shape[0], len(batch.moteid)
    if batch.ts_ms.shape[0] != n or x.shape[0] != n or batch.offsets[-1] != n:
        raise ValueError(f"{n} epochs, {batch.ts_ms.shape[0]} timestamps, {x.shape[0]} value rows")
    ok = np.isfinite(x).all(axis=1)
    laid, all_ep = _with_histories(batch, ok)
    res = _score_laid(bundle, laid)
    motes = batch.moteid.tolist()
    known = bundle.known_devices
    unknown = np.array([known is not None and m not in known for m in motes], bool)
    no_own = np.array([bundle.threshold_for(m)[1] for m in motes], bool) | unknown
    learning = np.where(
        unknown, LEARNING_NO_PARAMS, np.where(no_own, LEARNING_NO_THRESHOLD, LEARNING_SHORT_HISTORY)
    ).astype(object)
    row_dev = np.repeat(np.arange(nd), np.diff(batch.offsets))
    score, errors = np.full(n, np.nan), np.full((n, len(CHANNELS)), np.nan)
    thr = np.full(n, float(bundle.threshold))
    score[ok], errors[ok], thr[ok] = res.score, res.channel_errors, res.threshold
    # the model flags only readings judged against the device's own threshold
    judged = np.zeros(n, bool)
    judged[ok] = (res.n_context >= bundle.spec.window - 1) & ~no_own[row_dev[ok]]
    bad = insane(x)
    flag = ~ok | bad | (judged & (score > thr))
    reason = np.full(n, None, object)
    learns = ok & ~bad & ~judged
    reason[learns] = learning[row_dev[learns]]
    for i in np.flatnonzero(ok & bad).tolist():
        reason[i] = sanity_reason(x[i])
    for i in np.flatnonzero(~ok).tolist():
        reason[i] = _fault_reason(x[i])
    scored = ScoredReadings(score, errors, flag, thr, tuple(reason.tolist()))
    return scored, _next_histories(bundle, batch, laid, all_ep, res)


def _next_histories(
    bundle: ModelBundle, batch: ReadingsBatch, laid: _Laid, all_ep: np.ndarray, res: _LaidScores
) -> HistoryColumns:
    """Each device's next context: its newest non-excluded readings since its last reset
    (a device with no finite new reading keeps its history)."""
    lens, nd, w, h = laid.lens, laid.lens.size, bundle.spec.window, batch.histories
    offs = offsets(lens)
    last = np.maximum(offs + lens - 1, 0)
    upd = laid.n_new > 0
    breaks = np.zeros(laid.ts.size, bool)
    breaks[offs[lens > 0]] = True
    seg = (
        segment_start(laid.ts, bundle.spec.window_config(), breaks)[last] if laid.ts.size else last
    )
    row_dev = np.repeat(np.arange(nd), lens)
    pos = np.arange(row_dev.size)
    ctx = ~res.excluded & (pos >= seg[row_dev])
    count = np.cumsum(ctx)
    later = count[last[row_dev]] - count + ctx  # context rows from each row to its device's end
    kept = np.where(upd[row_dev], ctx & (later <= w - 1), pos - offs[row_dev] < h.lens[row_dev])
    rows = np.flatnonzero(kept)
    newest = np.stack([all_ep[last], laid.ts[last]], axis=1) if laid.ts.size else h.last_seen
    return HistoryColumns(
        np.bincount(row_dev[rows], minlength=nd).astype(np.int64),
        all_ep[rows],
        laid.ts[rows],
        laid.x[rows],
        np.where(upd[:, None], newest, h.last_seen),
        upd | h.seen,
        np.where(upd, res.runs, h.excluded_run),
    )
