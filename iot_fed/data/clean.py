"""The clean step: raw file -> validated parquet + malformed lines + a metadata dict.

Pure functions for the Dagster assets ``intel_lab_clean`` and ``mote_locations``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pandas as pd

from iot_fed.data.parse import parse_connectivity, parse_mote_locs, parse_readings
from iot_fed.data.schemas import CleanReadings, MoteLocations


def malformed_path_for(out_parquet: Path) -> Path:
    """Where :func:`build_clean` writes the malformed lines: ``<stem>.malformed.csv``."""
    out_parquet = Path(out_parquet)
    return out_parquet.with_name(out_parquet.stem + ".malformed.csv")


def build_clean(
    raw_path: Path, labels_path: Path | None, out_parquet: Path
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Parse, validate (pandera) and write the clean readings; return (df, metadata).

    The malformed lines (line_no, line, reason) go to :func:`malformed_path_for`.
    Raises ``pandera.errors.SchemaErrors`` when the result breaks the schema.
    """
    t0 = time.perf_counter()
    parsed = parse_readings(raw_path, labels_path)
    df = CleanReadings.validate(parsed.readings, lazy=True)
    out_parquet = Path(out_parquet)
    out_parquet.parent.mkdir(parents=True, exist_ok=True)
    df.to_parquet(out_parquet, index=False)
    mpath = malformed_path_for(out_parquet)
    parsed.malformed.to_csv(mpath, index=False)
    return df, clean_metadata(df, parsed.malformed, parsed.duplicates, parsed.lines) | {
        "raw_path": str(raw_path),
        "labels_path": str(labels_path) if labels_path else None,
        "parquet_path": str(out_parquet),
        "malformed_path": str(mpath),
        "parquet_bytes": out_parquet.stat().st_size,
        "seconds": round(time.perf_counter() - t0, 3),
    }


def clean_metadata(
    df: pd.DataFrame, malformed: pd.DataFrame, duplicates: int, lines: int
) -> dict[str, Any]:
    """JSON-friendly summary of a clean frame (for Dagster metadata)."""
    faults = df.loc[df["fault"], "fault_reason"]
    by_reason = faults.str.split(";").explode().value_counts().sort_index()
    labels = df["label"].dropna().value_counts().sort_index()
    reasons = malformed["reason"].value_counts().sort_index() if len(malformed) else {}
    return {
        "lines": int(lines),
        "rows": int(len(df)),
        "motes": int(df["moteid"].nunique()),
        "ts_min": df["ts"].min().isoformat() if len(df) else None,
        "ts_max": df["ts"].max().isoformat() if len(df) else None,
        "malformed": int(len(malformed)),
        "malformed_by_reason": {str(k): int(v) for k, v in dict(reasons).items()},
        "duplicates": int(duplicates),
        "faults": int(df["fault"].sum()),
        "faults_by_reason": {str(k): int(v) for k, v in by_reason.items()},
        "labelled": {str(k): int(v) for k, v in labels.items()},
        "max_epoch": int(df["epoch"].max()) if len(df) else None,
    }


def build_mote_locations(path: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Parse and validate ``mote_locs.txt``; return (df, metadata)."""
    df = MoteLocations.validate(parse_mote_locs(path))
    meta = {
        "path": str(path),
        "motes": int(len(df)),
        "x_range": [float(df["x"].min()), float(df["x"].max())] if len(df) else None,
        "y_range": [float(df["y"].min()), float(df["y"].max())] if len(df) else None,
    }
    return df, meta


def build_connectivity(path: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Parse ``connectivity.txt``; return (df, metadata incl. malformed lines)."""
    df, bad = parse_connectivity(path)
    meta = {
        "path": str(path),
        "links": int(len(df)),
        "links_over_0_5": int((df["probability"] > 0.5).sum()),
        "malformed": bad.to_dict("records"),
    }
    return df, meta
