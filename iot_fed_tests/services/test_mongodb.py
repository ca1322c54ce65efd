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


def _index_range_queries(db: Database) -> int:
    return int(db.command("iotFedIndexStats")["rangeQueries"])


def test_range_queries_are_answered_from_the_unique_index_with_the_scans_answers(
    mongo_db: Database, settings
) -> None:
    """Equality on an index prefix (+ a range on the next field), ``$in`` and ``$or`` of
    them, read the ordered index instead of scanning the locked collection, and return
    exactly what MongoDB's matcher returns for the same query (type bracketing too)."""
    from iot_fed.services.mongodb import MongoService

    if settings.mongodb_server != "mongo-java-server" or not MongoService(settings).is_local:
        pytest.skip("the project's mongo-java-server wrapper only")
    coll = mongo_db.readings
    coll.create_index([("moteid", ASCENDING), ("ts", ASCENDING)], unique=True)
    t0 = datetime(2004, 3, 1)
    docs = [
        {"moteid": m, "ts": t0.replace(day=d), "temperature": 18.0 + d + m / 10}
        for m in (1, 2, 3, 11)
        for d in range(1, 21)
    ]
    docs += [{"moteid": "2", "ts": t0, "temperature": 0.0}, {"moteid": 2.5, "ts": t0}]
    docs += [{"moteid": 2, "ts": 5, "temperature": 30.0}]  # a number where dates are
    coll.insert_many(docs)
    t5, t10 = t0.replace(day=5), t0.replace(day=10)

    def ids(query: dict, **kw) -> list:
        cur = coll.find(query, {"moteid": 1, "ts": 1}, **kw)
        return sorted((str(d["moteid"]), str(d["ts"])) for d in cur)

    def brute(pred) -> list:
        return sorted((str(d["moteid"]), str(d["ts"])) for d in docs if pred(d))

    def is_date(v) -> bool:
        return isinstance(v, datetime)

    cases = [
        ({"moteid": 2}, lambda d: d["moteid"] == 2),
        ({"moteid": 2.0}, lambda d: d["moteid"] == 2),
        ({"moteid": "2"}, lambda d: d["moteid"] == "2"),
        (
            {"moteid": 2, "ts": {"$gte": t5, "$lt": t10}},
            lambda d: d["moteid"] == 2 and is_date(d["ts"]) and t5 <= d["ts"] < t10,
        ),
        (
            {"moteid": {"$in": [1, 11]}, "ts": {"$gt": t10}},
            lambda d: d["moteid"] in (1, 11) and is_date(d["ts"]) and d["ts"] > t10,
        ),
        (
            {"$or": [{"moteid": 1, "ts": {"$lte": t5}}, {"moteid": 3, "ts": {"$gte": t10}}]},
            lambda d: (
                (d["moteid"] == 1 and is_date(d["ts"]) and d["ts"] <= t5)
                or (d["moteid"] == 3 and is_date(d["ts"]) and d["ts"] >= t10)
            ),
        ),
        (
            {"moteid": 2, "ts": {"$gt": t5}, "temperature": {"$gt": 30}},
            lambda d: (
                d["moteid"] == 2
                and is_date(d["ts"])
                and d["ts"] > t5
                and d.get("temperature", 0) > 30
            ),
        ),
        ({"moteid": 2, "ts": {"$gte": 1}}, lambda d: d["moteid"] == 2 and d["ts"] == 5),
        ({"moteid": {"$gt": 2, "$lt": 11}}, lambda d: d["moteid"] in (2.5, 3)),
        ({"moteid": {"$lte": 2}}, lambda d: d["moteid"] in (1, 2)),
        ({"moteid": {"$gte": "2"}}, lambda d: d["moteid"] == "2"),
    ]
    before = _index_range_queries(mongo_db)
    for query, pred in cases:
        assert ids(query) == brute(pred), query
    assert _index_range_queries(mongo_db) - before == len(cases)

    # the _id index answers a range too: "after this id", in _id order, limited
    all_ids = [d["_id"] for d in coll.find({}, {"_id": 1}).sort("_id", ASCENDING)]
    after = list(coll.find({"_id": {"$gt": all_ids[10]}}).sort("_id", ASCENDING).limit(5))
    assert [d["_id"] for d in after] == all_ids[11:16]
    assert coll.count_documents({"moteid": 3, "ts": {"$lt": t5}}) == 4

    # not an index prefix (or a condition the index cannot bound): scanned as before
    before = _index_range_queries(mongo_db)
    assert ids({"temperature": {"$gt": 37}}) == brute(lambda d: d.get("temperature", 0) > 37)
    assert ids({"moteid": {"$ne": 2}, "ts": t0}) == brute(
        lambda d: d["moteid"] != 2 and d["ts"] == t0
    )
    assert ids({"moteid": {"$in": [None, 3]}}) == brute(lambda d: d["moteid"] == 3)
    assert _index_range_queries(mongo_db) == before


def test_a_non_unique_index_answers_range_queries_through_inserts_updates_and_deletes(
    mongo_db: Database, settings
) -> None:
    """A non-unique index (built over existing documents, then kept up to date) gives the
    scan's answers: equal values, arrays (MongoDB matches their elements), updates that
    move a document, deletes."""
    from iot_fed.services.mongodb import MongoService

    if settings.mongodb_server != "mongo-java-server" or not MongoService(settings).is_local:
        pytest.skip("the project's mongo-java-server wrapper only")
    coll = mongo_db.anomalies
    t0 = datetime(2004, 3, 1)
    coll.insert_many(
        [{"_id": f"a{i}", "moteid": i % 3, "ts": t0.replace(day=1 + i)} for i in range(12)]
    )
    coll.create_index([("moteid", ASCENDING), ("ts", ASCENDING)])  # built over the 12
    coll.insert_many(
        [
            {"_id": "dup", "moteid": 1, "ts": t0.replace(day=2)},  # same values as a1
            {"_id": "arr", "moteid": [1, 7], "ts": t0.replace(day=3)},
            {"_id": "sub", "moteid": {"x": 1}, "ts": t0},
        ]
    )
    coll.update_one({"_id": "a4"}, {"$set": {"moteid": 2}})  # 1 -> 2
    coll.delete_one({"_id": "a7"})
    coll.update_one({"_id": "a10"}, {"$set": {"other": 1}})  # indexed values unchanged

    def found(query: dict) -> list:
        return sorted(d["_id"] for d in coll.find(query, {"_id": 1}))

    docs = {d["_id"]: d for d in coll.find({})}  # the scan: no index field in the query
    before = _index_range_queries(mongo_db)
    assert found({"moteid": 1}) == sorted(
        i for i, d in docs.items() if d["moteid"] == 1 or d["moteid"] == [1, 7]
    )
    assert found({"moteid": 1}) == ["a1", "a10", "arr", "dup"]  # a4 moved, a7 deleted
    t3 = t0.replace(day=3)
    assert found({"moteid": {"$in": [1, 2]}, "ts": {"$lte": t3}}) == ["a1", "a2", "arr", "dup"]
    assert found({"moteid": 2, "ts": {"$gt": t3}}) == ["a11", "a4", "a5", "a8"]
    assert found({"moteid": 7}) == ["arr"]
    assert _index_range_queries(mongo_db) - before == 5
    coll.drop_index("moteid_1_ts_1")
    assert found({"moteid": 2, "ts": {"$gt": t3}}) == ["a11", "a4", "a5", "a8"]  # scanned
    assert _index_range_queries(mongo_db) - before == 5


def test_the_index_that_bounds_a_query_most_tightly_answers_it(
    mongo_db: Database, settings
) -> None:
    """(moteid, epoch) unique and (moteid, ts) non-unique: a per-mote time range is read
    from the second (the range's keys), not from all of the mote's keys in the first."""
    from iot_fed.services.mongodb import MongoService

    if settings.mongodb_server != "mongo-java-server" or not MongoService(settings).is_local:
        pytest.skip("the project's mongo-java-server wrapper only")
    coll = mongo_db.sensor_readings
    coll.create_index([("moteid", ASCENDING), ("epoch", ASCENDING)], unique=True)
    coll.create_index([("moteid", ASCENDING), ("ts", ASCENDING)])
    t0 = datetime(2004, 3, 1)
    coll.insert_many(
        [
            {"moteid": 1, "epoch": e, "ts": t0.replace(minute=e // 60, second=e % 60)}
            for e in range(2000)
        ]
    )
    lo, hi = t0.replace(minute=10, second=0), t0.replace(minute=10, second=3)
    got = list(coll.find({"moteid": 1, "ts": {"$gte": lo, "$lt": hi}}, {"epoch": 1}))
    assert sorted(d["epoch"] for d in got) == [600, 601, 602]
    assert mongo_db.command("iotFedIndexStats")["lastCandidates"] == 3
    assert len(list(coll.find({"moteid": 1, "epoch": {"$gte": 1990}}))) == 10
    assert mongo_db.command("iotFedIndexStats")["lastCandidates"] == 10


def test_a_long_read_blocks_neither_writes_to_its_collection_nor_other_clients(
    mongo_db: Database, settings
) -> None:
    """A find scans without the collection's lock, and each connection has an event-loop
    thread of its own: while one client's scan runs, other clients' inserts into the same
    collection (and another) are answered before it ends. Before, they waited for it.

    Counted, not timed: each writer sends one insert at a time, so behind a scan that
    blocks it a writer completes at most one insert sent during the scan; here each
    completes several."""
    import threading
    import time

    from pymongo import MongoClient

    from iot_fed.services.mongodb import MongoService

    if settings.mongodb_server != "mongo-java-server" or not MongoService(settings).is_local:
        pytest.skip("the project's mongo-java-server wrapper only")
    coll = mongo_db.scanned
    coll.insert_many([{"i": i, "s": f"reading-{i:07d}-" + "x" * 40} for i in range(60_000)])

    def scan_of(clauses: int) -> dict:  # no index on i, no match: a scan
        return {"$or": [{"i": -k - 1} for k in range(clauses)]}

    def timed(query: dict) -> float:
        t0 = time.perf_counter()
        assert list(coll.find(query)) == []
        return time.perf_counter() - t0

    # a scan of a second or more leaves an unblocked writer time for dozens of inserts
    clauses = 60
    timed(scan_of(clauses))
    alone = timed(scan_of(clauses))
    for _ in range(3):
        if alone >= 1.5:
            break
        clauses = int(clauses * 2.0 / max(alone, 0.05)) + 1
        alone = timed(scan_of(clauses))
    scan = scan_of(clauses)
    reading, read_done = threading.Event(), threading.Event()
    during: dict[int, int] = {}

    def long_read(client: MongoClient) -> None:
        reading.set()
        list(client[mongo_db.name].scanned.find(scan))
        read_done.set()

    def writer(k: int, client: MongoClient) -> None:
        target = client[mongo_db.name]["scanned" if k % 2 else "other"]
        reading.wait()
        time.sleep(alone / 4)  # the scan has reached the server (a blocked insert waits)
        n = 0
        while not read_done.is_set():
            target.insert_one({"i": 10**6 + 1000 * k + n})
            n += 1
            if not read_done.is_set():
                during[k] = during.get(k, 0) + 1

    clients = [MongoClient(settings.mongodb_uri, maxPoolSize=1) for _ in range(7)]
    try:
        for c in clients:  # each client's one connection, open before the scan starts
            c[mongo_db.name].command("ping")
        threads = [threading.Thread(target=long_read, args=(clients[0],))] + [
            threading.Thread(target=writer, args=(k, c)) for k, c in enumerate(clients[1:])
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        for c in clients:
            c.close()
    # a blocked writer gets at most 1 or 2 (its first insert returns as the scan ends)
    assert all(during.get(k, 0) >= 3 for k in range(6)), (during, alone)
    written = sum(1 for _ in coll.find({"i": {"$gte": 10**6}}, {"_id": 1}))
    assert written >= sum(during[k] for k in range(1, 6, 2))
