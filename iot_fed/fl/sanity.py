"""The fixed sanity rule: values no working sensor reports, alarmed with or without a model.

A device without a calibrated threshold is *learning* (scored, not alarmed); this rule is
the exception that still alarms, and it alarms on calibrated devices too: an impossible
value is always an anomaly. The reason states the rule, e.g. ``"sanity:voltage 2.21 < 2.3"``.
Only finite values are judged here (a NaN / inf channel is a data fault, told elsewhere).

The ranges are the sensors' physical limits (SHT11 temperature -40..125 C, relative
humidity 0..100 %, light >= 0) and the battery level below which a mote fails
(:data:`~iot_fed.readings.FAIL_VOLTAGE`, which the generator drains to), wider than the
parser's plausible ranges that keep readings out of training (:mod:`iot_fed.data.parse`,
not imported: the scorers stay free of the data package's pandera and Spark imports).
"""

from __future__ import annotations

import numpy as np

from iot_fed.readings import CHANNELS, FAIL_VOLTAGE

SANITY_PREFIX = "sanity:"
TEMPERATURE_LIMITS = (-40.0, 125.0)
"""The temperature sensor's physical range, degrees C."""
HUMIDITY_LIMITS = (0.0, 100.0)
"""Relative humidity, percent."""

# (channel, lower bound or None, upper bound or None), checked in this order
RULES: tuple[tuple[str, float | None, float | None], ...] = (
    ("voltage", FAIL_VOLTAGE, None),
    ("humidity", *HUMIDITY_LIMITS),
    ("temperature", *TEMPERATURE_LIMITS),
    ("light", 0.0, None),
)
_INDEX = {c: i for i, c in enumerate(CHANNELS)}


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def sanity_reason(row: np.ndarray) -> str | None:
    """The first rule one reading (CHANNELS order) breaks, as a reason, else None."""
    for channel, lo, hi in RULES:
        v = float(row[_INDEX[channel]])
        if not np.isfinite(v):
            continue
        if lo is not None and v < lo:
            return f"{SANITY_PREFIX}{channel} {_fmt(v)} < {_fmt(lo)}"
        if hi is not None and v > hi:
            return f"{SANITY_PREFIX}{channel} {_fmt(v)} > {_fmt(hi)}"
    return None


def insane(values: np.ndarray) -> np.ndarray:
    """(n,) bool: readings (n, 4) that break a rule (vectorised :func:`sanity_reason`)."""
    x = np.asarray(values, np.float64).reshape(-1, len(CHANNELS))
    out = np.zeros(x.shape[0], bool)
    for channel, lo, hi in RULES:  # NaN compares False: a data fault is not judged here
        v = x[:, _INDEX[channel]]
        if lo is not None:
            out |= v < lo
        if hi is not None:
            out |= v > hi
    return out
