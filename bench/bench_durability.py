"""Durability benchmark: what survives kill -9, of MongoDB writes and of a Kafka producer.

1. ``kill9``: acknowledged writes on mongo-java-server (H2 MVStore). For each server mode
   (``-Dmvstore.durability`` x ``-Dmvstore.fsync``) and write concern, a fresh store file
   gets ``--docs`` readings in bulk inserts of ``--batch``; right after the last
   acknowledgement the server is killed with SIGKILL and restarted on the same file; the
   documents left are counted. Throughput (docs/s) is measured on the same run, so the
   modes compare as ratios.
2. ``broker-outage``: ``iot-fed stream --limit N --rate R`` into a fresh topic; the local
   broker (the PID the service manager tracks) is killed with SIGKILL once some readings
   are in, kept down ``--outage`` seconds and restarted; the topic is counted (exact: 0
   lost, 0 duplicated). Needs the local services up (``iot-fed services up``).

Prints tables; writes ``bench/results/durability.json`` (sections ``kill9``,
``broker_outage``).

    .venv/bin/python bench/bench_durability.py [--parts kill9,broker-outage] [--quick]
        [--docs 20000] [--batch 5000] [--outage 60] [--n 3000] [--rate 100]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
from common import parts_parser, print_table, run_parts
from confluent_kafka import Consumer, TopicPartition
from pymongo import MongoClient
from pymongo.write_concern import WriteConcern

from iot_fed.config import get_settings
from iot_fed.services import artifacts, manager
from iot_fed.services.process import ProcessRecord, is_alive, port_open
from iot_fed.stream.admin import delete_topics, ensure_topics, partitions_of

# (label, durability, fsync, write concern)
CASES = [
    ("background, j=true (before)", "background", False, WriteConcern(w=1, j=True)),
    ("concern, w=1 (no j)", "concern", False, WriteConcern(w=1)),
    ("concern, j=true", "concern", False, WriteConcern(w=1, j=True)),
    ("concern+fsync, j=true", "concern", True, WriteConcern(w=1, j=True)),
    ("always, w=1", "always", False, WriteConcern(w=1)),
]
# the quick run: the durable default against plain w=1
QUICK_CASES = ("concern, w=1 (no j)", "concern, j=true")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(store: Path, port: int, durability: str, fsync: bool) -> subprocess.Popen:
    state = get_settings().state_dir.resolve()
    artifacts.install_mongo_java_server(state)
    cmd = [
        "java",
        "-Xmx1g",
        "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
        f"-Dmvstore.durability={durability}",
        f"-Dmvstore.fsync={'true' if fsync else 'false'}",
        "-cp",
        artifacts.mongo_java_server_classpath(state),
        artifacts.MONGO_JAVA_SERVER_MAIN,
        "127.0.0.1",
        str(port),
        str(store),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not port_open("127.0.0.1", port):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"server did not start: {cmd}")
        time.sleep(0.1)
    return proc


def docs(start_i: int, n: int) -> list[dict]:
    return [
        {
            "moteid": i % 54 + 1,
            "epoch": i // 54,
            "temperature": 20.0 + i % 7,
            "humidity": 40.0,
            "light": 100.0,
            "voltage": 2.7,
            "label": None,
        }
        for i in range(start_i, start_i + n)
    ]


def run_case(durability: str, fsync: bool, wc: WriteConcern, n: int, batch: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench_dur_") as tmp:
        store = Path(tmp) / "data.mv"
        port = free_port()
        uri = f"mongodb://127.0.0.1:{port}/"
        proc = start(store, port, durability, fsync)
        try:  # the server is stopped however the case ends
            client: MongoClient = MongoClient(uri, serverSelectionTimeoutMS=10_000)
            coll = client["bench"].get_collection("readings", write_concern=wc)
            coll.create_index([("moteid", 1), ("epoch", 1)], unique=True)
            payload = [docs(i, batch) for i in range(0, n, batch)]
            warm = client["bench"].get_collection("warmup", write_concern=wc)
            warm.create_index([("moteid", 1), ("epoch", 1)], unique=True)
            for chunk in payload:  # JIT warm-up on the same workload (not timed)
                warm.insert_many([dict(d) for d in chunk], ordered=False)
            t0 = time.perf_counter()
            acked = 0
            for chunk in payload:
                acked += len(coll.insert_many(chunk, ordered=False).inserted_ids)
            elapsed = time.perf_counter() - t0
            os.kill(proc.pid, signal.SIGKILL)  # right after the last acknowledgement
            proc.wait()
            client.close()
            proc = start(store, port, durability, fsync)
            client = MongoClient(uri, serverSelectionTimeoutMS=10_000)
            kept = client["bench"]["readings"].count_documents({})
            # what was kept reads back by index (a small w=1 run may keep nothing at all)
            assert not kept or client["bench"]["readings"].count_documents(
                {"moteid": 7, "epoch": {"$lt": 5}}
            )
            client.close()
        finally:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(30)
    return {
        "acknowledged": acked,
        "kept_after_kill9": kept,
        "lost": acked - kept,
        "docs_per_s": round(acked / elapsed),
    }


def frame(n: int, motes: int = 6) -> pd.DataFrame:
    i = np.arange(n)
    return pd.DataFrame(
        {
            "ts": pd.Timestamp("2004-03-01", tz="UTC") + pd.to_timedelta(i * 31 / motes, unit="s"),
            "epoch": i // motes,
            "moteid": i % motes + 1,
            "temperature": 20.0 + i % 5,
            "humidity": 40.0,
            "light": 100.0,
            "voltage": 2.7,
            "label": [None] * n,
        }
    )


def topic_values(settings, topic: str) -> list[bytes]:
    c = Consumer({**settings.kafka_client_config(), "group.id": "bench_faults"})
    try:
        ends = {
            p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)[1]
            for p in partitions_of(settings, topic)
        }
        c.assign([TopicPartition(topic, p, 0) for p in ends])
        out, pos, deadline = [], dict.fromkeys(ends, 0), time.monotonic() + 60
        while any(pos[p] < ends[p] for p in ends) and time.monotonic() < deadline:
            for m in c.consume(1000, 0.5):
                if m.error() is None:
                    out.append(m.value())
                    pos[m.partition()] = m.offset() + 1
        return out
    finally:
        c.close()


def broker_outage(args: argparse.Namespace) -> dict:
    """Part 2: kill -9 of the local broker during ``iot-fed stream --limit``."""
    settings = get_settings()
    topic = f"bench_faults_{uuid.uuid4().hex[:8]}"
    ensure_topics(settings, [topic])
    (kafka,) = manager.services_for(settings, ["kafka"])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "clean.parquet"
        frame(args.n).to_parquet(path, index=False)
        env = {**os.environ, "IOT_FED_KAFKA_TOPIC": topic}
        cmd = [sys.executable, "-m", "iot_fed.cli", "stream", "--path", str(path)]
        cmd += ["--limit", str(args.n), "--rate", str(args.rate)]
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        while not topic_values(settings, topic):  # the producer is up and delivering
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.5)
        rec = ProcessRecord.load(kafka.record_path)
        assert rec is not None and is_alive(rec), "the broker is not a process iot-fed started"
        os.kill(rec.pid, signal.SIGKILL)
        killed_at = time.monotonic() - t0
        time.sleep(args.outage)
        manager.up(settings, ["kafka"], timeout=180)
        back_at = time.monotonic() - t0
        stdout, stderr = proc.communicate(timeout=600)
        done_at = time.monotonic() - t0
    lines = stdout.decode().strip().splitlines()
    if not lines:
        raise SystemExit(f"iot-fed stream printed no stats:\n{stderr.decode()[-3000:]}")
    stats = json.loads(lines[-1])
    values = topic_values(settings, topic)
    delete_topics(settings, [topic])
    row = {
        "sent": args.n,
        "outage_s": args.outage,
        "killed_at_s": round(killed_at, 1),
        "broker_back_at_s": round(back_at, 1),
        "producer_done_at_s": round(done_at, 1),
        "exit_code": proc.returncode,
        "reported_delivered": stats["delivered"],
        "reported_failed": stats["failed"],
        "in_topic": len(values),
        "lost": args.n - len(set(values)),
        "duplicated": len(values) - len(set(values)),
    }
    print_table(
        "Broker outage during iot-fed stream --limit",
        ["sent", "outage s", "exit", "delivered", "failed", "in topic", "lost", "duplicated"],
        [
            [
                row[k]
                for k in (
                    "sent",
                    "outage_s",
                    "exit_code",
                    "reported_delivered",
                    "reported_failed",
                    "in_topic",
                    "lost",
                    "duplicated",
                )
            ]
        ],
    )
    return row


def kill9(args: argparse.Namespace) -> dict:
    """Part 1: acknowledged MongoDB writes left after kill -9, per server mode."""
    cases = [c for c in CASES if not args.quick or c[0] in QUICK_CASES]
    rows = []
    for batch in (args.batch,) if args.quick else (args.batch, args.small_batch):
        for label, durability, fsync, wc in cases:
            r = run_case(durability, fsync, wc, args.docs, batch)
            rows.append({"mode": label, "batch": batch, **r})
            print(json.dumps(rows[-1]), flush=True)
    keys = ("mode", "batch", "acknowledged", "kept_after_kill9", "lost", "docs_per_s")
    print_table(
        "Acknowledged writes after kill -9",
        ["mode", "batch", "acknowledged", "kept after kill -9", "lost", "docs/s"],
        [[r[k] for k in keys] for r in rows],
    )
    return {"docs": args.docs, "cpus": os.cpu_count(), "rows": rows}


PARTS = {"kill9": kill9, "broker-outage": broker_outage}


def main() -> None:
    ap = parts_parser(__doc__, PARTS, "tiny: 2,000 docs, 2 modes, one batch size, 3 s outage")
    ap.add_argument("--docs", type=int, default=20_000)
    ap.add_argument("--batch", type=int, default=5000)
    ap.add_argument("--small-batch", type=int, default=200, help="second series, small writes")
    ap.add_argument("--outage", type=float, default=60.0, help="broker down (s)")
    ap.add_argument("--n", type=int, default=3000, help="readings streamed in the outage part")
    ap.add_argument("--rate", type=float, default=100.0)
    args = ap.parse_args()
    if args.quick:
        args.docs, args.batch, args.small_batch = 2000, 1000, 200
        args.outage, args.n, args.rate = 3.0, 300, 100.0
    run_parts("durability", PARTS, args)


if __name__ == "__main__":
    main()
