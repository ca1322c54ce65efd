"""Window features of one device's readings (numpy only; identical in stream and batch).

Each reading ``t`` is described by itself and the readings before it in the device's
*context*: the previous ``window - 1`` finite readings, cut at a long gap
(``reset_gap_s``, 25 minutes: after an outage the old readings say little about the new
ones, and a context reaching back across it judges the change during the outage; a
35-minute outage at sunset made a mote's light ``dev`` and ``trend`` alarm for half an hour
in the live cold-start benchmark while the reset was an hour).
Per channel (:data:`CHANNELS` order) :data:`PER_CHANNEL` features, in raw units:

* ``diff``: change since the median of the previous 3 readings, divided by
  ``sqrt(dt / period)`` so a change across a short gap is judged like a random walk;
* ``dev``: deviation from the median of the context (spikes, bias onsets);
* ``spread``: ``log(1.4826 MAD + floor)`` of the last ``spread_k`` readings including this
  one (noise bursts raise it; a stuck sensor drives it to the floor; one spike does not);
* ``run``: ``n``, how many readings before this one had exactly the same value (stuck-at:
  grows by one per reading). Linear, not ``log(1 + n)``: runs of a quantised channel are
  about geometric, ``P(run >= n) ~ p^n``, so a run's rarity grows linearly with ``n``;
  the log took 12 readings to flag a stuck temperature, linear 5 (benchmark);
* ``trend``: median of the last ``spread_k`` readings minus the median of the first
  ``spread_k`` readings of a full window: the change across the window (drift), robust
  to spikes.

All statistics are medians, so one wild reading in the context does not raise alarms on
the clean readings after it.

Then the four ``level`` s (the readings themselves: conditioning inputs, not targets, as
levels drift with seasons and batteries) and three shared features: ``gap``
(``log(1 + missed periods)`` before this reading) and the time of day as ``sin``/``cos``.

Last, per channel, two features scored directly (:data:`DIRECT`: their own standardised
value is the residual, :mod:`iot_fed.fl.detector`), from the medians of the window's four
quarters ``q0..q3`` placed at their median times (so a gap does not bend a line):

* ``shift``: ``q3`` minus the line through ``q0`` and ``q2`` extended to ``q3``'s time: a
  level offset judged against the device's own trend, from a quarter of readings rather
  than one (an offset of a few reading-to-reading steps, which ``diff`` cannot tell from
  jitter at the alert budget);
* ``bend``: the slope across the last two quarters minus that across the first two, per
  quarter: a drift's onset, judged against the slope the device already had (``trend``
  alone cannot tell a drift from the daily cycle's or the slow wander's own slope).

Both are about 0 on normal readings at any time of day, so the autoencoder neither
reconstructs them nor sees them (as inputs, a light switch's large ``shift`` disturbed the
reconstruction of the other channels). They are undefined (NaN) without a full window or
when the window spans more than :data:`MAX_SPAN` window lengths (a gap, or flagged readings
left out of the context: a line through readings an hour apart predicts nothing), and 0
when a quarter would hold fewer than :data:`MIN_QUARTER` readings.

A feature that is undefined (no previous reading, too few readings for a spread or a
trend) is NaN; the model's normaliser maps NaN to the feature's mean (neutral).
``n_context`` tells how many previous readings were used, so a caller can tell a short
history (fallback scoring) from a full one.

**What the sensitivity sweep showed** (``bench/bench_sensitivity.py``: event recall
against fault magnitude at 1 false incident per device-day; figures, commands and the
trials' tables in docs/detector.md). Without ``shift``/``bend`` the detector found spikes,
stuck sensors, offsets and dying batteries at a tenth to a fifth of the benchmark's
injector, but needed the whole injected drift for 0.9 event recall, never reached it for a
gain drift, and an offset had to be ~7 reading-to-reading steps to pass ``diff``'s tail.
Tried and not kept: a 64- or 128-reading window (drift 0.99 -> 0.69, but F1 lower at the
calibrated thresholds, longer alarm tails); a 128-reading horizon with an hour-long shift
and a noise ratio (no gain, flagged the daily cycle on short training); ``rough``, the
mean absolute step over the window (jitter-sized noise 1.39 -> 1.00, but F1 swung widely
on short training); accumulating scores over the last 8-32 readings (drift 0.99 -> 0.68 at
best, but the spikes' PR-AUC fell from 0.97 to 0.32-0.82: every fault smeared into the
readings after it); ``shift`` and ``bend`` as reconstruction targets (short training
flooded: the autoencoder's other targets got worse). Kept: ``shift`` and ``bend`` scored
directly, with the span limit (without it, windows reaching back across flagged readings
doubled the false alarms around faults). With them and the context reset at 25 minutes
instead of an hour (a window reaching back across an outage judges the change during it,
which widened every normal tail), on three data seeds: drift found at 0.45-0.48 of the
magnitude it needed, offsets at 0.45-0.53, a gain drift reaching 0.9 recall (0.63-0.99;
before: 1.23 to never), jitter-sized noise at 0.70-0.87 of before, spike / stuck / battery
unchanged. Per-reading PR-AUC at the injector's size fell by 0.02-0.18 on spike, stuck,
offset and daily noise (alarms on readings around an episode) and rose by 0.02-0.09 on
drift and jitter noise; F1 at the calibrated thresholds moved by -0.004 to +0.028.

Not tried: neighbour context (the generated motes' slow wander is independent per mote, so
the benchmark data cannot show what neighbours add, and the real readings of all 54 motes
are not available here).

Every row's features depend only on that row's window contents, laid out the same way in
every call, so scoring a series whole or chunk by chunk (threading the last
``window - 1`` readings through) gives bit-identical features.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from iot_fed.readings import CHANNELS

PER_CHANNEL = ("diff", "dev", "spread", "run", "trend")
"""Per-channel *dynamics* features: the autoencoder's reconstruction targets."""
SHARED = ("gap", "tod_sin", "tod_cos")
DIRECT = ("shift", "bend")
"""Per-channel features near 0 on normal readings whatever the time of day: scored as
their own standardised value (:mod:`iot_fed.fl.detector`), not reconstructed."""
FEATURE_NAMES = (
    tuple(f"{c}_{f}" for c in CHANNELS for f in PER_CHANNEL)
    + tuple(f"{c}_level" for c in CHANNELS)
    + SHARED
    + tuple(f"{c}_{f}" for c in CHANNELS for f in DIRECT)
)
"""Targets first (``N_CHANNEL_FEATURES``), then levels and shared (with the targets: the
model's ``N_MODEL_INPUTS`` inputs), then the directly scored features (last)."""
N_CHANNEL_FEATURES = len(CHANNELS) * len(PER_CHANNEL)
N_DIRECT_FEATURES = len(CHANNELS) * len(DIRECT)
N_FEATURES = len(FEATURE_NAMES)
N_MODEL_INPUTS = N_FEATURES - N_DIRECT_FEATURES
DIRECT_COLUMNS = slice(N_MODEL_INPUTS, N_FEATURES)
MAX_SPAN = 1.5
"""``shift`` and ``bend`` are undefined when the window spans more than this many window
lengths of time (a gap, or flagged readings left out of the context): a line through
readings an hour apart does not predict the next ones."""
MIN_QUARTER = 3
"""Readings per quarter for ``shift`` and ``bend``: the median of 3 ignores one spike. A
shorter window (under 12) leaves them at 0, neutral."""
SPREAD_FLOOR = np.array([0.005, 0.01, 0.5, 0.0005])
"""Added to a channel's std before the log (about the sensor's resolution)."""
MS_PER_DAY = 86_400_000


@dataclass(frozen=True)
class WindowConfig:
    """Shape of the context: stored in the model spec, so a bundle scores as it trained."""

    window: int = 32
    spread_k: int = 8
    period_s: float = 31.0
    reset_gap_s: float = 1500.0

    def __post_init__(self) -> None:
        if self.window < 3 or not 2 <= self.spread_k <= self.window:
            raise ValueError(f"need window >= 3 and 2 <= spread_k <= window: {self}")
        if self.period_s <= 0 or self.reset_gap_s <= self.period_s:
            raise ValueError(f"need 0 < period_s < reset_gap_s: {self}")


def segment_start(
    ts_ms: np.ndarray, cfg: WindowConfig, breaks: np.ndarray | None = None
) -> np.ndarray:
    """Per row, the first row of its segment: context is cut at gaps over ``reset_gap_s``
    and before every row marked in ``breaks`` (the first row of another device's series)."""
    ts = np.asarray(ts_ms, np.int64).reshape(-1)
    dt = np.diff(ts.astype(np.float64)) / (1000.0 * cfg.period_s)  # in periods
    reset = np.concatenate([[True], dt > cfg.reset_gap_s / cfg.period_s])
    if breaks is not None:
        reset |= np.asarray(breaks, bool).reshape(-1)
    return np.maximum.accumulate(np.where(reset, np.arange(ts.size), 0))


def context_index(
    n_rows: int, rows: np.ndarray, window: int, excluded: np.ndarray | None = None
) -> np.ndarray:
    """``(len(rows), window)`` row indices of each row's window: its context (the last
    ``window - 1`` rows before it that are not ``excluded``; -1 where there are fewer),
    then the row itself."""
    if excluded is None:
        return rows[:, None] - window + 1 + np.arange(window)[None, :]
    ex = np.asarray(excluded, bool).reshape(-1)
    if ex.shape[0] != n_rows:
        raise ValueError(f"excluded has {ex.shape[0]} entries for {n_rows} rows")
    acc = np.flatnonzero(~ex)
    k = np.searchsorted(acc, rows)  # context rows before each row
    j = k[:, None] - (window - 1) + np.arange(window - 1)[None, :]
    ctx = acc[np.clip(j, 0, None)] if acc.size else np.zeros_like(j)
    return np.concatenate([np.where(j >= 0, ctx, -1), rows[:, None]], axis=1)


def window_features(
    ts_ms: np.ndarray,
    values: np.ndarray,
    n_new: int,
    cfg: WindowConfig = WindowConfig(),
    excluded: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Features ``(n_new, N_FEATURES)`` float64 of the last ``n_new`` rows, and each row's
    number of context readings ``(n_new,)``.

    ``ts_ms`` ``(m,)`` ascending ms; ``values`` ``(m, 4)`` finite raw readings; the first
    ``m - n_new`` rows are history (context only). ``excluded`` ``(m,)``: rows that are
    never context (readings flagged as anomalous, see :mod:`iot_fed.fl.stream_scoring`);
    they still count for ``gap`` and for the reset after a long gap.
    """
    m = np.asarray(values).reshape(-1, len(CHANNELS)).shape[0]
    if not 0 <= n_new <= m:
        raise ValueError(f"{m} readings, n_new={n_new}")
    return window_features_at(ts_ms, values, np.arange(m - n_new, m), cfg, excluded)


def window_features_at(
    ts_ms: np.ndarray,
    values: np.ndarray,
    rows: np.ndarray,
    cfg: WindowConfig = WindowConfig(),
    excluded: np.ndarray | None = None,
    breaks: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`window_features` of the rows at ``rows`` (ascending indices), over several
    devices' series laid end to end: ``breaks`` ``(m,)`` marks the first row of each
    series, so no context crosses it. Each row's features are exactly those of the same
    row scored in its own series alone (one call for many devices)."""
    ts = np.asarray(ts_ms, np.int64).reshape(-1)
    x = np.asarray(values, np.float64).reshape(-1, len(CHANNELS))
    rows = np.asarray(rows, np.int64).reshape(-1)
    m, w = x.shape[0], cfg.window
    if ts.shape[0] != m:
        raise ValueError(f"{m} readings, {ts.shape[0]} timestamps")
    if rows.size == 0:
        return np.zeros((0, N_FEATURES)), np.zeros(0, np.int64)
    seg_start = segment_start(ts, cfg, breaks)
    # window j of row t holds row idx[t, j]; rows before t's segment are NaN
    idx = context_index(m, rows, w, excluded)
    valid = idx >= seg_start[rows][:, None]
    safe = np.where(valid, idx, rows[:, None])
    win = np.ascontiguousarray(np.transpose(x[safe], (0, 2, 1)))  # (n, 4, w)
    win[~np.broadcast_to(valid[:, None, :], win.shape)] = np.nan
    tp = ts.astype(np.float64) / (1000.0 * cfg.period_s)
    twin = np.where(valid, tp[safe] - tp[rows][:, None], np.nan)  # periods before this one

    cur = win[:, :, -1]
    ctx = win[:, :, :-1]
    n_ctx = valid[:, :-1].sum(axis=1)
    dtp = np.where(valid[:, -2], -twin[:, -2], np.nan)  # since the newest context reading
    has_prev = rows - 1 >= seg_start[rows]
    dprev = np.where(has_prev, tp[rows] - tp[np.maximum(rows - 1, 0)], np.nan)
    k = cfg.spread_k
    with np.errstate(invalid="ignore", divide="ignore"):
        # change since the recent past: vs the median of the previous 3 readings, so the
        # reading after a single spike is not judged against the spike
        recent = _nanmedian(ctx[:, :, -3:], valid[:, -4:-1].sum(axis=1))
        diff = (cur - recent) / np.sqrt(np.maximum(dtp, 1.0))[:, None]
        med = _nanmedian(ctx, n_ctx)
        dev = cur - med
        last = win[:, :, -k:]
        n_last = valid[:, -k:].sum(axis=1)
        med_last = _nanmedian(last, n_last)
        mad = _nanmedian(np.abs(last - med_last[..., None]), n_last)
        spread = np.log(1.4826 * mad + SPREAD_FLOOR)
        spread[n_last < 3] = np.nan
        run = _trailing_equal(ctx, cur)
        run[n_ctx == 0] = np.nan
        first = win[:, :, :k]
        trend = med_last - _nanmedian(first, valid[:, :k].sum(axis=1))
        trend[~valid[:, 0]] = np.nan  # needs a full window
        shift, bend = _quarter_features(win, twin, valid)
    gap = np.where(has_prev, np.log1p(np.maximum(dprev - 1.0, 0.0)), np.nan)
    phase = 2.0 * np.pi * (np.mod(ts[rows], MS_PER_DAY) / MS_PER_DAY)
    per_channel = np.stack([diff, dev, spread, run, trend], axis=2)  # (n, 4, 5)
    feats = np.concatenate(
        [
            per_channel.reshape(len(rows), -1),
            cur,
            np.stack([gap, np.sin(phase), np.cos(phase)], 1),
            np.stack([shift, bend], axis=2).reshape(len(rows), -1),
        ],
        axis=1,
    )
    return feats, n_ctx.astype(np.int64)


def _quarter_features(
    win: np.ndarray, twin: np.ndarray, valid: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``shift`` and ``bend`` ``(n, 4)`` from the medians of the window's four quarters and
    their times (see the module docstring); NaN without a full window or over a long span."""
    n, w = valid.shape
    qn = w // 4
    if qn < MIN_QUARTER:
        return np.zeros((n, win.shape[1])), np.zeros((n, win.shape[1]))
    bounds = [(i * qn, (i + 1) * qn) for i in range(3)] + [(w - qn, w)]
    level = [_nanmedian(win[:, :, a:b], valid[:, a:b].sum(axis=1)) for a, b in bounds]
    # a defined row's window is whole and its times ascend: the middle of each quarter
    when = [(twin[:, a + (qn - 1) // 2] + twin[:, a + qn // 2]) / 2 for a, _ in bounds]

    def slope(i: int, j: int) -> np.ndarray:
        dt = when[j] - when[i]
        return (level[j] - level[i]) / np.where(dt > 0, dt, np.nan)[:, None]

    shift = level[3] - level[2] - slope(0, 2) * (when[3] - when[2])[:, None]
    bend = (slope(2, 3) - slope(0, 1)) * qn
    undefined = ~valid[:, 0] | (-twin[:, 0] > MAX_SPAN * w)
    shift[undefined] = np.nan
    bend[undefined] = np.nan
    return shift, bend


def _nanmedian(a: np.ndarray, n: np.ndarray) -> np.ndarray:
    """``np.nanmedian`` over the last axis (NaN where ``n == 0``), by one sort.

    Same values as ``np.nanmedian`` (the middle value, or the mean of the two middle ones),
    which goes through masked arrays for small inputs and was most of a streamed reading's
    scoring time. The middle values are picked by flat indexing (``take_along_axis``
    costs more than the sort at these sizes)."""
    ok = n > 0
    if not ok.all():
        out = np.full(a.shape[:2], np.nan)
        if ok.any():
            out[ok] = _nanmedian(a[ok], n[ok])
        return out
    w = a.shape[-1]
    s = np.sort(a, axis=-1).reshape(-1, w)  # NaN sorts last
    cnt = w - np.count_nonzero(np.isnan(s), axis=-1)
    r = np.arange(s.shape[0])
    # no value at all: both picks are NaN (index 0 of an all-NaN row)
    lo, hi = s[r, np.maximum(cnt - 1, 0) // 2], s[r, cnt // 2]
    return ((lo + hi) / 2).reshape(a.shape[:-1])


def _trailing_equal(ctx: np.ndarray, cur: np.ndarray) -> np.ndarray:
    """How many of the most recent context values equal ``cur`` without interruption."""
    eq = (ctx == cur[..., None])[..., ::-1]
    return np.cumprod(eq, axis=-1).sum(axis=-1).astype(np.float64)
