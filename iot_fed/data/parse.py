"""Parse Intel Lab raw files: ``data.txt`` readings, ``mote_locs.txt``, ``connectivity.txt``.

Malformed lines are never dropped silently: they come back in a separate DataFrame
``(line_no, line, reason)``. Physically impossible readings are kept and flagged
(``fault=True`` with ``fault_reason``) so that anomaly detection can learn from them.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from iot_fed.readings import CHANNELS

RAW_FIELDS = ("date", "time", "epoch", "moteid", *CHANNELS)
READING_COLUMNS = ("ts", "epoch", "moteid", *CHANNELS, "label")
CLEAN_COLUMNS = (*READING_COLUMNS, "fault", "fault_reason")
MALFORMED_COLUMNS = ("line_no", "line", "reason")

# Physically possible ranges; outside -> fault (kept, flagged). SHT11: -40..123.8 C spec'd,
# but the lab never exceeds 85 C, and >100 C is the known low-battery failure signature.
TEMP_RANGE = (-40.0, 85.0)
HUMIDITY_RANGE = (0.0, 100.0)
LIGHT_RANGE = (0.0, 100_000.0)
VOLTAGE_RANGE = (1.8, 3.3)  # two AA-class cells on a Mica2Dot


@dataclass(frozen=True)
class Parsed:
    """Parse result: typed readings, malformed lines, and duplicate count."""

    readings: pd.DataFrame
    malformed: pd.DataFrame
    duplicates: int
    lines: int


def read_lines(path: Path) -> list[str]:
    """All lines of a text file, gunzipping when the file starts with the gzip magic."""
    path = Path(path)
    with open(path, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    opener = gzip.open if gz else open
    with opener(path, "rt", encoding="utf-8", errors="replace", newline=None) as f:
        return f.read().splitlines()


def _empty_malformed() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "line_no": pd.Series(dtype="int64"),
            "line": pd.Series(dtype=object),
            "reason": pd.Series(dtype=object),
        }
    )


RANGE_CHECKS: tuple[tuple[str, tuple[float, float]], ...] = (
    ("temperature", TEMP_RANGE),
    ("humidity", HUMIDITY_RANGE),
    ("light", LIGHT_RANGE),
    ("voltage", VOLTAGE_RANGE),
)


def range_hits(columns: dict[str, np.ndarray] | pd.DataFrame, n: int) -> np.ndarray:
    """``(n, 8)`` bool: each reading below / above each channel's physical range, in the
    order of :data:`RANGE_CHECKS` (NaN is in range: its own check is finiteness)."""
    masks = []
    for col, (lo, hi) in RANGE_CHECKS:
        v = np.asarray(columns[col])
        masks += [v < lo, v > hi]
    return np.stack(masks, axis=1) if n else np.zeros((0, 2 * len(RANGE_CHECKS)), dtype=bool)


def mark_faults(df: pd.DataFrame) -> pd.DataFrame:
    """Add ``fault`` (bool) and ``fault_reason`` (``;``-joined, or None) columns in place."""
    names = [
        f"{col}{op}{b:g}" for col, rng in RANGE_CHECKS for op, b in zip("<>", rng, strict=True)
    ]
    hits = range_hits({c: df[c].to_numpy() for c, _ in RANGE_CHECKS}, len(df))
    fault = hits.any(axis=1)
    reason = np.full(len(df), None, dtype=object)
    reason[fault] = [
        ";".join(n for n, h in zip(names, row, strict=True) if h) for row in hits[fault].tolist()
    ]
    df["fault"] = fault
    df["fault_reason"] = reason
    return df


def parse_lines(lines: list[str], labels: pd.DataFrame | None = None) -> Parsed:
    """Parse raw ``data.txt`` lines into clean-column readings + malformed lines.

    Steps: split on whitespace, type each field (bad -> malformed with the reason),
    timestamp as UTC, join ``labels`` (moteid, epoch, label), drop repeated
    (moteid, epoch) keeping the first line, flag faults, sort by (ts, moteid).
    """
    s = pd.Series(lines, dtype=object)
    parts = s.str.split()
    nfields = parts.str.len().fillna(0).astype(np.int64).to_numpy()
    reason = pd.Series(None, index=s.index, dtype=object)
    blank = nfields == 0
    reason[blank] = "blank line"
    wrong = ~blank & (nfields != len(RAW_FIELDS))
    reason[wrong] = [
        f"missing fields ({k} of 8)" if k < 8 else f"too many fields ({k}, expected 8)"
        for k in nfields[wrong]
    ]
    ok = nfields == len(RAW_FIELDS)
    raw = pd.DataFrame(parts[ok].tolist(), columns=list(RAW_FIELDS), index=s.index[ok])

    out = pd.DataFrame(index=raw.index)
    out["ts"] = pd.to_datetime(
        raw["date"] + " " + raw["time"], format="ISO8601", errors="coerce", utc=True
    )
    bad = pd.Series(None, index=raw.index, dtype=object)
    bad[out["ts"].isna()] = "bad date/time"
    for col in ("epoch", "moteid"):
        v = pd.to_numeric(raw[col], errors="coerce")
        integral = np.isfinite(v) & (v == np.floor(v)) & (v.abs() < 2**62)
        lo = 0 if col == "epoch" else 1
        bad[bad.isna() & ~integral] = f"non-integer {col}"
        bad[bad.isna() & integral & (v < lo)] = f"{col} < {lo}"
        out[col] = v.where(integral, -1).astype(np.int64)
    for col in CHANNELS:
        v = pd.to_numeric(raw[col], errors="coerce").astype(np.float64)
        bad[bad.isna() & ~np.isfinite(v)] = f"non-numeric {col}"
        out[col] = v
    reason[bad.index] = bad
    good = bad.isna()
    out = out[good]

    malformed = (
        pd.DataFrame(
            {
                "line_no": reason.index[reason.notna()] + 1,
                "line": s[reason.notna()],
                "reason": reason[reason.notna()],
            }
        ).reset_index(drop=True)
        if reason.notna().any()
        else _empty_malformed()
    )

    if labels is not None and len(labels):
        lab = labels.drop_duplicates(["moteid", "epoch"])
        lab = lab.astype({"moteid": np.int64, "epoch": np.int64})
        out = out.reset_index().merge(lab, on=["moteid", "epoch"], how="left").set_index("index")
        out["label"] = out["label"].astype(object).where(out["label"].notna(), None)
    else:
        out["label"] = pd.Series(None, index=out.index, dtype=object)

    before = len(out)
    out = out[~out.duplicated(["moteid", "epoch"], keep="first")]
    duplicates = before - len(out)
    out = mark_faults(out.copy())
    out = out.sort_values(["ts", "moteid"], kind="stable").reset_index(drop=True)
    out = out[list(CLEAN_COLUMNS)]
    return Parsed(out, malformed, duplicates, len(lines))


def read_labels(path: Path | None) -> pd.DataFrame | None:
    """Read a ``<file>.labels.csv`` sidecar (moteid, epoch, label), or None."""
    if path is None or not Path(path).exists():
        return None
    return pd.read_csv(path, dtype={"moteid": np.int64, "epoch": np.int64, "label": str})


def parse_readings(path: Path, labels_path: Path | None = None) -> Parsed:
    """Parse a raw ``data.txt`` (optionally gzipped) with its optional labels sidecar."""
    return parse_lines(read_lines(path), read_labels(labels_path))


def parse_mote_locs(path: Path) -> pd.DataFrame:
    """``mote_locs.txt`` -> DataFrame(moteid int, x float, y float); header line tolerated."""
    rows = []
    for line in read_lines(path):
        f = line.split()
        if len(f) != 3:
            continue
        try:
            rows.append((int(f[0]), float(f[1]), float(f[2])))
        except ValueError:  # a header such as "moteid x y"
            continue
    df = pd.DataFrame(rows, columns=["moteid", "x", "y"])
    return df.drop_duplicates("moteid").sort_values("moteid").reset_index(drop=True)


def parse_connectivity(path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``connectivity.txt`` -> (DataFrame(sender, receiver, probability), malformed lines).

    Incomplete lines (the published file has `` 0 31 `` with no probability) are
    returned in the malformed frame with their reason.
    """
    good, bad = [], []
    for i, line in enumerate(read_lines(path), start=1):
        f = line.split()
        if not f:
            continue
        if len(f) != 3:
            bad.append((i, line, f"expected 3 fields, got {len(f)}"))
            continue
        try:
            good.append((int(f[0]), int(f[1]), float(f[2])))
        except ValueError:
            bad.append((i, line, "non-numeric field"))
    df = pd.DataFrame(good, columns=["sender", "receiver", "probability"])
    return df, pd.DataFrame(bad, columns=list(MALFORMED_COLUMNS))
