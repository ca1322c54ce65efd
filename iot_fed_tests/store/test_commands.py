"""``iot-fed db init|status`` against the real server."""

from __future__ import annotations

import json

from iot_fed.cli import main


def test_db_init_and_status(mongo_db, services, capsys) -> None:
    args = ["--uri", services.mongodb_uri, "--database", mongo_db.name]
    assert main(["db", "status", *args]) == 0
    assert "missing (run `iot-fed db init`)" in capsys.readouterr().out
    assert main(["db", "init", *args]) == 0
    out = capsys.readouterr().out
    assert "sensor_readings" in out and "moteid_epoch_unique" in out
    assert main(["db", "init", *args]) == 0  # idempotent
    assert "exists" in capsys.readouterr().out
    mongo_db.sensor_readings.insert_one({"moteid": 1, "epoch": 1})
    assert main(["db", "status", "--json", *args]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["database"] == mongo_db.name
    assert status["collections"]["sensor_readings"]["count"] == 1
    assert status["collections"]["predictions"]["count"] == 0
