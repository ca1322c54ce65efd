"""Generator: exact raw format, determinism, labels sidecar, realism vs the real series."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from iot_fed.data.generator import EPOCH_S, generate, generate_mote_locs, labels_path_for
from iot_fed.data.parse import parse_mote_locs, parse_readings

LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6} \d+ \d+ -?[\d.e+-]+ -?[\d.e+-]+ [\d.e+-]+ [\d.e+-]+$"
)


def test_raw_format(generated) -> None:
    lines = generated.path.read_text().splitlines()
    full = [ln for ln in lines if len(ln.split()) == 8]
    assert len(full) >= 0.99 * len(lines)
    assert all(LINE.match(ln) for ln in full[:2000])
    assert lines[0].startswith("2004-02-28 00:58:")


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    a = generate(tmp_path / "a.txt", motes=5, days=0.5, seed=3)
    b = generate(tmp_path / "b.txt", motes=5, days=0.5, seed=3)
    c = generate(tmp_path / "c.txt", motes=5, days=0.5, seed=4)
    assert a.path.read_bytes() == b.path.read_bytes()
    assert a.labels_path.read_bytes() == b.labels_path.read_bytes()
    assert a.path.read_bytes() != c.path.read_bytes()


@pytest.mark.slow  # 54 motes x 3 days
def test_full_deployment_has_every_mote(tmp_path: Path) -> None:
    g = generate(tmp_path / "d.txt", motes=54, days=3.0, seed=7)
    assert g.metadata["motes"] == 54 and g.metadata["lines"] > 54 * 3 * 1500


def test_labels_sidecar_matches_injected_faults(generated) -> None:
    assert generated.labels_path == labels_path_for(generated.path)
    labels = pd.read_csv(generated.labels_path)
    assert list(labels.columns) == ["moteid", "epoch", "label"]
    assert set(labels["label"]) == {"low_voltage", "spike"}
    assert not labels.duplicated(["moteid", "epoch"]).any()
    df = parse_readings(generated.path, generated.labels_path).readings
    low = df[df["label"] == "low_voltage"]
    assert len(low) > 0
    # the known failure pattern: low battery -> temperature > 100 C, negative humidity
    assert (low["temperature"] > 100).all() and (low["humidity"] < 0).all()
    assert (low["voltage"] < 2.31).all() and low["fault"].all()
    ok = df[df["label"].isna()]
    assert not ok["fault"].any()


def test_missing_epochs_early_stop_and_drain(generated) -> None:
    df = parse_readings(generated.path).readings
    per_mote = df.groupby("moteid")["epoch"].agg(["count", "max"])
    epochs = int(3.0 * 86400 / EPOCH_S)
    share = per_mote["count"].sum() / (8 * epochs)
    assert 0.5 < share < 0.9  # missing epochs, as in the real data
    assert (per_mote["max"] < 0.95 * epochs).any()  # some motes stop early
    first = df.groupby("moteid")["voltage"].first()
    healthy = df[~df["fault"]].groupby("moteid")["voltage"].last()
    assert first.between(2.55, 2.8).all() and (healthy < first).all()


def _daily(day: pd.Series, temp: pd.Series, hum: pd.Series) -> tuple[float, float, float]:
    g = pd.DataFrame({"d": day, "t": temp, "h": hum}).groupby("d")
    full = g.size() > 0.5 * g.size().max()
    swing = (g["t"].max() - g["t"].min())[full].median()
    return float(swing), float(hum.quantile(0.05)), float(hum.quantile(0.95))


def test_realism_vs_real_single_mote_series(intel_lab_dir: Path, tmp_path: Path) -> None:
    real = pd.read_csv(
        intel_lab_dir / "ild48k_single_mote_epoch_temp_humidity.csv",
        names=["epoch", "temperature", "humidity"],
    )
    r_swing, r_h5, r_h95 = _daily(
        real["epoch"] * 31 // 86400, real["temperature"], real["humidity"]
    )
    g = generate(
        tmp_path / "r.txt", motes=6, days=7.0, seed=5, low_voltage_fraction=0.0, spike_rate=0.0
    )
    df = parse_readings(g.path).readings
    for _, one in df.groupby("moteid"):
        if len(one) < 1000:
            continue
        day = (one["ts"] - one["ts"].iloc[0]).dt.days
        swing, h5, h95 = _daily(day, one["temperature"], one["humidity"])
        assert r_swing / 3 < swing < r_swing * 3, (swing, r_swing)
        assert r_h5 - 15 < h5 and h95 < r_h95 + 15, ((h5, h95), (r_h5, r_h95))
        assert (h95 - h5) > (r_h95 - r_h5) / 4
        corr = np.corrcoef(one["temperature"], one["humidity"])[0, 1]
        assert corr < -0.3  # humidity anticorrelated with temperature, as in the real series
    assert df["temperature"].between(10, 40).all() and df["humidity"].between(5, 95).all()


def test_office_hours_light(generated) -> None:
    df = parse_readings(generated.path).readings
    df = df[~df["fault"]]
    hour = df["ts"].dt.hour
    night = df.loc[(hour >= 0) & (hour < 5), "light"]
    day = df.loc[(hour >= 10) & (hour < 16) & (df["ts"].dt.dayofweek < 5), "light"]
    assert night.median() < 10 and day.median() > 200
    assert df["light"].between(0, 2000).all()


def test_mote_locs_layout(tmp_path: Path) -> None:
    p = generate_mote_locs(tmp_path / "mote_locs.txt", motes=54)
    locs = parse_mote_locs(p)
    assert locs["moteid"].tolist() == list(range(1, 55))
    assert locs["x"].between(0, 40).all() and locs["y"].between(0, 30).all()
    assert not locs.duplicated(["x", "y"]).any()
