"""Benchmark: the scorer's bulk inserts while other clients scan, on the local server.

The live scorer writes ~1,000 predictions a micro-batch while the reporting refresh and
the training reads scan the same collections (per-mote ``$or`` of time ranges, 0.6-3 s
each in a running pipeline). mongo-java-server held a collection's lock for a whole find,
so every insert into it waited for the scan; ``MongoServerMain`` reads without it and
gives each connection an event-loop thread of its own. This measures one writer's
``insert_many`` of ``--batch`` documents every 0.5 s, alone and then with ``--readers``
clients scanning (one run: compare the two phases as a ratio). Run with the local
services up::

    .venv/bin/python bench/bench_mongo_reads.py [--docs 200000] [--readers 3] [--seconds 40]

Prints a table and writes ``bench/results/mongo_reads.json``. One run on the 2-core
machine (200k documents, 3 readers, 40 s): p50 / p99 of an insert with the scans 134 /
841 ms on this server against 161 / 8,027 ms on the server with the locking reads.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from pymongo import ASCENDING, MongoClient

from iot_fed.config import get_settings

RESULTS = Path(__file__).parent / "results" / "mongo_reads.json"
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=200_000, help="documents per collection")
    ap.add_argument("--readers", type=int, default=3)
    ap.add_argument("--batch", type=int, default=1000, help="documents per insert_many")
    ap.add_argument("--seconds", type=float, default=40)
    args = ap.parse_args()
    uri = get_settings().mongodb_uri
    client: MongoClient = MongoClient(uri, serverSelectionTimeoutMS=5000)
    load(client, args.docs)
    phase(uri, args.readers, args.batch, 10)  # warm the server's page cache and its JIT
    rows = [phase(uri, r, args.batch, args.seconds) for r in (0, args.readers)]
    client.drop_database(DB)
    ratio = rows[1]["insert_p99_ms"] / max(rows[0]["insert_p99_ms"], 1e-9)
    print("readers | inserts | insert p50 / p99 / max ms | scans | scan median s")
    for r in rows:
        print(
            f"{r['readers']} | {r['inserts']} | {r['insert_p50_ms']} / {r['insert_p99_ms']} / "
            f"{r['insert_max_ms']} | {r['scans']} | {r['scan_median_s']}"
        )
    print(f"insert p99 with scans / alone: {ratio:.1f}x")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"args": vars(args), "phases": rows, "p99_ratio": ratio}))
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
