"""Benchmark idempotent sensor_readings write strategies on the configured MongoDB server.

Usage: .venv/bin/python bench/store_ingest.py [--n 20000] [--upsert-n 500] [--batch 5000]
       [--json bench/results/store_ingest.json]
Prints readings/s for the insert (insert_many ordered=False) and upsert
(UpdateOne $setOnInsert, upsert=True) strategies on new, duplicate and half-new batches,
and the cost of the Python schema check alone. On FerretDB v1 (SQLite) every upsert
filter is a full collection scan, so upsert is measured on fewer readings (--upsert-n).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
import uuid

from iot_fed.config import get_settings
from iot_fed.store import connect, init_database, upsert_readings, validator


def make_docs(n: int, start: int = 0) -> list[dict]:
    t0 = dt.datetime(2004, 2, 28, tzinfo=dt.UTC)
    return [
        {
            "ts": t0 + dt.timedelta(seconds=31 * (i // 54)),
            "epoch": i // 54,
            "moteid": i % 54 + 1,
            "temperature": 20.0 + (i % 7) * 0.1,
            "humidity": 40.0,
            "light": 100.0,
            "voltage": 2.6,
            "label": None,
        }
        for i in range(start, start + n)
    ]


def run(db, docs: list[dict], strategy: str, batch: int) -> tuple[float, int, int]:
    t = time.perf_counter()
    ins = dup = 0
    for i in range(0, len(docs), batch):
        a, b = upsert_readings(db, docs[i : i + batch], strategy)
        ins, dup = ins + a, dup + b
    return time.perf_counter() - t, ins, dup


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--upsert-n", type=int, default=200)
    ap.add_argument("--batch", type=int, default=5_000)
    ap.add_argument("--json")
    args = ap.parse_args()
    s = get_settings()
    db0 = connect(s.mongodb_uri, "bench_" + uuid.uuid4().hex[:8], s.mongodb_timeout_s)
    client = db0.client
    docs = make_docs(args.n)
    t = time.perf_counter()
    validator("sensor_readings").validate_many(docs)
    results = {
        "n": args.n,
        "batch": args.batch,
        "validate_per_s": round(args.n / (time.perf_counter() - t)),
    }
    print(f"python schema check: {results['validate_per_s']:,} docs/s")
    for strategy, n in (("insert", args.n), ("upsert", args.upsert_n)):
        db = client["bench_" + uuid.uuid4().hex[:8]]
        init_database(db)
        results[f"{strategy}_n"] = n
        for case, batch_docs in (
            ("new", docs[:n]),
            ("all_duplicates", docs[:n]),
            ("half_new", make_docs(n, start=n // 2)),
        ):
            secs, ins, dup = run(db, batch_docs, strategy, args.batch)
            rate = round(len(batch_docs) / secs)
            results[f"{strategy}_{case}"] = {"per_s": rate, "inserted": ins, "duplicates": dup}
            print(f"{strategy:6s} {case:15s} {rate:>8,} readings/s  (inserted {ins}, dup {dup})")
            if args.json:  # after every case: a slow run still leaves its numbers
                with open(args.json, "w") as f:
                    json.dump(results, f, indent=2)
        client.drop_database(db.name)
    client.drop_database(db0.name)


if __name__ == "__main__":
    main()
