"""build_clean: parquet + malformed beside it + metadata; pandera rejects bad frames."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pandera.errors
import pytest

from iot_fed.data.clean import build_clean, build_mote_locations, malformed_path_for
from iot_fed.data.parse import CLEAN_COLUMNS, parse_lines
from iot_fed.data.schemas import CleanReadings

GOOD = [
    "2004-02-28 00:59:16.02785 3 1 19.9884 37.0933 45.08 2.69964",
    "2004-02-28 00:58:46.002832 3 2 19.3024 38.4629 45.08 2.68742",
]


def test_build_clean_on_generated(generated, tmp_path: Path) -> None:
    out = tmp_path / "clean" / "intel_lab_clean.parquet"
    df, meta = build_clean(generated.path, generated.labels_path, out)
    assert out.exists() and malformed_path_for(out).exists()
    back = pd.read_parquet(out)
    assert tuple(back.columns) == CLEAN_COLUMNS and len(back) == len(df) == meta["rows"]
    assert str(back["ts"].dtype) == "datetime64[ns, UTC]"
    assert meta["motes"] == 8
    assert meta["malformed"] == generated.metadata["truncated_lines"]
    assert meta["duplicates"] == generated.metadata["duplicates"]
    assert meta["lines"] == generated.metadata["lines"]
    assert meta["rows"] + meta["malformed"] + meta["duplicates"] == meta["lines"]
    assert meta["faults"] > 0 and meta["labelled"]["low_voltage"] > 0
    assert meta["ts_min"].startswith("2004-02-28")
    mal = pd.read_csv(malformed_path_for(out))
    assert list(mal.columns) == ["line_no", "line", "reason"] and len(mal) == meta["malformed"]


def test_pandera_rejects_bad_frames() -> None:
    df = parse_lines(GOOD).readings
    CleanReadings.validate(df)
    bad = df.copy()
    bad.loc[0, "moteid"] = 0
    with pytest.raises(pandera.errors.SchemaError):
        CleanReadings.validate(bad)
    dup = pd.concat([df, df.iloc[[0]]], ignore_index=True)
    with pytest.raises(pandera.errors.SchemaError):
        CleanReadings.validate(dup)
    unflagged = df.copy()
    unflagged.loc[0, "fault_reason"] = "temperature>85"
    with pytest.raises(pandera.errors.SchemaError, match="fault_reason"):
        CleanReadings.validate(unflagged)
    naive = df.copy()
    naive["ts"] = naive["ts"].dt.tz_localize(None)
    with pytest.raises(pandera.errors.SchemaError):
        CleanReadings.validate(naive)
    unsorted = df.iloc[::-1].reset_index(drop=True)
    with pytest.raises(pandera.errors.SchemaError, match="sorted"):
        CleanReadings.validate(unsorted)


def test_mote_locations(intel_lab_dir: Path) -> None:
    df, meta = build_mote_locations(intel_lab_dir / "mote_locs.txt")
    assert meta["motes"] == 54 and len(df) == 54
