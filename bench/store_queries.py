"""The MongoDB server under the pipeline's query shapes: parts of ``bench_ingest.py``.

``id_queries``: a filter on ``_id`` alone vs ``_id`` plus another field. Upstream
mongo-java-server answered a query from the ``_id`` index only when ``_id`` was its only
field, so ``upsert_predictions`` deletes and looks up by ``_id`` alone; this times both
shapes side by side on the server in use (reported: seconds with the second field / alone).

``concurrent_reads``: the scorer's bulk inserts while other clients scan. The live scorer
writes ~1,000 predictions a micro-batch while the reporting refresh and the training reads
scan the same collections (per-mote ``$or`` of time ranges). mongo-java-server held a
collection's lock for a whole find, so every insert into it waited for the scan;
``MongoServerMain`` reads without it and gives each connection an event-loop thread of its
own. One writer's ``insert_many`` of ``batch`` documents every 0.5 s, alone and then with
``readers`` clients scanning (one run: compare the two phases as a ratio). One run on the
2-core machine (200k documents, 3 readers): p99 of an insert with the scans 841 ms on this
server against 8,027 ms on the server with the locking reads.
"""

from __future__ import annotations

import datetime as dt
import itertools
import threading
import time
from typing import Any

import numpy as np
from common import print_table
from pymongo import ASCENDING, MongoClient

DB = "iot_fed_bench_mongo_reads"
MOTES = 54
T0 = dt.datetime(2004, 3, 1, tzinfo=dt.UTC)


def load(client: MongoClient, n: int) -> None:
    """Two collections of ``n`` reading-like documents, (moteid, ts) unique."""
    client.drop_database(DB)
    for name in ("readings", "predictions"):
        coll = client[DB][name]
        coll.create_index([("moteid", ASCENDING), ("ts", ASCENDING)], unique=True)
        docs = [
            {
                "moteid": i % MOTES + 1,
                "ts": T0 + dt.timedelta(seconds=31 * (i // MOTES)),
                "epoch": i // MOTES,
                "temperature": 20.0 + i % 7,
                "score": 0.1 * (i % 13),
                "channel_errors": [0.1, 0.2, 0.3, 0.4],
                "source": "bench",
            }
            for i in range(n)
        ]
        for k in range(0, n, 5000):
            coll.insert_many(docs[k : k + 5000])


def reader(uri: str, k: int, stop: threading.Event, scans: list[float]) -> None:
    """Per-mote time ranges over 30 h of readings, like the reporting refresh."""
    db = MongoClient(uri)[DB]
    while not stop.is_set():
        lo = T0 + dt.timedelta(hours=(7 * k + len(scans)) % 40)
        hi = lo + dt.timedelta(hours=30)
        query = {"$or": [{"moteid": m, "ts": {"$gte": lo, "$lt": hi}} for m in range(1, MOTES + 1)]}
        t = time.perf_counter()
        list(db["readings" if k % 2 else "predictions"].find(query))
        scans.append(time.perf_counter() - t)


_DAYS = itertools.count(3650)  # each insert's day, after every loaded reading: no duplicate


def writer(uri: str, batch: int, stop: threading.Event, took: list[float]) -> None:
    db = MongoClient(uri)[DB]
    while not stop.is_set():
        base = T0 + dt.timedelta(days=next(_DAYS))
        docs = [
            {"moteid": 1000 + j % 10, "ts": base + dt.timedelta(seconds=j), "score": 1.0}
            for j in range(batch)
        ]
        t = time.perf_counter()
        db.predictions.insert_many(docs)
        took.append(time.perf_counter() - t)
        time.sleep(0.5)


def phase(uri: str, readers: int, batch: int, seconds: float) -> dict[str, Any]:
    stop = threading.Event()
    took: list[float] = []
    scans: list[float] = []
    threads = [threading.Thread(target=writer, args=(uri, batch, stop, took))]
    threads += [threading.Thread(target=reader, args=(uri, k, stop, scans)) for k in range(readers)]
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    a = np.array(took[1:]) * 1000  # the first insert warms the connection
    return {
        "readers": readers,
        "inserts": len(a),
        "insert_p50_ms": round(float(np.percentile(a, 50)), 1),
        "insert_p99_ms": round(float(np.percentile(a, 99)), 1),
        "insert_max_ms": round(float(a.max()), 1),
        "scans": len(scans),
        "scan_median_s": round(float(np.median(scans)), 2) if scans else None,
    }


def concurrent_reads(uri: str, docs: int, readers: int, batch: int, seconds: float) -> dict:
    """Insert latency alone, then with ``readers`` clients scanning (after a warm-up)."""
    client: MongoClient = MongoClient(uri, serverSelectionTimeoutMS=5000)
    load(client, docs)
    phase(uri, readers, batch, min(10.0, seconds))  # warm the server's page cache and its JIT
    rows = [phase(uri, r, batch, seconds) for r in (0, readers)]
    client.drop_database(DB)
    ratio = rows[1]["insert_p99_ms"] / max(rows[0]["insert_p99_ms"], 1e-9)
    keys = ("readers", "inserts", "insert_p50_ms", "insert_p99_ms", "insert_max_ms", "scans")
    print_table(
        f"Inserts of {batch} while clients scan ({docs:,} docs a collection); "
        f"p99 with scans / alone: {ratio:.1f}x",
        [*keys, "scan_median_s"],
        [[r[k] for k in (*keys, "scan_median_s")] for r in rows],
    )
    args = {"docs": docs, "readers": readers, "batch": batch, "seconds": seconds}
    return {"args": args, "phases": rows, "p99_ratio": ratio}


def id_queries(uri: str, n: int, n_ids: int) -> dict:
    """find / delete by ``_id $in`` alone and with a second field, ``n_ids`` ids each."""
    if n < 4 * n_ids:  # each of the four queries takes ids of its own
        raise SystemExit(f"id-queries needs at least {4 * n_ids} documents, got {n}")
    client: MongoClient = MongoClient(uri, serverSelectionTimeoutMS=5000)
    db = client["iot_fed_bench_id_queries"]
    client.drop_database(db.name)
    coll = db["p"]
    coll.insert_many([{"_id": f"id{i}", "model_version": 1, "x": i} for i in range(n)])
    guard = {"model_version": {"$lte": 2}}
    cases = {
        "find _id $in": lambda ids: len(list(coll.find({"_id": {"$in": ids}}))),
        "find _id $in + version": lambda ids: len(list(coll.find({"_id": {"$in": ids}, **guard}))),
        "delete _id $in": lambda ids: coll.delete_many({"_id": {"$in": ids}}).deleted_count,
        "delete _id $in + version": lambda ids: (
            coll.delete_many({"_id": {"$in": ids}, **guard}).deleted_count
        ),
    }
    rows = []
    try:
        for k, (name, fn) in enumerate(cases.items()):
            ids = [f"id{i}" for i in range(k * n_ids, (k + 1) * n_ids)]
            t = time.perf_counter()
            hit = fn(ids)
            rows.append({"query": name, "ids": n_ids, "hit": hit, "s": time.perf_counter() - t})
    finally:
        client.drop_database(db.name)
    ratio_with_field = {}
    for op in ("find", "delete"):
        a, b = (
            next(r["s"] for r in rows if r["query"] == q)
            for q in (f"{op} _id $in + version", f"{op} _id $in")
        )
        ratio_with_field[op] = a / b
    print_table(
        f"_id queries: {n:,} documents, {n_ids:,} ids per query; with a second field / "
        "_id alone: " + ", ".join(f"{k} {v:.2f}x" for k, v in ratio_with_field.items()),
        ["query", "hit", "seconds"],
        [[r["query"], r["hit"], r["s"]] for r in rows],
    )
    return {"n": n, "rows": rows, "ratio_with_field": ratio_with_field}
