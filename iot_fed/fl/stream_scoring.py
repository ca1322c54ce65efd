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
* A reading with fewer than ``window - 1`` readings of context (a new device, or after a
  gap longer than the window's reset gap) is scored with the global threshold and reason
  ``"fallback:short_history"``. A device with no calibrated threshold of its own is
  scored with the global threshold too (reason ``"fallback:no_device_threshold"``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from iot_fed.fl.detector import channel_errors, combine, standardize
from iot_fed.fl.serialization import ModelBundle
from iot_fed.fl.window_features import CHANNELS, segment_start, window_features

__all__ = ["CHANNELS", "DeviceHistory", "ScoredReadings", "score_device", "score_series"]

EXCLUDE_LEVEL = 2.0
"""A reading scored above this many times its threshold is left out of the context."""
EXCLUDE_WINDOWS = 1
"""At most this many windows of readings in a row stay out of the context."""
BLOCK = 64
"""Rows solved together in a batch (iterated to the stream's result)."""


@dataclass(frozen=True)
class DeviceHistory:
    """What scoring one device's next readings needs: its context (the most recent
    readings the window uses, anomalies left out), and the newest reading scored."""

    epochs: tuple[int, ...]
    ts_ms: tuple[int, ...]
    values: tuple[tuple[float, float, float, float], ...]
    last_seen: tuple[int, int] | None = None
    """``(epoch, ts_ms)`` of the newest reading scored (in the context or not)."""
    excluded_run: int = 0
    """How many readings in a row, up to the newest, scored above the exclusion level."""

    def to_json(self) -> str:
        return json.dumps(
            {
                "epochs": list(self.epochs),
                "ts_ms": list(self.ts_ms),
                "values": self.values,
                "last_seen": None if self.last_seen is None else list(self.last_seen),
                "excluded_run": self.excluded_run,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> DeviceHistory:
        """Parse :meth:`to_json` output; anything else raises ``ValueError`` saying why."""
        try:
            d = json.loads(text)
            seen = d.get("last_seen")
            hist = cls(
                tuple(int(e) for e in d["epochs"]),
                tuple(int(t) for t in d["ts_ms"]),
                tuple(tuple(float(v) for v in row) for row in d["values"]),  # type: ignore[misc]
                None if seen is None else (int(seen[0]), int(seen[1])),
                int(d.get("excluded_run", 0)),
            )
        except (TypeError, KeyError, ValueError, IndexError, AttributeError) as exc:
            raise ValueError(f"not a DeviceHistory: {exc!r}") from None
        if not len(hist.epochs) == len(hist.ts_ms) == len(hist.values):
            raise ValueError("not a DeviceHistory: epochs, ts_ms and values differ in length")
        if any(len(row) != 4 for row in hist.values):
            raise ValueError("not a DeviceHistory: each values row needs 4 channels")
        return hist

    @property
    def last_epoch(self) -> int | None:
        """The newest epoch scored, None when nothing was."""
        if self.last_seen is not None:
            return self.last_seen[0]
        return self.epochs[-1] if self.epochs else None

    @classmethod
    def empty(cls) -> DeviceHistory:
        return cls((), (), ())


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
    """Scores of the last ``n_new`` of one device's finite readings; the rows before are
    context (``excluded``: those that are not, e.g. the newest reading seen when it was
    left out). Solved in blocks of :data:`BLOCK` rows, each iterated until its exclusions
    are stable: as every row depends on earlier rows only, that is the stream's result."""
    spec, cfg = bundle.spec, bundle.spec.window_config()
    ts = np.asarray(ts_ms, np.int64).reshape(-1)
    x = np.asarray(values, np.float64).reshape(-1, len(CHANNELS))
    m = x.shape[0]
    start = m - n_new
    ex = np.zeros(m, bool)
    if excluded is not None:
        ex[:start] = np.asarray(excluded, bool).reshape(-1)[:start]
    norm = bundle.norm_for(moteid)
    dev_thr, _ = bundle.threshold_for(moteid)
    glob = float(bundle.threshold)
    score, thr = np.zeros(n_new), np.zeros(n_new)
    errs = np.zeros((n_new, len(CHANNELS)))
    n_ctx = np.zeros(n_new, np.int64)
    run, cap = int(excluded_run), EXCLUDE_WINDOWS * spec.window

    def block(lo: int, hi: int) -> tuple[np.ndarray, ...]:
        f, nc = window_features(ts[:hi], x[:hi], hi - lo, cfg, ex[:hi])
        ce = channel_errors(bundle.params, spec, standardize(norm, f), bundle.residual_scale)
        return combine(ce), ce, np.where(nc >= spec.window - 1, dev_thr, glob), nc

    def keep(lo: int, hi: int, out: tuple[np.ndarray, ...]) -> None:
        i, j = lo - start, hi - start
        score[i:j], errs[i:j], thr[i:j], n_ctx[i:j] = out

    # all at once first: up to the first reading over the level nothing is excluded, so
    # those rows are final (usually all of them, in one vectorised call)
    lo = start
    whole: tuple[np.ndarray, ...] = ()
    if n_new:
        whole = block(start, m)
        hot = np.flatnonzero(whole[0] > EXCLUDE_LEVEL * whole[2])
        lo = start + (int(hot[0]) if hot.size else n_new)
        keep(start, lo, tuple(a[: lo - start] for a in whole))
        run = 0 if lo > start else run
    for b in range(lo, m, BLOCK):
        hi = min(b + BLOCK, m)
        # the first block's first pass is the whole call's rows (same context so far)
        out = tuple(a[b - start : hi - start] for a in whole) if b == lo else block(b, hi)
        while True:
            new, run_end = _capped(out[0] > EXCLUDE_LEVEL * out[2], run, cap)
            if np.array_equal(new, ex[b:hi]):
                break
            ex[b:hi] = new
            out = block(b, hi)
        run = run_end
        keep(b, hi, out)
    return SeriesScores(score, errs, thr, n_ctx, ex, run)


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
    if bundle.norm is None or bundle.threshold is None:
        raise ValueError("bundle lacks a normaliser or a global threshold: not calibrated")
    ep = np.asarray(epochs, np.int64).reshape(-1)
    ts = np.asarray(ts_ms, np.int64).reshape(-1)
    x = np.asarray(values, np.float64).reshape(-1, len(CHANNELS))
    n = ep.shape[0]
    if ts.shape[0] != n or x.shape[0] != n:
        raise ValueError(f"{n} epochs, {ts.shape[0]} timestamps, {x.shape[0]} value rows")
    ok = np.isfinite(x).all(axis=1)
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
    all_ts = np.concatenate([h_ts, ts[ok]])
    all_x = np.concatenate([h_x, x[ok]])
    all_ep = np.concatenate([h_ep, ep[ok]])
    n_ok = int(ok.sum())
    res = score_series(
        bundle, moteid, all_ts, all_x, n_ok, excluded=h_ex, excluded_run=history.excluded_run
    )
    _, no_own = bundle.threshold_for(moteid)
    full = res.n_context >= bundle.spec.window - 1
    score = np.full(n, np.nan)
    errors = np.full((n, len(CHANNELS)), np.nan)
    thr = np.full(n, float(bundle.threshold))
    score[ok], errors[ok], thr[ok] = res.score, res.channel_errors, res.threshold
    flag = ~ok.copy()
    flag[ok] = res.score > res.threshold
    reason: list[str | None] = [None] * n
    j = 0
    for i in range(n):
        if not ok[i]:
            reason[i] = _fault_reason(x[i])
            continue
        if not full[j]:
            reason[i] = "fallback:short_history"
        elif no_own:
            reason[i] = "fallback:no_device_threshold"
        j += 1
    if n_ok == 0:
        return ScoredReadings(score, errors, flag, thr, tuple(reason)), history
    # the next context: the newest non-excluded readings since the last reset
    seg = segment_start(all_ts, bundle.spec.window_config())[-1]
    ctx = np.flatnonzero(~res.excluded)
    ctx = ctx[ctx >= seg][-(bundle.spec.window - 1) :]
    new_hist = DeviceHistory(
        tuple(int(e) for e in all_ep[ctx]),
        tuple(int(t) for t in all_ts[ctx]),
        tuple(tuple(float(v) for v in row) for row in all_x[ctx]),  # type: ignore[misc]
        (int(all_ep[-1]), int(all_ts[-1])),
        res.excluded_run,
    )
    return ScoredReadings(score, errors, flag, thr, tuple(reason)), new_hist
