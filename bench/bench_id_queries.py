"""Benchmark: a filter on ``_id`` alone vs ``_id`` plus another field, on the local server.

mongo-java-server answers a query from the ``_id`` index only when ``_id`` is its only
field (or the project's ``MongoServerMain`` range rules); anything else scans the
collection. (Measured before the server's index planner; the verdict write is measured by
``bench_verdict_write.py``.) Run
with the local services up::

    .venv/bin/python bench/bench_id_queries.py [--n 45000] [--ids 1000]

Prints a table and writes ``bench/results/id_queries.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from pymongo import MongoClient

from iot_fed.config import get_settings

RESULTS = Path(__file__).parent / "results" / "id_queries.json"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=45_000, help="documents in the collection")
    ap.add_argument("--ids", type=int, default=1000, help="ids per query")
    args = ap.parse_args()
    client: MongoClient = MongoClient(get_settings().mongodb_uri, serverSelectionTimeoutMS=5000)
    db = client["iot_fed_bench_id_queries"]
    client.drop_database(db.name)
    coll = db["p"]
    coll.insert_many([{"_id": f"id{i}", "model_version": 1, "x": i} for i in range(args.n)])
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
            ids = [f"id{i}" for i in range(k * args.ids, (k + 1) * args.ids)]
            t = time.perf_counter()
            hit = fn(ids)
            rows.append({"query": name, "ids": args.ids, "hit": hit, "s": time.perf_counter() - t})
    finally:
        client.drop_database(db.name)
    print(f"{args.n:,} documents, {args.ids:,} ids per query\n")
    print(f"{'query':<28}{'hit':>6}{'seconds':>10}")
    for r in rows:
        print(f"{r['query']:<28}{r['hit']:>6}{r['s']:>10.3f}")
    for op in ("find", "delete"):
        a, b = (
            next(r["s"] for r in rows if r["query"] == q)
            for q in (f"{op} _id $in + version", f"{op} _id $in")
        )
        print(f"{op}: _id alone is {a / b:.0f}x faster")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"n": args.n, "rows": rows}, indent=2) + "\n")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
