"""Synthetic Intel Berkeley Lab readings in the exact raw ``data.txt`` format.

Calibrated on the published deployment (54 Mica2Dot motes from 2004-02-28, one reading
per ~31 s per mote, many missing epochs) and on the real single-mote series: office
temperatures around 18-30 C with a daily swing of several degrees, humidity 25-50 %RH
anticorrelated with temperature, office-hours light, batteries slowly draining from
~2.7 V. Motes whose battery falls below ~2.3 V report wild values (temperature > 100 C,
negative humidity), as in the real data. Injected faults are listed in the sidecar
``<file>.labels.csv`` (``moteid,epoch,label``). Everything is vectorised and
deterministic for a seed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from iot_fed.readings import CHANNELS, FAIL_VOLTAGE  # the level failing motes drain to

START = "2004-02-28 00:58:46"
EPOCH_S = 31.0
SHT11_T_STEP = 0.0098  # SHT11 14-bit temperature resolution: T = -38.4 + 0.0098 * raw
LABEL_LOW_VOLTAGE = "low_voltage"
LABEL_SPIKE = "spike"
LABELS = (LABEL_LOW_VOLTAGE, LABEL_SPIKE)
LAB_SIZE_M = (40.0, 30.0)


@dataclass(frozen=True)
class Generated:
    """Paths written by :func:`generate` and a metadata dict."""

    path: Path
    labels_path: Path
    metadata: dict[str, Any] = field(default_factory=dict)


def labels_path_for(path: Path) -> Path:
    """The sidecar labels file for a raw file: ``<file>.labels.csv``."""
    path = Path(path)
    return path.with_name(path.name + ".labels.csv")


def _smooth_noise(rng: np.random.Generator, m: int, t_h: np.ndarray, scale: float) -> np.ndarray:
    """Smooth per-mote drift: a few random sinusoids (periods 2-30 h), shape (m, n)."""
    periods = rng.uniform(2.0, 30.0, size=(m, 4, 1))
    phases = rng.uniform(0, 2 * np.pi, size=(m, 4, 1))
    amps = rng.normal(0, scale / 2, size=(m, 4, 1))
    return (amps * np.sin(2 * np.pi * t_h[None, None, :] / periods + phases)).sum(axis=1)


def _outages(rng: np.random.Generator, m: int, n: int, days: float) -> np.ndarray:
    """Boolean (m, n) mask of short radio outages (about one per mote-day, ~30 min)."""
    k = rng.poisson(max(days, 0.1), size=m)
    rows = np.repeat(np.arange(m), k)
    starts = rng.integers(0, n, size=rows.size)
    lengths = rng.exponential(60.0, size=rows.size).astype(np.int64) + 1
    delta = np.zeros((m, n + 1), dtype=np.int64)
    np.add.at(delta, (rows, starts), 1)
    np.add.at(delta, (rows, np.minimum(starts + lengths, n)), -1)
    return np.cumsum(delta, axis=1)[:, :n] > 0


def _simulate(
    motes: int,
    days: float,
    seed: int,
    start: str,
    drop_rate: float,
    spike_rate: float,
    low_voltage_fraction: float,
    early_stop_fraction: float,
) -> dict[str, np.ndarray]:
    """All channels on the full (mote, epoch) grid plus keep / label masks."""
    rng = np.random.default_rng(seed)
    m, n = motes, max(int(days * 86400 / EPOCH_S), 1)
    epochs = np.arange(1, n + 1)
    t0 = pd.Timestamp(start)
    sod0 = (t0 - t0.normalize()).total_seconds()
    # per-mote clock offset within the epoch + small jitter (µs resolution)
    t_rel = (
        (epochs[None, :] - 1) * EPOCH_S
        + rng.uniform(0.0, 3.0, size=(m, 1))
        + rng.uniform(0.0, 0.5, size=(m, n))
    )
    t_h = t_rel[0] / 3600.0
    abs_s = sod0 + t_rel
    hod = (abs_s / 3600.0) % 24.0
    dow = (t0.dayofweek + np.floor(abs_s / 86400.0)).astype(np.int64) % 7
    weekday = dow < 5
    office = weekday & (hod >= 8.0) & (hod < 19.0)

    # temperature: night base + diurnal swing (peak ~15h) + weekday heating + drift + noise
    base = rng.uniform(17.5, 20.5, size=(m, 1))
    amp = rng.uniform(2.5, 5.5, size=(m, 1))
    diurnal = amp * (1 + np.cos(2 * np.pi * (hod - 15.0) / 24.0))
    temp = base + diurnal + 1.5 * office + _smooth_noise(rng, m, t_h, 1.0)
    temp += rng.normal(0.0, 0.03, size=(m, n))

    # humidity: anticorrelated with temperature around a per-mote base
    hbase = rng.uniform(40.0, 46.0, size=(m, 1))
    slope = rng.uniform(1.0, 1.6, size=(m, 1))
    hum = hbase - slope * (temp - base) + _smooth_noise(rng, m, t_h, 3.0)
    hum = np.clip(hum + rng.normal(0.0, 0.15, size=(m, n)), 5.0, 95.0)

    # light: office lights on weekday daytime, daylight near windows, dark at night
    lamp = rng.uniform(250.0, 550.0, size=(m, 1))
    window = rng.uniform(0.0, 1.0, size=(m, 1)) ** 2
    sun = np.clip(np.sin(np.pi * (hod - 6.5) / 12.5), 0.0, None)
    light = office * lamp * rng.uniform(0.9, 1.1, size=(m, n)) + window * 500.0 * sun
    light = np.clip(light + rng.exponential(1.5, size=(m, n)), 0.0, 1847.36)

    # voltage: slow drain; some motes drain fast and cross FAIL_VOLTAGE inside the window
    span = n * EPOCH_S
    v0 = rng.uniform(2.62, 2.76, size=(m, 1))
    drain = rng.uniform(0.005, 0.02, size=(m, 1)) / 86400.0  # V per second
    failing = rng.random(m) < low_voltage_fraction
    t_fail = rng.uniform(0.3, 0.85, size=m) * span
    fast = (v0[:, 0] - FAIL_VOLTAGE) / t_fail
    drain[failing, 0] = fast[failing]
    volt = v0 - drain * t_rel + 0.004 * (temp - 20.0) / 10.0 + rng.normal(0.0, 0.002, (m, n))
    low = failing[:, None] & (volt < FAIL_VOLTAGE)

    # wild readings once the battery is low (the known Intel Lab failure pattern)
    first_low = np.where(low.any(axis=1), low.argmax(axis=1), n)
    since = np.clip(np.arange(n)[None, :] - first_low[:, None], 0, None)
    ramp = np.clip(since / max(n * 0.05, 1.0), 0.0, 1.0)
    wild_t = 100.2 + 22.0 * ramp + np.abs(rng.normal(0.0, 0.3, size=(m, n)))
    wild_h = -np.abs(rng.normal(2.5, 1.2, size=(m, n)))
    temp = np.where(low, wild_t, temp)
    hum = np.where(low, wild_h, hum)
    volt = np.where(low, np.clip(volt, 1.95, None), volt)

    # spikes: a sudden jump on one channel
    spike = (rng.random((m, n)) < spike_rate) & ~low
    on_temp = rng.random((m, n)) < 0.5
    sign = np.where(rng.random((m, n)) < 0.5, -1.0, 1.0)
    temp = np.where(spike & on_temp, temp + sign * rng.uniform(6.0, 15.0, (m, n)), temp)
    hum = np.where(spike & ~on_temp, np.clip(hum + sign * rng.uniform(12, 30, (m, n)), 1, 99), hum)

    # which readings exist: random loss, outages, motes stopping early / dying after failure
    stop = np.full(m, n)
    early = ~failing & (rng.random(m) < early_stop_fraction)
    stop[early] = (rng.uniform(0.2, 0.9, size=early.sum()) * n).astype(np.int64)
    death = first_low + (rng.uniform(0.03, 0.15, size=m) * n).astype(np.int64)
    stop[failing] = np.minimum(n, death[failing])
    keep = rng.random((m, n)) >= drop_rate
    keep &= ~_outages(rng, m, n, days)
    keep &= np.arange(n)[None, :] < stop[:, None]

    temp = -38.4 + SHT11_T_STEP * np.round((temp + 38.4) / SHT11_T_STEP)
    return {
        "t_rel": t_rel,
        "epoch": np.broadcast_to(epochs, (m, n)),
        "moteid": np.broadcast_to(np.arange(1, m + 1)[:, None], (m, n)),
        "temperature": temp,
        "humidity": np.round(hum, 4),
        "light": np.round(light, 2),
        "voltage": np.round(volt, 5),
        "keep": keep,
        "low": low,
        "spike": spike,
        "failing": failing,
        "early": early,
    }


def _fmt(x: float) -> str:
    return f"{x:.6g}"


def generate(
    path: Path,
    *,
    motes: int = 54,
    days: float = 3.0,
    seed: int = 7,
    start: str = START,
    drop_rate: float = 0.2,
    spike_rate: float = 0.002,
    low_voltage_fraction: float = 0.1,
    early_stop_fraction: float = 0.1,
    truncated_rate: float = 0.0002,
    duplicate_rate: float = 0.0005,
) -> Generated:
    """Write raw lines to ``path`` and labels to ``<path>.labels.csv``; same seed -> same bytes.

    Knobs: ``drop_rate`` (random missing epochs, on top of short outages), ``spike_rate``
    (readings with a spike), ``low_voltage_fraction`` (motes whose battery fails),
    ``early_stop_fraction`` (motes that go silent early), ``truncated_rate`` (lines cut
    short, as in the real file) and ``duplicate_rate`` (a (moteid, epoch) sent twice).
    """
    t_start = time.perf_counter()
    rng = np.random.default_rng([seed, 1])
    sim = _simulate(
        motes, days, seed, start, drop_rate, spike_rate, low_voltage_fraction, early_stop_fraction
    )
    keep = sim["keep"]
    cols = {k: np.asarray(sim[k])[keep] for k in ("t_rel", "epoch", "moteid", *CHANNELS)}
    label = np.full(keep.sum(), "", dtype=object)
    label[sim["spike"][keep]] = LABEL_SPIKE
    label[sim["low"][keep]] = LABEL_LOW_VOLTAGE
    order = np.lexsort((cols["moteid"], cols["t_rel"]))
    cols = {k: v[order] for k, v in cols.items()}
    label = label[order]

    # a few repeated transmissions (same moteid, epoch; a little later)
    dup = np.flatnonzero(rng.random(order.size) < duplicate_rate)
    idx = np.sort(np.concatenate([np.arange(order.size), dup]))
    cols = {k: v[idx] for k, v in cols.items()}
    label = label[idx]
    is_dup = np.zeros(idx.size, dtype=bool)
    is_dup[1:] = idx[1:] == idx[:-1]
    cols["t_rel"] = cols["t_rel"] + is_dup * 0.2

    stamps = np.datetime64(pd.Timestamp(start).to_datetime64(), "us") + np.round(
        cols["t_rel"] * 1e6
    ).astype("timedelta64[us]")
    ts = np.datetime_as_string(stamps, unit="us")
    lines = [
        f"{s[:10]} {s[11:]} {e} {mo} {_fmt(t)} {_fmt(h)} {_fmt(li)} {_fmt(v)}"
        for s, e, mo, t, h, li, v in zip(
            ts.tolist(),
            cols["epoch"].tolist(),
            cols["moteid"].tolist(),
            cols["temperature"].tolist(),
            cols["humidity"].tolist(),
            cols["light"].tolist(),
            cols["voltage"].tolist(),
            strict=True,
        )
    ]
    # a few lines cut short (missing trailing fields), as in the real data.txt
    cut = np.flatnonzero(rng.random(len(lines)) < truncated_rate)
    keep_fields = rng.integers(4, 8, size=cut.size)
    for i, k in zip(cut.tolist(), keep_fields.tolist(), strict=True):
        lines[i] = " ".join(lines[i].split(" ")[:k])

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="ascii")
    labelled = (label != "") & ~is_dup
    labels = pd.DataFrame(
        {
            "moteid": cols["moteid"][labelled],
            "epoch": cols["epoch"][labelled],
            "label": label[labelled],
        }
    ).sort_values(["moteid", "epoch"], kind="stable")
    lpath = labels_path_for(path)
    labels.to_csv(lpath, index=False, lineterminator="\n")

    meta: dict[str, Any] = {
        "lines": len(lines),
        "motes": int(motes),
        "days": float(days),
        "seed": int(seed),
        "start": str(start),
        "epochs_per_mote": int(keep.shape[1]),
        "missing_share": round(1.0 - float(keep.mean()), 4),
        "duplicates": int(dup.size),
        "truncated_lines": int(cut.size),
        "labels": {k: int(v) for k, v in labels["label"].value_counts().sort_index().items()},
        "low_voltage_motes": [int(i) + 1 for i in np.flatnonzero(sim["failing"])],
        "early_stop_motes": [int(i) + 1 for i in np.flatnonzero(sim["early"])],
        "seconds": round(time.perf_counter() - t_start, 3),
    }
    return Generated(path, lpath, meta)


def generate_mote_locs(path: Path, *, motes: int = 54, seed: int = 7) -> Path:
    """Write a ``mote_locs.txt`` layout (``moteid x y``, metres) on a ~40 x 30 m floor."""
    rng = np.random.default_rng([seed, 2])
    cols = int(np.ceil(np.sqrt(motes * LAB_SIZE_M[0] / LAB_SIZE_M[1])))
    rows = int(np.ceil(motes / cols))
    i = np.arange(motes)
    x = (i % cols + 0.5) * LAB_SIZE_M[0] / cols + rng.uniform(-1.0, 1.0, motes)
    y = (i // cols + 0.5) * LAB_SIZE_M[1] / rows + rng.uniform(-1.0, 1.0, motes)
    x = np.round(np.clip(x, 0.0, LAB_SIZE_M[0]) * 2) / 2
    y = np.round(np.clip(y, 0.0, LAB_SIZE_M[1]) * 2) / 2
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"{k + 1} {a:g} {b:g}" for k, a, b in zip(i.tolist(), x, y, strict=True)]
    path.write_text("\n".join(lines) + "\n", encoding="ascii")
    return path
