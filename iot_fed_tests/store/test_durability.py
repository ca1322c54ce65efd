"""The store's explicit write concern (MongoDB's durability vocabulary), configurable."""

from __future__ import annotations

import pytest
from pymongo import MongoClient
from pymongo.write_concern import WriteConcern

from iot_fed.config import ConfigError, get_settings, load_settings
from iot_fed.store import SENSOR_READINGS, durable, write_concern


def test_default_write_concern_is_journaled() -> None:
    assert write_concern("1", True).document == {"w": 1, "j": True}
    assert write_concern("majority", True).document == {"w": "majority", "j": True}


def test_setting_drives_the_concern_of_store_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IOT_FED_MONGODB_WRITE_CONCERN", "majority")
    get_settings.cache_clear()
    try:
        client: MongoClient = MongoClient("mongodb://127.0.0.1:1/", connect=False)
        coll = durable(client["x"], SENSOR_READINGS)
        assert coll.write_concern.document == {"w": "majority", "j": True}
        explicit = client["x"].with_options(write_concern=WriteConcern(w=1))
        assert durable(explicit, SENSOR_READINGS).write_concern.document == {"w": 1}
    finally:
        get_settings.cache_clear()


def test_bad_write_concern_names_the_setting() -> None:
    with pytest.raises(ConfigError, match="IOT_FED_MONGODB_WRITE_CONCERN"):
        load_settings(mongodb_write_concern="two")
