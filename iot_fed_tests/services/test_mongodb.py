"""The real local MongoDB-compatible server (FerretDB): documents and unique indexes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pymongo import ASCENDING
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError


def test_insert_and_find(mongo_db: Database) -> None:
    ts = datetime(2004, 3, 31, 3, 38, 15, tzinfo=UTC)
    docs = [{"moteid": m, "epoch": 2, "ts": ts, "temperature": 19.5 + m} for m in (1, 2, 3)]
    mongo_db.readings.insert_many(docs)

    found = list(mongo_db.readings.find({"moteid": {"$gte": 2}}, {"_id": 0}).sort("moteid", 1))
    assert [d["moteid"] for d in found] == [2, 3]
    assert found[0]["temperature"] == 21.5
    assert found[0]["ts"].replace(tzinfo=UTC) == ts
    assert mongo_db.readings.count_documents({}) == 3


def test_unique_index_rejects_duplicate(mongo_db: Database) -> None:
    coll = mongo_db.sensor_readings
    coll.create_index([("moteid", ASCENDING), ("epoch", ASCENDING)], unique=True)
    coll.insert_one({"moteid": 1, "epoch": 7, "temperature": 20.0})
    coll.insert_one({"moteid": 1, "epoch": 8, "temperature": 20.1})
    with pytest.raises(DuplicateKeyError):
        coll.insert_one({"moteid": 1, "epoch": 7, "temperature": 99.0})
    assert coll.count_documents({"moteid": 1, "epoch": 7}) == 1


def test_mongo_db_fixture_is_fresh(mongo_db: Database) -> None:
    assert mongo_db.list_collection_names() == []


def test_validators_are_refused_in_one_line_not_a_server_stack_trace(
    mongo_db: Database, settings
) -> None:
    from iot_fed.services.mongodb import MongoService
    from iot_fed.store import init_database

    if settings.mongodb_server != "mongo-java-server" or not MongoService(settings).is_local:
        pytest.skip("the project's mongo-java-server wrapper only")
    log = MongoService(settings).log_path
    before = log.stat().st_size
    report = init_database(mongo_db)
    refused = "unsupported by server (code 59: collMod is not supported: no server-side validators)"
    assert refused in {r["validator"] for r in report.values()}  # asked once, then skipped
    with open(log, "rb") as f:
        f.seek(before)
        added = f.read().decode(errors="replace")
    assert "collMod" not in added and "Exception" not in added
