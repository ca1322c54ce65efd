"""Store against the real MongoDB-compatible server (a fresh database per test)."""

from __future__ import annotations

import datetime as dt
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import pytest
from pymongo import MongoClient
from pymongo.errors import BulkWriteError, DuplicateKeyError

from iot_fed import store
from iot_fed.data.parse import parse_lines
from iot_fed.store import COLLECTIONS, SchemaValidationError, StoreConnectionError
from iot_fed.store.predictions import VerdictWrite, prediction_id

T0 = dt.datetime(2004, 2, 28, 1, 0, tzinfo=dt.UTC)


def reading(moteid: int, epoch: int, **kw) -> dict:
    doc = {
        "ts": T0 + dt.timedelta(seconds=31 * epoch),
        "epoch": epoch,
        "moteid": moteid,
        "temperature": 20.0,
        "humidity": 40.0,
        "light": 100.0,
        "voltage": 2.6,
        "label": None,
    }
    return doc | kw


@pytest.fixture
def db(mongo_db):
    store.init_database(mongo_db)
    return mongo_db


def test_init_is_idempotent(mongo_db) -> None:
    first = store.init_database(mongo_db)
    second = store.init_database(mongo_db)
    assert all(first[c]["created"] for c in COLLECTIONS)
    assert not any(second[c]["created"] for c in COLLECTIONS)
    status = store.database_status(mongo_db)
    assert set(status) == set(COLLECTIONS)
    assert "moteid_epoch_unique" in status["sensor_readings"]["indexes"]
    assert all(s["count"] == 0 for s in status.values())


def test_init_run_at_once_by_several_processes_succeeds_everywhere(mongo_db) -> None:
    """Ingesters started together each initialise the same new database (a fresh-clone
    rehearsal once failed one with the server's namespace race): every one succeeds, 8
    times over, with the collections and indexes each created once."""
    uri = "mongodb://{}:{}/".format(*mongo_db.client.address)
    for round_ in range(8):
        name = f"{mongo_db.name[:50]}_{round_}"
        clients = [MongoClient(uri, serverSelectionTimeoutMS=10_000) for _ in range(4)]
        try:
            with ThreadPoolExecutor(len(clients)) as pool:
                reports = list(pool.map(store.init_database, [c[name] for c in clients]))
            assert len(reports) == 4
            status = store.database_status(clients[0][name])
            assert set(status) == set(COLLECTIONS)
            assert "moteid_epoch_unique" in status["sensor_readings"]["indexes"]
        finally:
            clients[0].drop_database(name)
            for c in clients:
                c.close()


def test_init_drops_retired_indexes_and_keeps_the_declared_ones(mongo_db) -> None:
    """An index a store got from an older version and no longer declared (each index is
    written on every insert) is dropped; the declared ones stay; data is untouched."""
    mongo_db.sensor_readings.insert_one(reading(1, 1))
    mongo_db.sensor_readings.create_index([("moteid", 1), ("ts", 1)], name="moteid_ts")
    mongo_db.predictions.create_index([("model_version", 1)], name="model_version")
    store.init_database(mongo_db)
    readings = set(mongo_db.sensor_readings.index_information())
    assert "moteid_ts" not in readings and "moteid_epoch_unique" in readings
    assert "model_version" not in set(mongo_db.predictions.index_information())
    assert {"moteid_ts", "flagged_at"} <= set(mongo_db.anomalies.index_information())
    assert mongo_db.sensor_readings.count_documents({}) == 1


def test_unique_indexes_reject_duplicates(db) -> None:
    db.sensor_readings.insert_one(reading(1, 1))
    with pytest.raises(DuplicateKeyError):
        db.sensor_readings.insert_one(reading(1, 1, temperature=30.0))
    db.predictions.insert_one(
        {"moteid": 1, "ts": T0, "score": 1.0, "is_anomaly": False, "model_version": 1}
    )
    with pytest.raises(DuplicateKeyError):
        db.predictions.insert_one(
            {"moteid": 1, "ts": T0, "score": 2.0, "is_anomaly": True, "model_version": 2}
        )
    store.save_global_model(db, b"g", version=1)
    with pytest.raises(DuplicateKeyError):
        store.save_global_model(db, b"g2", version=1)
    store.save_local_model(db, "1", b"l", version=1)
    with pytest.raises(DuplicateKeyError):
        store.save_local_model(db, "1", b"l2", version=1)


def test_python_schema_check_rejects_before_write(db) -> None:
    bad = reading(1, 2, ts="2004-02-28T01:00:00Z")
    with pytest.raises(SchemaValidationError, match=r"doc\[1\] ts: expected date, got string"):
        store.upsert_readings(db, [reading(1, 1), bad])
    assert db.sensor_readings.count_documents({}) == 0  # nothing written


@pytest.mark.parametrize("strategy", ["insert", "upsert"])
def test_upsert_readings_idempotent(db, strategy: str) -> None:
    docs = [reading(m, e) for m in (1, 2) for e in range(5)]
    assert store.upsert_readings(db, docs, strategy) == (10, 0)
    assert store.upsert_readings(db, docs, strategy) == (0, 10)
    more = docs[:3] + [reading(1, 9), reading(1, 9, temperature=99.0)]
    assert store.upsert_readings(db, more, strategy) == (1, 4)
    assert db.sensor_readings.count_documents({}) == 11
    stored = db.sensor_readings.find_one({"moteid": 1, "epoch": 9})
    assert stored["temperature"] == 20.0  # first write wins
    assert all("_id" not in d for d in docs)  # caller's dicts untouched


@pytest.mark.parametrize("strategy", ["insert", "upsert"])
def test_insert_readings_owned_writes_the_callers_dicts_uncopied(db, strategy: str) -> None:
    """``owned=True`` (the ingester's fresh dicts): same result as a copy, same documents."""
    docs = [reading(m, e) for m in (1, 2) for e in range(5)]
    assert store.insert_readings(db, docs, strategy, owned=True) == list(range(10))
    again = [reading(1, 4), reading(3, 0), reading(3, 0, temperature=1.0)]
    assert store.insert_readings(db, again, strategy, owned=True) == [1]
    stored = {(d["moteid"], d["epoch"]): d for d in db.sensor_readings.find({}, {"_id": 0})}
    assert len(stored) == 11 and stored[(3, 0)]["temperature"] == 20.0
    assert stored[(1, 2)] == {
        k: v.replace(tzinfo=None) if k == "ts" else v for k, v in docs[2].items() if k != "_id"
    }


def test_readings_for_device_and_counts(db) -> None:
    store.upsert_readings(db, [reading(3, e) for e in range(10)] + [reading(4, 0)])
    got = store.readings_for_device(db, 3, since_epoch=4)
    assert [d["epoch"] for d in got] == [5, 6, 7, 8, 9] and "_id" not in got[0]
    assert [d["epoch"] for d in store.readings_for_device(db, 3, limit=3)] == [7, 8, 9]
    many = store.readings_for_devices(db, {3: 6, 4: None, 5: None}, limit=2)
    assert {m: [d["epoch"] for d in v] for m, v in many.items()} == {3: [8, 9], 4: [0], 5: []}
    assert store.reading_counts(db) == {
        3: {"count": 10, "max_epoch": 9},
        4: {"count": 1, "max_epoch": 0},
    }


def test_readings_queries_are_sized_by_the_readings_they_return(db, monkeypatch) -> None:
    """Devices expected to return many readings share a query with fewer others (the
    embedded server holds a query's whole result in its heap); the result is the same."""
    from iot_fed.store import collections

    assert [len(p) for p in collections.query_batches(list(range(5)), [2, 2, 2, 2, 2])] == [5]
    monkeypatch.setattr(collections, "READINGS_PER_QUERY", 4)
    assert [len(p) for p in collections.query_batches(list(range(5)), [2, 2, 3, 9, 1])] == [
        2,
        1,
        1,
        1,
    ]
    store.upsert_readings(db, [reading(m, e) for m in (1, 2, 3) for e in range(4)])
    calls: list[int] = []
    real = collections.query_batches

    def counted(items, sizes):
        parts = list(real(items, sizes))
        calls.append(len(parts))
        return iter(parts)

    monkeypatch.setattr("iot_fed.store.repository.query_batches", counted)
    got = store.readings_for_devices(db, {1: None, 2: 1, 3: None}, expected={1: 4, 2: 2, 3: 4})
    assert calls == [3]
    assert {m: [d["epoch"] for d in v] for m, v in got.items()} == {
        1: [0, 1, 2, 3],
        2: [2, 3],
        3: [0, 1, 2, 3],
    }


def test_readings_from_clean_frame(db) -> None:
    df = parse_lines(
        [
            "2004-02-28 00:59:16.02785 3 1 19.9884 37.0933 45.08 2.69964",
            "2004-03-31 03:38:15.757551 2 1 122.153 -3.91901 11.04 2.03397",
        ]
    ).readings
    docs = store.readings_to_docs(df)
    assert store.upsert_readings(db, docs) == (2, 0)
    back = store.readings_for_device(db, 1)
    assert [d["epoch"] for d in back] == [2, 3]
    assert back[0]["fault_reason"] == "temperature>85;humidity<0" and back[1]["fault"] is False
    assert back[1]["label"] is None
    ts = pd.Timestamp(back[1]["ts"])  # BSON dates keep milliseconds
    ts = ts.tz_localize(None) if ts.tz else ts
    assert ts == pd.Timestamp("2004-02-28 00:59:16.027")


def test_model_versions_and_promotion(db) -> None:
    assert store.next_version(db, "local_models", "7") == 1
    a = store.save_local_model(db, 7, b"\x00\x01", n_samples=50, metrics={"loss": 0.5})
    b = store.save_local_model(db, "7", b"\x00\x02", n_samples=60, base_version=1)
    c = store.save_local_model(db, "8", b"\x00\x03")
    assert (a["version"], b["version"], c["version"]) == (1, 2, 1)
    latest = store.latest_local_models(db)
    assert {k: v["version"] for k, v in latest.items()} == {"7": 2, "8": 1}
    assert latest["7"]["params"] == b"\x00\x02"
    future = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    assert store.latest_local_models(db, fresher_than=future) == {}
    assert set(store.latest_local_models(db, devices=[8, 9])) == {"8"}

    assert store.promoted_global_model(db) is None
    g1 = store.save_global_model(db, b"g1", lineage=[{"device": "7", "version": 2}])
    assert g1["version"] == 1 and not g1["promoted"]
    g2 = store.save_global_model(db, b"g2", parent_version=1, promoted=True)
    assert g2["version"] == 2 and g2["promoted"]
    assert store.promoted_global_model(db)["version"] == 2
    store.promote(db, 1)  # roll back
    assert store.promoted_global_model(db)["version"] == 1
    assert db.global_models.count_documents({"promoted": True}) == 1
    assert store.latest_global_model(db)["version"] == 2
    with pytest.raises(KeyError):
        store.promote(db, 99)


def test_predictions_idempotent_and_newer_model_wins(db) -> None:
    p = {"moteid": 1, "ts": T0, "score": 0.1, "is_anomaly": False, "model_version": 2}
    other = p | {"moteid": 2}
    assert store.upsert_predictions(db, [p, other]).inserted == (0, 1)
    same = p | {"score": 0.5}  # the same version again: the stored verdict stays
    assert store.upsert_predictions(db, [same]) == VerdictWrite((), 0, (0,))
    newer = p | {"score": 0.9, "is_anomaly": True, "model_version": 3}
    assert store.upsert_predictions(db, [other, newer]) == VerdictWrite((), 1, (0,))
    assert store.upsert_predictions(db, [p]).kept == (0,)  # an older model never replaces
    stored = db.predictions.find_one({"moteid": 1})
    assert stored["model_version"] == 3 and stored["is_anomaly"] is True
    assert stored["score"] == 0.9 and db.predictions.count_documents({}) == 2


def test_a_verdict_that_lost_the_insert_race_to_an_older_one_replaces_it(db, monkeypatch) -> None:
    """MongoDB retries an upsert that met a duplicate key only when its filter is an
    equality on the unique key alone; the version guard is not. When another writer inserts
    the reading's first verdict, older, between this upsert's match and its insert, the
    insert fails as a duplicate: the stored version is read back, and the upsert runs again
    and replaces it. (The project's server runs an upsert's match and insert as one step,
    so the race is played here: its insert, then the answer a real MongoDB gives.)"""
    from iot_fed.store import predictions as module

    older = {"moteid": 1, "ts": T0, "score": 0.1, "is_anomaly": False, "model_version": 2}
    newer = older | {"score": 0.9, "model_version": 3}
    real_durable = module.durable

    class Raced:
        def __init__(self, coll) -> None:
            self.coll, self.raced = coll, False

        def bulk_write(self, ops, ordered=True):
            if self.raced:
                return self.coll.bulk_write(ops, ordered=ordered)
            self.raced = True
            self.coll.insert_one({**older, "_id": prediction_id(1, T0)})
            dup = {"index": 0, "code": 11000, "errmsg": "E11000 duplicate key error", "op": {}}
            raise BulkWriteError(
                {
                    "writeErrors": [dup],
                    "writeConcernErrors": [],
                    "nInserted": 0,
                    "nUpserted": 0,
                    "nMatched": 0,
                    "nModified": 0,
                    "nRemoved": 0,
                    "upserted": [],
                }
            )

        def __getattr__(self, name):
            return getattr(self.coll, name)

    monkeypatch.setattr(module, "durable", lambda db, name: Raced(real_durable(db, name)))
    assert store.upsert_predictions(db, [newer]) == VerdictWrite((), 1, ())
    stored = db.predictions.find_one({"moteid": 1})
    assert stored["model_version"] == 3 and stored["score"] == 0.9
    monkeypatch.setattr(module, "durable", real_durable)
    # a duplicate that met a verdict as new or newer stays kept, after the read-back
    assert store.upsert_predictions(db, [older, newer]) == VerdictWrite((), 0, (0, 1))


def test_dead_letters(db) -> None:
    d = {
        "_id": "iot_stream:0:5",
        "ts": T0,
        "reason": "not JSON",
        "raw": b"\xff{",
        "topic": "iot_stream",
        "partition": 0,
        "offset": 5,
        "key": "1",
        "stage": "decode",
    }
    assert store.insert_dead_letters(db, [d]) == 1
    assert store.insert_dead_letters(db, [d]) == 0  # same source position: no second copy
    assert store.insert_dead_letters(db, [{"ts": T0, "reason": "bad"}]) == 1
    assert db.dead_letters.find_one({"_id": "iot_stream:0:5"})["raw"] == b"\xff{"
    with pytest.raises(SchemaValidationError, match="reason: required field missing"):
        store.insert_dead_letters(db, [{"ts": T0}])


def test_connect_errors() -> None:
    with pytest.raises(StoreConnectionError, match="invalid MongoDB URI"):
        store.connect("mongodb://user:secret@:x", "db", timeout=0.5)
    with pytest.raises(StoreConnectionError, match="cannot reach MongoDB") as info:
        store.connect("mongodb://u:secret@127.0.0.1:9/", "db", timeout=0.3)
    assert "secret" not in str(info.value)
