"""Dataset assets: offline fallback to the generator, clean Parquet, mote locations."""

from __future__ import annotations

import dagster as dg
import pandas as pd
import pytest

from iot_fed.config import get_settings
from iot_fed.defs.assets.dataset import intel_lab_clean, intel_lab_raw, mote_locations
from iot_fed.defs.resources import SettingsResource


@pytest.mark.slow  # generates and cleans a whole offline dataset
def test_dataset_group_offline_uses_generator(monkeypatch, tmp_path):
    monkeypatch.setenv("IOT_FED_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("IOT_FED_DATA_URL", "http://127.0.0.1:1/data.txt.gz")  # unreachable
    monkeypatch.setenv("IOT_FED_MOTE_LOCS_URL", "http://127.0.0.1:1/mote_locs.txt")
    monkeypatch.setenv("IOT_FED_GENERATOR_MOTES", "4")
    monkeypatch.setenv("IOT_FED_GENERATOR_DAYS", "0.5")
    monkeypatch.setenv("IOT_FED_DOWNLOAD_TIMEOUT_S", "1")
    get_settings.cache_clear()
    with dg.instance_for_test() as instance:
        res = dg.materialize(
            [intel_lab_raw, intel_lab_clean, mote_locations],
            instance=instance,
            resources={"settings": SettingsResource()},
        )
    assert res.success
    raw_meta = res.asset_materializations_for_node("intel_lab_raw")[0].metadata
    assert raw_meta["source"].value == "synthetic"
    clean_meta = res.asset_materializations_for_node("intel_lab_clean")[0].metadata
    assert clean_meta["motes"].value == 4
    df = pd.read_parquet(res.output_for_node("intel_lab_clean"))
    assert len(df) == clean_meta["rows"].value > 0
    assert not df.duplicated(["moteid", "epoch"]).any()
    locs = pd.read_parquet(res.output_for_node("mote_locations"))
    assert len(locs) == 4
