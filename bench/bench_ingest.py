"""Ingest benchmark: Kafka produce rate, sustained Kafka -> MongoDB ingest, the store's load.

Run with the local services up (``.venv/bin/iot-fed services up``)::

    .venv/bin/python bench/bench_ingest.py [--n 100000]

Produces N synthetic readings at full speed into a fresh topic, then ingests them
with several write strategies / chunk sizes (fresh collection each run) through the
real ingestion core (:class:`iot_fed.stream.ingest.Ingestor`), and the durable default
(write concern ``j=true``: the server commits before it answers) against plain ``w=1``
(before: acknowledged but not durable across kill -9) in the same run, round-robin
``--repeat`` times (each row is the median round). Also times the pieces
alone (decode+validate in Python, MongoDB writes of pre-decoded docs) to show where
the time goes. Prints a table and writes ``bench/results/ingest.json``.

``--baseline-uri mongodb://...`` adds every durable configuration against a second
server (e.g. one built from another checkout's ``MongoServerMain.java``) to the same
round-robin, so before and after are measured under the same load (``server`` column).
``--decoders orjson,json`` adds the durable default again with the standard library's
JSON parser in place of orjson (``decoder`` column; the decode-only rate for each too).

Two more parts measure the MongoDB server under the pipeline's other query shapes
(:mod:`store_queries`): ``concurrent-reads`` (the scorer's inserts while the reporting
refresh and training reads scan) and ``id-queries`` (``_id`` alone vs ``_id`` + a field).
Part ``group``: the ingestion consumer group (``iot-fed ingest``) with 1 and 2 members
over one topic of ``--group-n`` readings from ``--devices`` devices (readings/s from the
first landed reading to the last, members' CPU seconds per 1,000 readings).
Sections ``ingest``, ``group``, ``concurrent_reads``, ``id_queries`` (and ``index_change``: the
ingest part with ``--baseline-uri`` before the (moteid, ts) index was retired, kept as
measured).

    .venv/bin/python bench/bench_ingest.py [--parts ingest,group,concurrent-reads,id-queries]
        [--quick] [--n 100000] [--repeat 3] [--baseline-uri URI] [--decoders orjson,json]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
from common import parts_parser, run_parts
from pymongo import MongoClient
from pymongo.write_concern import WriteConcern
from store_queries import concurrent_reads, id_queries

from iot_fed.config import get_settings
from iot_fed.store import SENSOR_READINGS, init_database, insert_readings
from iot_fed.stream import messages
from iot_fed.stream.admin import delete_topics, ensure_topics
from iot_fed.stream.ingest import Ingestor
from iot_fed.stream.messages import decode_value, encode_reading
from iot_fed.stream.producer import ReplayData, replay, synthetic_readings

GOAL = 20_000
SMALL = 500  # upserts are very slow on FerretDB (no index pushdown): fewer readings


def _data(n: int) -> ReplayData:
    df = synthetic_readings(get_settings())
    return ReplayData.from_frame(df.head(n) if len(df) >= n else df)


class _StdlibJson:
    """Stands in for orjson in :mod:`iot_fed.stream.messages`: the standard parse (the
    decoder before orjson); what it refuses takes the same fallback, so same reasons."""

    JSONDecodeError = ValueError  # UnicodeDecodeError and a NaN constant's error too

    @staticmethod
    def loads(value: bytes) -> object:
        return messages._decoder.decode(value.decode("utf-8"))


@contextlib.contextmanager
def json_decoder(name: str) -> Iterator[None]:
    """Decode with ``orjson`` (the product) or ``json`` (the standard library) inside."""
    if name == "orjson":
        yield
        return
    saved, messages.orjson = messages.orjson, _StdlibJson  # type: ignore[assignment]
    try:
        yield
    finally:
        messages.orjson = saved


def bench_decode(values: list[bytes], max_bytes: int) -> float:
    t = time.perf_counter()
    for v in values:
        decode_value(v, max_bytes)
    return len(values) / (time.perf_counter() - t)


def bench_mongo_only(db, docs: list[dict], strategy: str, chunk: int) -> float:
    db.drop_collection(SENSOR_READINGS)
    docs = docs[:SMALL] if strategy == "upsert" else docs
    init_database(db)
    t = time.perf_counter()
    for i in range(0, len(docs), chunk):
        insert_readings(db, docs[i : i + chunk], strategy, validate=False)
    return len(docs) / (time.perf_counter() - t)


def bench_ingest(
    settings,
    db,
    topic: str,
    n: int,
    strategy: str,
    chunk: int,
    batch: int,
    limit: int,
    concern: str = "j=true",
    server: str = "this",
    decoder: str = "orjson",
) -> dict:
    """Ingest the first ``min(n, limit)`` messages in bounded batches (cursor mode)."""
    n = min(n, limit)
    if concern == "w=1":  # the old behaviour: acknowledged, not yet durable
        db = db.with_options(write_concern=WriteConcern(w=1, j=False))
    db.drop_collection(SENSOR_READINGS)
    with (
        json_decoder(decoder),
        Ingestor(settings, db, topic=topic, strategy=strategy, chunk_size=chunk) as ing,
    ):
        cursor: dict[int, int] = {}
        total, inserted, batches = 0, 0, 0
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        while total < n:
            res = ing.run_batch(min(batch, n - total), 120.0, cursor, commit=False)
            cursor = res.next_offsets
            total += res.n_messages
            inserted += res.n_inserted
            batches += 1
            for k, v in res.timings.items():
                timings[k] = timings.get(k, 0.0) + v
            if res.reached_end and res.n_messages == 0:
                break
        wall = time.perf_counter() - t0
    assert db[SENSOR_READINGS].estimated_document_count() == inserted
    return {
        "server": server,
        "decoder": decoder,
        "concern": concern,
        "strategy": strategy,
        "chunk": chunk,
        "batch": batch,
        "messages": total,
        "inserted": inserted,
        "batches": batches,
        "seconds": round(wall, 3),
        "rate": round(total / wall, 1),
        "share": {k: round(v / wall, 3) for k, v in sorted(timings.items())},
    }


def ingest(args: argparse.Namespace) -> dict:
    """Produce at full speed, the pieces alone, then the real ingestion path round-robin."""
    decoders = args.decoders.split(",")
    settings = get_settings()
    client: MongoClient = MongoClient(settings.mongodb_uri, serverSelectionTimeoutMS=5000)
    db = client["iot_fed_bench"]
    client.drop_database(db.name)
    dbs = {"this": db}
    if args.baseline_uri:
        base_client: MongoClient = MongoClient(args.baseline_uri, serverSelectionTimeoutMS=5000)
        dbs["baseline"] = base_client[db.name]
        base_client.drop_database(db.name)
    topic = f"bench_ingest_{uuid.uuid4().hex[:8]}"

    data = _data(args.n)
    n = len(data)
    print(f"{n} readings, topic {topic}, {settings.kafka_partitions} partitions")
    out: dict = {"n": n, "goal_rate": GOAL}
    try:
        # 1. produce at full speed (idempotent, acks=all)
        stats = replay(settings, data, topic=topic, rate=0, progress_interval_s=1e9)
        assert stats.delivered == n, stats
        out["produce"] = {"seconds": round(stats.elapsed_s, 3), "rate": round(stats.rate, 1)}
        print("produce", out["produce"], flush=True)

        # 2. pieces alone
        readings = [r for _, _, r in data.records(loop=False)]
        values = [encode_reading(r) for r in readings]
        docs = []
        for i, v in enumerate(values):
            d, _ = decode_value(v, settings.kafka_max_message_bytes)
            docs.append(d | {"kafka_partition": 0, "kafka_offset": i})
        for name in decoders:
            with json_decoder(name):
                rate = bench_decode(values, settings.kafka_max_message_bytes)
            out.setdefault("decode_rates", {})[name] = round(rate, 1)
        out["decode_rate"] = out["decode_rates"][decoders[0]]
        t = time.perf_counter()
        for r in readings:
            encode_reading(r)
        out["encode_rate"] = round(n / (time.perf_counter() - t), 1)
        out["mongo_only"] = [
            {"strategy": s, "chunk": c, "rate": round(bench_mongo_only(db, docs, s, c), 1)}
            for s, c in ([("insert", 5000)] if args.quick else [("insert", 5000), ("upsert", 5000)])
        ]

        # 3. the real ingestion path (strategy, chunk, batch, readings, concern) x server
        configs: list[tuple] = [
            ("insert", 5000, 50_000, n, "j=true"),
            ("insert", 5000, 50_000, n, "w=1"),
        ]
        if not args.quick:
            configs += [
                ("insert", 1000, 50_000, n, "j=true"),
                ("insert", 20000, 50_000, n, "j=true"),
                ("upsert", 5000, 50_000, SMALL, "j=true"),
            ]
        plan = [(c, "this", decoders[0]) for c in configs]
        if args.baseline_uri:  # the durable rows again, on the baseline server
            plan += [(c, "baseline", decoders[0]) for c in configs if c[4] == "j=true"]
        plan += [(configs[0], "this", d) for d in decoders[1:]]  # the default, other parsers
        # round-robin, so a cold server or a noisy neighbour hits every configuration alike;
        # the first round also warms the server's JIT. Each row: the median round.
        runs: list[list[dict]] = [[] for _ in plan]
        for rnd in range(args.repeat):
            for i, (c, server, dec) in enumerate(plan):
                runs[i].append(
                    bench_ingest(settings, dbs[server], topic, n, *c, server=server, decoder=dec)
                )
                print(f"round {rnd} ingest", runs[i][-1], flush=True)
        out["ingest"] = []
        for rs in runs:
            rates = sorted(r["rate"] for r in rs)
            row = dict(sorted(rs, key=lambda r: r["rate"])[len(rs) // 2])
            row["rates"] = [r["rate"] for r in rs]
            row["best_rate"] = rates[-1]
            out["ingest"].append(row)
    finally:
        delete_topics(settings, [topic])
        for d in dbs.values():
            d.client.drop_database(d.name)

    best = max(r["rate"] for r in out["ingest"] if r["server"] == "this")  # best median
    base = out["ingest"][0]["rate"]
    print(f"\nproduce (max speed): {out['produce']['rate']:>10,.0f} rec/s")
    print(f"encode only:         {out['encode_rate']:>10,.0f} rec/s")
    for name, rate in out["decode_rates"].items():
        print(f"decode+validate {name:<7}{rate:>8,.0f} rec/s")
    for m in out["mongo_only"]:
        print(f"mongo {m['strategy']:<7} chunk {m['chunk']:>6}: {m['rate']:>10,.0f} docs/s")
    print(
        f"\n{'server':<9}{'decoder':<8}{'concern':<8}{'strategy':<9}{'chunk':>7}{'batch':>8}{'msgs':>8}{'rate/s':>10}"
        f"{'x base':>8}  {'rounds':<26}shares"
    )
    for r in out["ingest"]:
        shares = " ".join(f"{k}={v:.0%}" for k, v in r["share"].items())
        print(
            f"{r['server']:<9}{r['decoder']:<8}{r['concern']:<8}{r['strategy']:<9}{r['chunk']:>7}{r['batch']:>8}{r['messages']:>8}{r['rate']:>10,.0f}"
            f"{r['rate'] / base:>8.2f}  {'/'.join(f'{x:,.0f}' for x in r['rates']):<26}{shares}"
        )
    verdict = "meets" if best >= GOAL else "below"
    print(f"\nbest median ingest {best:,.0f} readings/s: {verdict} the {GOAL:,}/s goal")
    out["best_ingest_rate"] = best
    return out


def _group_round(settings, client, topic: str, n: int, members: int, tag: str) -> dict:
    """``members`` ``iot-fed ingest`` processes (a fresh group and database) until all ``n``
    readings landed: wall time from the first landed reading, CPU of the members."""
    db_name = f"iot_fed_bench_group_{tag}"
    client.drop_database(db_name)
    env = {
        **os.environ,
        "IOT_FED_KAFKA_TOPIC": topic,
        "IOT_FED_KAFKA_CONSUMER_GROUP": f"bench_group_{tag}",
        "IOT_FED_MONGODB_DATABASE": db_name,
    }
    procs = [
        subprocess.Popen(
            [str(Path(sys.executable).with_name("iot-fed")), "ingest", "--idle-exit", "3"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(members)
    ]
    coll = client[db_name][SENSOR_READINGS]
    t_first = None
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        landed = coll.estimated_document_count()
        if landed and t_first is None:
            t_first = time.monotonic()
        if landed >= n:
            break
        time.sleep(0.05)
    wall = time.monotonic() - (t_first or time.monotonic())
    cpu = 0.0
    for p in procs:  # rusage of each member (it exits after 3 idle seconds)
        _, _, usage = os.wait4(p.pid, 0)
        cpu += usage.ru_utime + usage.ru_stime
    landed = coll.count_documents({})
    client.drop_database(db_name)
    return {
        "members": members,
        "landed": landed,
        "seconds": round(wall, 3),
        "rate": round(landed / wall, 1) if wall else None,
        "cpu_s_per_1000": round(1000 * cpu / max(landed, 1), 4),
    }


def group(args: argparse.Namespace) -> dict:
    """The ingestion consumer group: 1 and 2 members over one topic of readings from many
    devices, round-robin, each round a fresh group and database."""
    settings = get_settings()
    client: MongoClient = MongoClient(settings.mongodb_uri, serverSelectionTimeoutMS=5000)
    topic = f"bench_group_{uuid.uuid4().hex[:8]}"
    ensure_topics(settings, [topic], partitions=args.group_partitions)
    df = synthetic_readings(get_settings())
    df = df.head(args.group_n).copy()
    df["moteid"] = (df.index % args.devices) + 1  # many devices, each with its own series
    df["epoch"] = df.index // args.devices
    data = ReplayData.from_frame(df)
    n = len(data)
    stats = replay(settings, data, topic=topic, rate=0, progress_interval_s=1e9)
    assert stats.delivered == n, stats
    print(f"{n} readings of {args.devices} devices in {topic} ({args.group_partitions} partitions)")
    runs: dict[int, list[dict]] = {m: [] for m in args.members}
    try:
        for rnd in range(args.repeat):
            for m in args.members:
                r = _group_round(settings, client, topic, n, m, f"{rnd}_{m}")
                assert r["landed"] == n, r
                runs[m].append(r)
                print(f"round {rnd} members {m}", r, flush=True)
    finally:
        delete_topics(settings, [topic])
    rows = []
    for m, rs in runs.items():
        rows.append(
            {
                "members": m,
                "rate": statistics.median(r["rate"] for r in rs),
                "rates": [r["rate"] for r in rs],
                "cpu_s_per_1000": statistics.median(r["cpu_s_per_1000"] for r in rs),
            }
        )
    base = rows[0]["rate"]
    print(f"\n{'members':>8}{'readings/s':>12}{'ratio':>7}{'CPU s/1000':>12}  rounds")
    for r in rows:
        rounds = "/".join(f"{x:,.0f}" for x in r["rates"])
        ratio = r["rate"] / base
        print(
            f"{r['members']:>8}{r['rate']:>12,.0f}{ratio:>7.2f}{r['cpu_s_per_1000']:>12}  {rounds}"
        )
    return {"n": n, "devices": args.devices, "partitions": args.group_partitions, "rows": rows}


PARTS = {
    "ingest": ingest,
    "group": group,
    "concurrent-reads": lambda a: concurrent_reads(
        get_settings().mongodb_uri, a.docs, a.readers, batch=1000, seconds=a.seconds
    ),
    "id-queries": lambda a: id_queries(get_settings().mongodb_uri, a.id_docs, n_ids=1000),
}


def main() -> int:
    ap = parts_parser(__doc__, PARTS, "tiny: fewer readings, configurations")
    ap.add_argument("--n", type=int, default=100_000, help="readings ingested")
    ap.add_argument("--repeat", type=int, default=3, help="rounds over all configurations")
    ap.add_argument("--baseline-uri", help="a second MongoDB server, run in the same rounds")
    ap.add_argument("--decoders", default="orjson", help="e.g. orjson,json")
    ap.add_argument("--docs", type=int, default=200_000, help="concurrent-reads: docs/collection")
    ap.add_argument("--readers", type=int, default=3, help="concurrent-reads: scanning clients")
    ap.add_argument("--seconds", type=float, default=40, help="concurrent-reads: per phase")
    ap.add_argument("--id-docs", type=int, default=45_000, help="id-queries: documents")
    ap.add_argument("--group-n", type=int, default=100_000, help="group: readings")
    ap.add_argument("--devices", type=int, default=10_000, help="group: devices")
    ap.add_argument("--group-partitions", type=int, default=6, help="group: topic partitions")
    ap.add_argument(
        "--members",
        type=lambda v: [int(x) for x in v.split(",")],
        default=[1, 2],
        help="group: ingesters per configuration, e.g. 1,2",
    )
    args = ap.parse_args()
    if args.quick:
        args.n, args.repeat, args.docs, args.seconds, args.id_docs = 5000, 1, 5000, 2, 5000
        args.group_n, args.devices = 5000, 500
    run_parts("ingest", PARTS, args)
    return 0


if __name__ == "__main__":
    pd.options.mode.copy_on_write = True
    raise SystemExit(main())
