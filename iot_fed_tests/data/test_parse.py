"""Parser: real-format lines incl. malformed ones, dedup, fault marking, side files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from iot_fed.data.parse import (
    CLEAN_COLUMNS,
    parse_connectivity,
    parse_lines,
    parse_mote_locs,
    parse_readings,
)

LINES = [
    "2004-03-31 03:38:15.757551 2 1 122.153 -3.91901 11.04 2.03397",  # 1 low-battery fault
    "2004-02-28 00:59:16.02785 3 1 19.9884 37.0933 45.08 2.69964",  # 2 five fractional digits
    "2004-02-28 00:58:46.002832 3 2 19.3024 38.4629 45.08 2.68742",  # 3
    "2004-02-28 01:03:16.33393 11 1 19.1652",  # 4 missing fields (real file has these)
    "2004-02-28 01:06:16.013453 17 1 abc 37.0933 45.08 2.69964",  # 5 non-numeric
    "2004-02-31 01:06:46.778088 18 1 19.175 38.8379 45.08 2.69964",  # 6 bad date
    "",  # 7 blank
    "2004-02-28 00:59:16.02785 3 1 99.9 99.9 99.9 2.5",  # 8 duplicate (moteid 1, epoch 3)
    "2004-02-28 01:08:45.992524 20 1 19.1456 38.9401 45.08 2.69964 extra",  # 9 too many
    "2004-02-28 01:09:22.323858 21 1.5 19.1456 38.9401 45.08 2.69964",  # 10 non-integer mote
    "2004-02-28 01:10:22.323858 22 1 19.1 40.1 nan 2.69964",  # 11 non-finite light
    "2004-02-28 01:11:22.323858 -4 1 19.1 40.1 1.0 2.69964",  # 12 negative epoch
    "2004-03-01 10:00:00 30 3 -45.0 101.5 300.0 2.6",  # 13 no fraction; two faults
]


@pytest.fixture()
def parsed():
    labels = pd.DataFrame({"moteid": [1], "epoch": [2], "label": ["low_voltage"]})
    return parse_lines(LINES, labels)


def test_columns_types_and_order(parsed) -> None:
    df = parsed.readings
    assert tuple(df.columns) == CLEAN_COLUMNS
    assert str(df["ts"].dtype) == "datetime64[ns, UTC]"
    assert df["epoch"].dtype == np.int64 and df["moteid"].dtype == np.int64
    assert list(zip(df["moteid"], df["epoch"], strict=True)) == [(2, 3), (1, 3), (3, 30), (1, 2)]
    assert df["ts"].is_monotonic_increasing
    assert df.loc[1, "ts"] == pd.Timestamp("2004-02-28 00:59:16.027850", tz="UTC")


def test_malformed_lines_kept_with_reason(parsed) -> None:
    bad = parsed.malformed.set_index("line_no")["reason"].to_dict()
    assert bad == {
        4: "missing fields (5 of 8)",
        5: "non-numeric temperature",
        6: "bad date/time",
        7: "blank line",
        9: "too many fields (9, expected 8)",
        10: "non-integer moteid",
        11: "non-numeric light",
        12: "epoch < 0",
    }
    assert parsed.malformed.set_index("line_no").loc[4, "line"] == LINES[3]
    # every line is accounted for: kept, malformed or a duplicate
    assert len(parsed.readings) + len(parsed.malformed) + parsed.duplicates == len(LINES)


def test_duplicates_keep_first(parsed) -> None:
    assert parsed.duplicates == 1
    row = parsed.readings.query("moteid == 1 and epoch == 3").iloc[0]
    assert row["temperature"] == pytest.approx(19.9884)


def test_faults_marked_not_dropped(parsed) -> None:
    df = parsed.readings.set_index(["moteid", "epoch"])
    assert df.loc[(1, 2), "fault"]
    assert df.loc[(1, 2), "fault_reason"] == "temperature>85;humidity<0"
    assert df.loc[(3, 30), "fault_reason"] == "temperature<-40;humidity>100"
    assert not df.loc[(2, 3), "fault"] and df.loc[(2, 3), "fault_reason"] is None


def test_labels_joined(parsed) -> None:
    df = parsed.readings.set_index(["moteid", "epoch"])
    assert df.loc[(1, 2), "label"] == "low_voltage"
    assert df.loc[(2, 3), "label"] is None


def test_gzip_and_no_labels(tmp_path: Path) -> None:
    import gzip

    p = tmp_path / "data.txt.gz"
    with gzip.open(p, "wt") as f:
        f.write("\n".join(LINES[:3]) + "\n")
    out = parse_readings(p)
    assert len(out.readings) == 3 and out.readings["label"].isna().all()
    assert out.malformed.empty and list(out.malformed.columns) == ["line_no", "line", "reason"]


def test_real_mote_locs(intel_lab_dir: Path) -> None:
    locs = parse_mote_locs(intel_lab_dir / "mote_locs.txt")
    assert len(locs) == 54 and locs["moteid"].tolist() == list(range(1, 55))
    assert tuple(locs.iloc[0]) == (1, 21.5, 23.0)


def test_real_connectivity_tolerates_incomplete_line(intel_lab_dir: Path) -> None:
    links, bad = parse_connectivity(intel_lab_dir / "connectivity.txt")
    assert len(links) == 2970
    assert bad["line_no"].tolist() == [2918] and bad["line"].iloc[0].split() == ["0", "31"]
    assert links["probability"].between(0, 1).all()
    assert set(links["sender"]) | set(links["receiver"]) == set(range(55))
