"""Labelled fault injection into clean readings (exact positions, exact rates, seeded).

Fault types (:data:`FAULT_TYPES`); magnitudes are in units of the device's own standard
deviation of the channel (``sigma``, floored by :data:`MIN_SCALE`), times the config's
``magnitude`` ``m`` (1.0: the original injector), in the shape ``shapes[type]``:

* ``spike``: single readings, one channel jumps by ``+-U(spike_sigma) * m * sigma``;
* ``stuck``: a segment where one channel holds one value; shape ``last``: the reading
  just before the segment, for ``m`` times the segment length (a shorter stuck run is
  harder to tell from a quiet sensor); shape ``value``: an arbitrary value
  ``+-U(bias_sigma) * m * sigma`` away from that reading;
* ``drift``: a segment whose error grows linearly to ``D = +-U(drift_sigma) * m * sigma``;
  shape ``additive``: ``x + D * ramp``; shape ``multiplicative``: a gain error
  ``x * (1 + D / |device mean| * ramp)`` (the same error at the device's mean level);
* ``bias``: a segment with a constant offset ``+-U(bias_sigma) * m * sigma``;
* ``noise``: a segment with added Gaussian noise of std ``U(noise_sigma) * m * scale``:
  shape ``daily``: ``scale = sigma`` (the daily spread); shape ``jitter``: the device's
  reading-to-reading jitter (std of successive differences / sqrt 2, floored at a tenth of
  :data:`MIN_SCALE`), far smaller than sigma;
* ``low_voltage``: the Intel Lab dying-battery pattern at the *end* of a device's series
  (segments longer than asked for when there are too few devices for the rate):
  voltage sags from 2.3 V to ~2.0 V, temperature reads 100..122 C, humidity is negative;
  each reading moves ``m`` of the way from the clean reading to that pattern.

``rates[t]`` is the share of all rows given fault ``t``: exactly ``round(rate * n)`` rows,
and fault types never overlap. Segments never cross devices. Every labelled row is
modified and no other row is (``stuck`` can leave a row unchanged only if it already
held the stuck value).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from iot_fed.data.generator import FAIL_VOLTAGE

FAULT_TYPES = ("spike", "stuck", "drift", "bias", "noise", "low_voltage")
SEGMENT_FAULTS = ("stuck", "drift", "bias", "noise", "low_voltage")
SHAPES = {
    "stuck": ("last", "value"),
    "drift": ("additive", "multiplicative"),
    "noise": ("daily", "jitter"),
}
"""The shapes a fault type can take; the first is the default (the original injector)."""
MIN_SCALE = {"temperature": 0.1, "humidity": 0.2, "light": 5.0, "voltage": 0.005}
"""Floor of a channel's per-device sigma (raw units), so flat channels still get faults."""


def _default_rates() -> dict[str, float]:
    return dict.fromkeys(FAULT_TYPES, 0.01)


def _default_shapes() -> dict[str, str]:
    return {t: shapes[0] for t, shapes in SHAPES.items()}


def _default_lengths() -> dict[str, int]:
    return {"stuck": 60, "drift": 120, "bias": 60, "noise": 30, "low_voltage": 240}


@dataclass(frozen=True)
class FaultConfig:
    """What to inject and how strong; see the module docstring."""

    rates: Mapping[str, float] = field(default_factory=_default_rates)
    segment_length: Mapping[str, int] = field(default_factory=_default_lengths)
    channels: tuple[str, ...] = ("temperature", "humidity")
    """Channels that spike/stuck/drift/bias/noise may hit (one, at random, per event)."""
    low_voltage_channels: tuple[str, ...] = ("temperature", "humidity", "voltage")
    spike_sigma: tuple[float, float] = (5.0, 10.0)
    drift_sigma: tuple[float, float] = (3.0, 6.0)
    bias_sigma: tuple[float, float] = (2.0, 4.0)
    noise_sigma: tuple[float, float] = (2.0, 4.0)
    magnitude: float = 1.0
    """Scales every fault's strength (see the module docstring); 1.0: the original."""
    shapes: Mapping[str, str] = field(default_factory=_default_shapes)

    def shape(self, kind: str) -> str | None:
        return self.shapes.get(kind, SHAPES[kind][0]) if kind in SHAPES else None

    def __post_init__(self) -> None:
        unknown = set(self.rates) - set(FAULT_TYPES)
        if unknown:
            raise ValueError(f"unknown fault types {sorted(unknown)}; known: {FAULT_TYPES}")
        if any(not 0.0 <= r <= 1.0 for r in self.rates.values()):
            raise ValueError("fault rates must be in [0, 1]")
        if sum(self.rates.values()) > 1.0:
            raise ValueError("fault rates add up to more than 1")
        if any(self.segment_length.get(t, 1) < 1 for t in SEGMENT_FAULTS):
            raise ValueError("segment lengths must be >= 1")
        if not self.magnitude >= 0.0:
            raise ValueError("magnitude must be >= 0")
        bad = {t: v for t, v in self.shapes.items() if v not in SHAPES.get(t, ())}
        if bad:
            raise ValueError(f"unknown fault shapes {bad}; known: {SHAPES}")

    def length(self, kind: str) -> int:
        """Segment length of ``kind`` (a ``last``-stuck run scales with the magnitude)."""
        ln = self.segment_length[kind]
        if kind == "stuck" and self.shape("stuck") == "last":
            ln = max(1, int(round(ln * self.magnitude)))
        return ln

    def to_dict(self) -> dict[str, Any]:
        return {
            "rates": dict(self.rates),
            "segment_length": dict(self.segment_length),
            "channels": list(self.channels),
            "low_voltage_channels": list(self.low_voltage_channels),
            "spike_sigma": list(self.spike_sigma),
            "drift_sigma": list(self.drift_sigma),
            "bias_sigma": list(self.bias_sigma),
            "noise_sigma": list(self.noise_sigma),
            "magnitude": self.magnitude,
            "shapes": dict(self.shapes),
        }


@dataclass
class Injection:
    """The modified frame (same index and row order as the input) and exact labels."""

    frame: pd.DataFrame
    labels: pd.DataFrame
    """One boolean column per fault type, aligned with ``frame``."""
    events: list[dict[str, Any]]
    """One entry per injected event: type, moteid, first row position, length, channel."""

    @property
    def any(self) -> np.ndarray:
        return self.labels.to_numpy().any(axis=1)

    @property
    def fault_type(self) -> np.ndarray:
        """Per row: the fault type name, or ``""`` for a normal row."""
        out = np.full(len(self.labels), "", dtype=object)
        for t in self.labels.columns:
            out[self.labels[t].to_numpy()] = t
        return out

    def counts(self) -> dict[str, int]:
        return {t: int(self.labels[t].sum()) for t in self.labels.columns}


class _Series:
    """Readings sorted by (device, time) as numpy arrays, plus per-row device sigmas."""

    def __init__(
        self, frame: pd.DataFrame, device_col: str, order_col: str, channels: Sequence[str]
    ) -> None:
        self.order = np.lexsort((frame[order_col].to_numpy(), frame[device_col].to_numpy()))
        self.device = frame[device_col].to_numpy()[self.order]
        self.values = {c: frame[c].to_numpy(np.float64)[self.order].copy() for c in channels}
        self.original = {c: v.copy() for c, v in self.values.items()}
        self.n = len(self.order)
        new = np.ones(self.n, dtype=bool)
        new[1:] = self.device[1:] != self.device[:-1]
        self.group = np.cumsum(new) - 1
        self.starts = np.flatnonzero(new)
        self.ends = np.append(self.starts[1:], self.n)
        self.sigma, self.jitter, self.mean = {}, {}, {}
        for c, v in self.values.items():
            g = pd.Series(v).groupby(self.group)
            std = g.std(ddof=0).to_numpy()
            floor = MIN_SCALE.get(c, 1e-3)
            self.sigma[c] = np.maximum(np.nan_to_num(std), floor)[self.group]
            diff = pd.Series(np.diff(v, prepend=np.nan)).where(~new)
            jit = diff.groupby(self.group).std(ddof=0).to_numpy() / np.sqrt(2.0)
            self.jitter[c] = np.maximum(np.nan_to_num(jit), floor / 10)[self.group]
            self.mean[c] = np.abs(g.mean().to_numpy())[self.group]


def _place_segments(
    rng: np.random.Generator,
    s: _Series,
    taken: np.ndarray,
    total: int,
    length: int,
    need_previous: bool,
) -> list[tuple[int, int]]:
    """Random non-overlapping ``(start, length)`` runs inside one device, summing to total."""
    out: list[tuple[int, int]] = []
    placed, attempts = 0, 0
    max_attempts = 2000 * (total // max(length, 1) + 1)
    while placed < total:
        ln = min(length, total - placed)
        attempts += 1
        if attempts > max_attempts or ln > s.n:
            raise ValueError(
                f"cannot place {total} faulty rows in segments of {length} "
                f"(only {placed} placed): lower the rate or segment length"
            )
        a = int(rng.integers(0, s.n - ln + 1))
        b = a + ln
        if s.group[a] != s.group[b - 1] or taken[a:b].any():
            continue
        if need_previous and (a == 0 or s.group[a - 1] != s.group[a]):
            continue
        taken[a:b] = True
        out.append((a, ln))
        placed += ln
    return out


def _place_tails(
    rng: np.random.Generator, s: _Series, taken: np.ndarray, total: int, length: int
) -> list[tuple[int, int]]:
    """Segments ending at the last row of randomly chosen devices, summing to total.

    Segments grow beyond ``length`` when there are too few devices to reach ``total``.
    """
    out: list[tuple[int, int]] = []
    placed = 0
    length = max(length, -(-total // len(s.starts)))
    for g in rng.permutation(len(s.starts)):
        if placed >= total:
            break
        lo, hi = s.starts[g], s.ends[g]
        free = hi - lo
        busy = np.flatnonzero(taken[lo:hi])
        if busy.size:
            free = hi - (lo + busy[-1] + 1)
        ln = min(length, free, total - placed)
        if ln <= 0:
            continue
        taken[hi - ln : hi] = True
        out.append((hi - ln, ln))
        placed += ln
    if placed < total:
        raise ValueError(f"cannot place {total} low-voltage rows at device tails")
    return out


def low_voltage_values(
    rng: np.random.Generator, n: int, channels: Sequence[str]
) -> dict[str, np.ndarray]:
    """The dying-battery readings for a run of ``n`` rows (as in the Intel Lab data)."""
    ramp = np.arange(1, n + 1) / n
    out: dict[str, np.ndarray] = {}
    if "temperature" in channels:
        out["temperature"] = np.maximum(100.0 + 22.2 * ramp + rng.normal(0.0, 0.3, n), 100.05)
    if "humidity" in channels:
        out["humidity"] = -np.abs(rng.normal(2.5, 1.2, n)) - 1e-3
    if "voltage" in channels:
        out["voltage"] = FAIL_VOLTAGE - 0.3 * ramp - np.abs(rng.normal(0.0, 0.005, n)) - 1e-3
    return out


def _apply(
    rng: np.random.Generator, s: _Series, kind: str, a: int, ln: int, cfg: FaultConfig
) -> str:
    """Modify rows ``a .. a+ln`` of ``s`` in place; return the channel(s) hit."""
    m = cfg.magnitude
    if kind == "low_voltage":
        chans = [c for c in cfg.low_voltage_channels if c in s.values]
        for c, v in low_voltage_values(rng, ln, chans).items():
            x = s.values[c][a : a + ln]
            s.values[c][a : a + ln] = v if m == 1.0 else x + m * (v - x)
        return ",".join(chans)
    c = cfg.channels[int(rng.integers(len(cfg.channels)))]
    x, sig = s.values[c], s.sigma[c][a : a + ln]
    sign = rng.choice([-1.0, 1.0])
    shape = cfg.shape(kind)
    if kind == "spike":
        x[a : a + ln] += sign * rng.uniform(*cfg.spike_sigma, ln) * m * sig
    elif kind == "stuck":
        held = s.original[c][a - 1]
        if shape == "value":
            held += sign * rng.uniform(*cfg.bias_sigma) * m * sig[0]
        x[a : a + ln] = held
    elif kind == "drift":
        ramp = np.arange(1, ln + 1) / ln
        d = sign * rng.uniform(*cfg.drift_sigma) * m * sig
        if shape == "multiplicative":
            x[a : a + ln] *= 1.0 + d / np.maximum(s.mean[c][a : a + ln], 1e-9) * ramp
        else:
            x[a : a + ln] += d * ramp
    elif kind == "bias":
        x[a : a + ln] += sign * rng.uniform(*cfg.bias_sigma) * m * sig
    elif kind == "noise":
        scale = s.jitter[c][a : a + ln] if shape == "jitter" else sig
        x[a : a + ln] += rng.uniform(*cfg.noise_sigma) * rng.normal(0.0, 1.0, ln) * m * scale
    return c


def inject_faults(
    frame: pd.DataFrame,
    config: FaultConfig | None = None,
    seed: int = 0,
    *,
    device_col: str = "moteid",
    order_col: str = "ts",
    label_col: str | None = "label",
) -> Injection:
    """Inject labelled faults; deterministic for ``seed``. The input is not modified.

    Rows are grouped by ``device_col`` and ordered by ``order_col`` inside a device;
    ``label_col`` (if not None) is set to the fault type on injected rows.
    """
    cfg = config or FaultConfig()
    chans = sorted({*cfg.channels, *cfg.low_voltage_channels} & set(frame.columns))
    missing = set(cfg.channels) - set(frame.columns)
    if missing:
        raise ValueError(f"frame lacks fault channels {sorted(missing)}")
    s = _Series(frame, device_col, order_col, chans)
    taken = np.zeros(s.n, dtype=bool)
    pos_labels = {t: np.zeros(s.n, dtype=bool) for t in FAULT_TYPES}
    events: list[dict[str, Any]] = []
    # tails first (they must reach the device end), point faults last (they fill gaps)
    for i, kind in enumerate(("low_voltage", "stuck", "drift", "bias", "noise", "spike")):
        total = int(round(cfg.rates.get(kind, 0.0) * s.n))
        if total == 0:
            continue
        rng = np.random.default_rng([seed, i])
        before = taken.copy()
        if kind == "low_voltage":
            segs = _place_tails(rng, s, taken, total, cfg.length("low_voltage"))
        elif kind == "spike":
            free = np.flatnonzero(~taken)
            if free.size < total:
                raise ValueError(f"not enough free rows for {total} spikes")
            rows = np.sort(rng.choice(free, total, replace=False))
            taken[rows] = True
            segs = [(int(r), 1) for r in rows]
        else:
            segs = _place_segments(
                rng, s, taken, total, cfg.length(kind), need_previous=kind == "stuck"
            )
        pos_labels[kind] = taken & ~before
        for a, ln in segs:
            ch = _apply(rng, s, kind, a, ln, cfg)
            events.append(
                {
                    "type": kind,
                    "moteid": s.device[a].item(),
                    "position": int(a),
                    "length": int(ln),
                    "channel": ch,
                    "shape": cfg.shape(kind),
                    "magnitude": cfg.magnitude,
                }
            )

    out = frame.copy()
    for c in chans:
        col = out[c].to_numpy(np.float64).copy()
        col[s.order] = s.values[c]
        out[c] = col
    labels = pd.DataFrame(index=frame.index)
    for t in FAULT_TYPES:
        lab = np.zeros(s.n, dtype=bool)
        lab[s.order] = pos_labels[t]
        labels[t] = lab
    if label_col is not None:
        lab_col = (
            out[label_col].astype(object).to_numpy().copy()
            if label_col in out
            else np.full(len(out), None, dtype=object)
        )
        for t in FAULT_TYPES:
            lab_col[labels[t].to_numpy()] = t
        out[label_col] = lab_col
    return Injection(out, labels, events)


def dying_battery(
    frame: pd.DataFrame,
    motes: Sequence[Any],
    fraction: float,
    seed: int = 0,
    *,
    channels: Sequence[str] = ("temperature", "humidity", "voltage"),
    device_col: str = "moteid",
    order_col: str = "ts",
) -> tuple[pd.DataFrame, np.ndarray]:
    """The last ``fraction`` of each listed mote's rows turn into the low-voltage pattern.

    Returns ``(frame copy, boolean mask of the garbage rows)`` (for training-set poisoning).
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError("fraction must be in [0, 1]")
    out = frame.copy()
    mask = np.zeros(len(frame), dtype=bool)
    chans = [c for c in channels if c in frame.columns]
    for j, m in enumerate(motes):
        idx = np.flatnonzero(frame[device_col].to_numpy() == m)
        idx = idx[np.argsort(frame[order_col].to_numpy()[idx], kind="stable")]
        k = int(round(fraction * idx.size))
        if k == 0:
            continue
        rows = idx[idx.size - k :]
        rng = np.random.default_rng([seed, 100 + j])
        for c, v in low_voltage_values(rng, k, chans).items():
            col = out[c].to_numpy(np.float64).copy()
            col[rows] = v
            out[c] = col
        mask[rows] = True
    return out, mask
