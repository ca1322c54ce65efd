"""The alert-budget operating point: one threshold per method so that the false incidents on
clean readings stay within a budget per device-day.

An incident is what :mod:`iot_fed.analytics.incidents` makes of a device's flagged
readings (consecutive flags less than ``quiet_s`` apart are one). A method's threshold on
its (already per-device normalised) scores is lowered from the top for as long as, on the
clean readings, the incidents per device-day stay within ``incidents_per_device_day`` and
the flagged readings within ``flagged_per_device_day``: a threshold that flags everything
makes one endless incident per device, which an incident count alone would let through.
The threshold is the highest score it could not go below (flag: ``score > threshold``), so
every higher threshold keeps the budget too (incident counts are not monotone: removing a
flag can split an incident in two).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from iot_fed.analytics.incidents import incident_starts, joins

DAY_MS = 86_400_000


@dataclass(frozen=True)
class OperatingPoint:
    threshold: float
    """Flag when ``score > threshold`` (NaN scores are always flagged)."""
    incidents: int
    flagged: int
    device_days: float
    incidents_per_device_day: float
    flagged_per_device_day: float
    bound_by: str
    """``incidents`` or ``flagged``: which budget stopped the threshold going lower;
    ``none`` when every reading may be flagged."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def device_days(device: np.ndarray, ts_ms: np.ndarray) -> float:
    """Sum over devices of the data-time span of their readings, in days."""
    dev, ts = np.asarray(device), np.asarray(ts_ms, np.int64)
    if ts.size == 0:
        return 0.0
    new = np.ones(dev.size, bool)
    new[1:] = dev[1:] != dev[:-1]
    first = np.flatnonzero(new)
    last = np.append(first[1:], dev.size) - 1
    return float(np.sum(ts[last] - ts[first])) / DAY_MS


def flags_at(scores: np.ndarray, threshold: float) -> np.ndarray:
    return ~(np.asarray(scores, np.float64) <= threshold)


def count_incidents(
    scores: np.ndarray, threshold: float, device: np.ndarray, ts_ms: np.ndarray, quiet_s: float
) -> int:
    return int(incident_starts(device, ts_ms, flags_at(scores, threshold), quiet_s).sum())


def at_budget(
    scores: np.ndarray,
    device: np.ndarray,
    ts_ms: np.ndarray,
    quiet_s: float,
    incidents_per_device_day: float = 1.0,
    flagged_per_device_day: float = 28.0,
) -> OperatingPoint:
    """The operating point of clean readings' ``scores`` (rows sorted by device, then
    time): see the module docstring. Walks the scores from the top, adding one tie group of
    flags at a time and updating the incident count from each flag's neighbours."""
    s = np.nan_to_num(np.asarray(scores, np.float64), nan=np.inf)
    dev, ts = np.asarray(device), np.asarray(ts_ms, np.int64)
    days = device_days(dev, ts)
    max_inc = incidents_per_device_day * days
    max_flag = flagged_per_device_day * days
    quiet_ms = int(quiet_s * 1000)
    order = np.argsort(-s, kind="stable")
    flagged: dict[Any, list[int]] = {}
    incidents = n_flagged = 0
    i, bound, threshold = 0, "none", -np.inf
    while i < s.size:
        v = s[order[i]]
        j = i
        while j < s.size and s[order[j]] == v:
            lst = flagged.setdefault(dev[order[j]].item(), [])
            t = int(ts[order[j]])
            k = bisect.bisect(lst, t)
            prev = lst[k - 1] if k else None
            nxt = lst[k] if k < len(lst) else None
            incidents += prev is None or not joins(t, prev, quiet_ms)
            if nxt is not None:  # the next flag started an incident before; does it now?
                was = prev is None or not joins(nxt, prev, quiet_ms)
                incidents += int(not joins(nxt, t, quiet_ms)) - int(was)
            lst.insert(k, t)
            j += 1
        n_flagged += j - i
        if incidents > max_inc or n_flagged > max_flag:
            bound, threshold = ("incidents" if incidents > max_inc else "flagged"), float(v)
            break
        i = j
    inc = count_incidents(s, threshold, dev, ts, quiet_s)
    fl = int(flags_at(s, threshold).sum())
    return OperatingPoint(
        threshold,
        inc,
        fl,
        days,
        inc / days if days else float("nan"),
        fl / days if days else float("nan"),
        bound,
    )


def one_incident_share(
    flags: np.ndarray,
    events: Sequence[dict[str, Any]],
    device: np.ndarray,
    ts_ms: np.ndarray,
    quiet_s: float,
    others: Sequence[dict[str, Any]] = (),
) -> float | None:
    """Share of ``events`` (``position``, ``length`` into the rows, sorted by device then
    time) whose flagged readings all belong to one incident: those of the episode and of
    the clean readings until ``2 x quiet_s`` of data time after its last one (or the
    device's next episode). None without events. No flag is a miss; two incidents or
    more are an episode split, or a tail of alarms after it. Readings of ``others``
    (episodes of other faults injected at the same time) are not counted; an incident
    that an earlier episode opened and this one extends counts as its one incident."""
    if not events:
        return None
    dev, ts = np.asarray(device), np.asarray(ts_ms, np.int64)
    fl = np.asarray(flags, bool)
    incident = np.cumsum(incident_starts(dev, ts, fl, quiet_s))  # id of a flag's incident
    tail_ms = int(2 * quiet_s * 1000)
    other = np.zeros(dev.size, bool)
    for e in others:
        other[e["position"] : e["position"] + e["length"]] = True
    starts = np.sort([e["position"] for e in [*events, *others]])
    new = np.ones(dev.size, bool)
    new[1:] = dev[1:] != dev[:-1]
    first = np.flatnonzero(new)
    dev_end = np.repeat(np.append(first[1:], dev.size), np.diff(np.append(first, dev.size)))
    ones = 0
    for e in events:
        a, last = e["position"], e["position"] + e["length"] - 1
        end = int(dev_end[a])
        hi = a + int(np.searchsorted(ts[a:end], ts[last] + tail_ms, side="right"))
        later = starts[np.searchsorted(starts, last, side="right") :]
        if later.size:
            hi = min(hi, int(later[0]))
        rows = np.arange(a, hi)
        rows = rows[fl[rows] & ~other[rows]]
        ones += int(np.unique(incident[rows]).size == 1)
    return ones / len(events)
