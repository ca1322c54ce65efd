"""Fixtures for the data tests: the real Intel Lab side files when present."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED_INTEL_LAB = REPO.parent / "shared" / "data" / "intel_lab"


@pytest.fixture(scope="session")
def intel_lab_dir() -> Path:
    """``<clone>/../shared/data/intel_lab`` (real mote_locs, connectivity, one series)."""
    if not SHARED_INTEL_LAB.is_dir():
        pytest.skip(f"real Intel Lab files not present at {SHARED_INTEL_LAB}")
    return SHARED_INTEL_LAB


@pytest.fixture(scope="session")
def generated(tmp_path_factory: pytest.TempPathFactory):
    """One small generated data set shared by several tests (8 motes, 3 days from a Saturday)."""
    from iot_fed.data.generator import generate

    out = tmp_path_factory.mktemp("gen") / "data.txt"
    return generate(out, motes=8, days=3.0, seed=11, low_voltage_fraction=0.25)
