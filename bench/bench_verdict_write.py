"""Benchmark: the verdict write (``upsert_predictions``) against the one it replaced.

``standard`` is :func:`iot_fed.store.predictions.upsert_predictions`: one unordered
``bulk_write`` of version-guarded ``ReplaceOne(upsert=True)``, plus an ``_id`` read-back of
the duplicates (the concurrent-insert check). ``legacy`` is the write it replaced, kept
here as the baseline: ``insert_many`` -> ``find`` of the duplicates by ``_id`` ->
``delete_many`` -> ``insert_many`` (not atomic). Each runs, on a collection already
holding ``--n`` other verdicts, four writes of ``--batch`` verdicts: new readings
(``insert``), the same readings by a newer model version (``replace``), the same again
(``keep``: a replayed batch) and an older version (``stale``). ``--race`` rounds then let
two threads write versions 1 and 2 of the same new readings at once: the stored versions
must all be 2 at the end. Run with the local services up::

    .venv/bin/python bench/bench_verdict_write.py [--n 50000] [--batch 1000] [--repeat 3]

Prints a table and writes ``bench/results/verdict_write.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pymongo import MongoClient, ReplaceOne
from pymongo.database import Database

from iot_fed.config import get_settings
from iot_fed.store import init_database
from iot_fed.store.collections import PREDICTIONS
from iot_fed.store.durability import durable
from iot_fed.store.predictions import insert_new, prediction_id, upsert_predictions

RESULTS = Path(__file__).parent / "results" / "verdict_write.json"
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
Write = Callable[[Database, Sequence[dict[str, Any]]], Any]


def legacy_write(db: Database, docs: Sequence[dict[str, Any]]) -> None:
    """The replaced write: insert, find the duplicates by _id, delete the older, insert."""
    coll = durable(db, PREDICTIONS)
    batch = [{**d, "_id": prediction_id(d["moteid"], d["ts"])} for d in docs]
    dups = insert_new(coll, batch)
    part = [batch[i] for i in dups]
    if not part:
        return
    stored = {d["_id"]: d for d in coll.find({"_id": {"$in": [d["_id"] for d in part]}})}
    replace = [d for d in part if int(stored[d["_id"]]["model_version"]) < d["model_version"]]
    if replace:
        coll.delete_many({"_id": {"$in": [d["_id"] for d in replace]}})
        insert_new(coll, replace)


def standard_write(db: Database, docs: Sequence[dict[str, Any]]) -> None:
    upsert_predictions(db, docs, validate=False)


def insert_then_replace(db: Database, docs: Sequence[dict[str, Any]]) -> None:
    """An alternative: insert_many, then version-guarded ReplaceOne (no upsert) of the
    duplicates: no concurrent-insert race to check, two round trips for replacements."""
    coll = durable(db, PREDICTIONS)
    batch = [{**d, "_id": prediction_id(d["moteid"], d["ts"])} for d in docs]
    dups = insert_new(coll, batch)
    if dups:
        guard = lambda d: {"_id": d["_id"], "model_version": {"$lt": d["model_version"]}}  # noqa: E731
        coll.bulk_write([ReplaceOne(guard(batch[i]), batch[i]) for i in dups], ordered=False)


VARIANTS: dict[str, Write] = {
    "legacy": legacy_write,
    "standard": standard_write,
    "ins+repl": insert_then_replace,
}


def verdicts(moteid: int, n: int, version: int) -> list[dict[str, Any]]:
    return [
        {
            "moteid": moteid,
            "ts": T0 + dt.timedelta(seconds=31 * i),
            "epoch": i,
            "score": 0.1 * version,
            "threshold": 1.0,
            "is_anomaly": False,
            "model_version": version,
            "channel_errors": [0.1, 0.2, 0.3, 0.4],
            "reason": None,
            "source": "bench",
        }
        for i in range(n)
    ]


def prefill(db: Database, n: int) -> None:
    coll = db[PREDICTIONS]
    for k in range(0, n, 10_000):
        docs = verdicts(10_000 + k // 10_000, min(10_000, n - k), 1)
        coll.insert_many([{**d, "_id": prediction_id(d["moteid"], d["ts"])} for d in docs])


def timed(fn: Callable[[], Any]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def scenarios(db: Database, write: Write, moteid: int, batch: int) -> dict[str, float]:
    v1, v2 = verdicts(moteid, batch, 1), verdicts(moteid, batch, 2)
    return {
        "insert": timed(lambda: write(db, v1)),
        "replace": timed(lambda: write(db, v2)),
        "keep": timed(lambda: write(db, v2)),
        "stale": timed(lambda: write(db, v1)),
    }


def race(db: Database, write: Write, moteid: int, batch: int) -> int:
    """Versions 1 and 2 of the same new readings written at once; how many stay at 1."""
    docs = {v: verdicts(moteid, batch, v) for v in (1, 2)}
    start = threading.Barrier(2)

    def run(v: int) -> None:
        start.wait()
        for i in range(0, batch, 50):  # small bulks: many chances to interleave
            write(db, docs[v][i : i + 50])

    threads = [threading.Thread(target=run, args=(v,)) for v in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return db[PREDICTIONS].count_documents({"moteid": moteid, "model_version": 1})


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=50_000, help="other verdicts already stored")
    ap.add_argument("--batch", type=int, default=1000, help="verdicts per write")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each variant (median)")
    ap.add_argument("--race", type=int, default=5, help="rounds of the concurrent-insert race")
    args = ap.parse_args()
    client: MongoClient = MongoClient(get_settings().mongodb_uri, serverSelectionTimeoutMS=5000)
    db = client["iot_fed_bench_verdict_write"]
    client.drop_database(db.name)
    rows: list[dict[str, Any]] = []
    try:
        init_database(db)
        prefill(db, args.n)
        mote = 1
        for _ in range(args.repeat):
            for name, write in VARIANTS.items():
                rows.append({"variant": name, **scenarios(db, write, mote, args.batch)})
                mote += 1
        lost = {
            name: [race(db, write, 1000 + 100 * k + j, args.batch) for j in range(args.race)]
            for k, (name, write) in enumerate(VARIANTS.items())
        }
    finally:
        client.drop_database(db.name)
    cases = ("insert", "replace", "keep", "stale")
    summary = {
        name: {c: statistics.median(r[c] for r in rows if r["variant"] == name) for c in cases}
        for name in VARIANTS
    }
    print(f"{args.n:,} verdicts stored, {args.batch:,} per write, median of {args.repeat}\n")
    print(f"{'variant':<10}" + "".join(f"{c:>10}" for c in cases) + f"{'race lost':>12}")
    for name, s in summary.items():
        print(f"{name:<10}" + "".join(f"{s[c]:>10.3f}" for c in cases) + f"{sum(lost[name]):>12}")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {"args": vars(args), "seconds": summary, "runs": rows, "race_lost_v1": lost}, indent=1
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
