"""Stream scale benchmark: many devices reporting once a second, end to end.

Not a test. With the local services up (``iot-fed services up``), each configuration gets
a fresh topic, database (a small promoted model) and checkpoint; then:

- ``--devices`` devices send one reading a second each (paced, one batch per second,
  the Kafka timestamp is the append time) for ``--seconds``;
- ``iot-fed ingest`` members (Kafka -> ``sensor_readings``) and the streaming scorer
  (``iot-fed spark-stream``: Kafka -> ``predictions``) run as the product runs them;
- after the producer stops, both are waited for until every reading is landed and scored
  (or ``--drain-s`` passes: the backlog left is reported).

Reported per configuration (``INGESTERSxPARTITIONS``: ingest members x the scorer's state
partitions): readings/s produced, landed and scored (first to last), append -> prediction
p50/p99 (``scored_at - kafka_ts`` of every prediction), and each stage's CPU seconds per
1,000 readings (producer, ingesters, scorer: driver + JVM + Python workers, the MongoDB
server, the Kafka broker). From those costs, a table extrapolates the cores each stage
needs at 100,000 devices (100,000 readings/s).

    .venv/bin/python bench/bench_stream_scale.py [--devices 10000] [--seconds 120]
        [--configs 1x1,2x1,1x2,1x4] [--quick]

Writes ``bench/results/stream_scale.json`` (sections ``configs``, ``extrapolation``).
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from bench_scorer import promoted_bundle
from common import print_table, tree_cpu_s, write_results
from confluent_kafka import Producer
from pymongo import MongoClient

from iot_fed.config import Settings, get_settings
from iot_fed.services import manager
from iot_fed.store import PREDICTIONS, SENSOR_READINGS, init_database, save_global_model
from iot_fed.store.live import read_scorer_status
from iot_fed.stream.admin import delete_topics, ensure_topics
from iot_fed.stream.messages import encode_key, encode_reading

IOT_FED = str(Path(sys.executable).with_name("iot-fed"))
TARGET_DEVICES = 100_000  # the extrapolation's fleet: one reading a second each
STAGES = ("producer", "ingesters", "scorer", "mongodb", "kafka")


def _start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        cmd, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True
    )


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    for p in procs:
        try:
            p.wait(90)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(30)


def _own_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _produce_paced(settings: Settings, topic: str, devices: int, seconds: int) -> dict:
    """One reading per device per second (values: a smooth daily-like curve per device)."""
    producer = Producer({**settings.kafka_client_config(), "linger.ms": 20, "acks": "all"})
    keys = [encode_key(m) for m in range(1, devices + 1)]
    phase = np.random.default_rng(0).uniform(0, 6.28, devices)
    sent, late_s, t0 = 0, 0.0, time.monotonic()
    for s in range(seconds):
        now = time.time()
        ts = (
            time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"
        )
        temp = 21 + 2 * np.sin(s / 600 + phase)
        for i, key in enumerate(keys):
            reading = {
                "ts": ts,
                "epoch": s,
                "moteid": i + 1,
                "temperature": float(temp[i]),
                "humidity": 38.0 + float(phase[i]),
                "light": 120.0,
                "voltage": 2.68,
            }
            while True:
                try:
                    producer.produce(topic, key=key, value=encode_reading(reading))
                    break
                except BufferError:
                    producer.poll(0.05)
            sent += 1
        producer.poll(0)
        behind = time.monotonic() - (t0 + s + 1)
        if behind < 0:
            time.sleep(-behind)
        else:
            late_s += behind  # the producer itself could not keep the pace
    assert producer.flush(120) == 0, "readings left undelivered"
    return {"sent": sent, "seconds": time.monotonic() - t0, "producer_late_s": late_s}


def _latencies_ms(coll: Any) -> np.ndarray:
    docs = coll.find({}, {"_id": 0, "kafka_ts": 1, "scored_at": 1})
    return np.array(
        [(d["scored_at"] - d["kafka_ts"]).total_seconds() * 1000 for d in docs], np.float64
    )


class Counts(threading.Thread):
    """Samples the landed and scored counts every 0.5 s: each one's rate runs from its first
    document to the moment it reached its final count."""

    def __init__(self, db: Any) -> None:
        super().__init__(daemon=True)
        self.db, self.samples, self.stop = db, [], threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            r = self.db[SENSOR_READINGS].estimated_document_count()
            p = self.db[PREDICTIONS].estimated_document_count()
            self.samples.append((time.monotonic(), r, p))
            time.sleep(0.5)

    def rate(self, col: int) -> float | None:
        final = self.samples[-1][col]
        start = next((t for t, *c in self.samples if c[col - 1] > 0), None)
        end = next((t for t, *c in self.samples if c[col - 1] >= final), None)
        return round(final / (end - start), 1) if start and end and end > start else None


def _cpu(pids: dict[str, list[int]]) -> dict[str, float]:
    return {stage: sum(tree_cpu_s(p) for p in ps) for stage, ps in pids.items()}


def run_config(
    settings: Settings,
    bundle: Any,
    ingesters: int,
    parts: int,
    devices: int,
    seconds: int,
    drain_s: float,
    workdir: Path,
) -> dict:
    tag = uuid.uuid4().hex[:8]
    cfg = settings.model_copy(
        update={
            "kafka_topic": f"bench_scale_{tag}",
            "kafka_dlq_topic": f"bench_scale_{tag}_dlq",
            "kafka_consumer_group": f"bench_scale_{tag}",
            "kafka_partitions": max(settings.kafka_partitions, 2 * ingesters, parts),
            "mongodb_database": f"bench_scale_{tag}",
            "scorer_state_partitions": parts,
            "data_dir": workdir / tag,
        }
    )
    ensure_topics(cfg)
    client = MongoClient(cfg.mongodb_uri)
    db = client[cfg.mongodb_database]
    init_database(db)
    save_global_model(db, bundle.to_bytes(), threshold=bundle.threshold, promoted=True)
    (workdir / tag).mkdir(parents=True)
    (workdir / tag / "jars").symlink_to((settings.data_dir / "jars").resolve())
    env = {
        **os.environ,
        "IOT_FED_DATA_DIR": str(cfg.data_dir),
        "IOT_FED_KAFKA_TOPIC": cfg.kafka_topic,
        "IOT_FED_KAFKA_DLQ_TOPIC": cfg.kafka_dlq_topic,
        "IOT_FED_KAFKA_CONSUMER_GROUP": cfg.kafka_consumer_group,
        "IOT_FED_MONGODB_DATABASE": cfg.mongodb_database,
        "IOT_FED_SCORER_STATE_PARTITIONS": str(parts),
    }
    procs: list[subprocess.Popen] = []
    try:
        scorer = _start([IOT_FED, "spark-stream", "--checkpoint", tag], env, workdir / "scorer.log")
        procs.append(scorer)
        deadline = time.monotonic() + 300
        while (read_scorer_status(db, tag) or {}).get("state") != "running":
            assert scorer.poll() is None and time.monotonic() < deadline, "the scorer did not start"
            time.sleep(0.5)
        members = [
            _start([IOT_FED, "ingest", "--name", f"m{i}"], env, workdir / f"ingest{i}.log")
            for i in range(ingesters)
        ]
        procs += members
        services = {s.name: s.pid for s in manager.status(settings, ["mongodb", "kafka"])}
        pids = {
            "ingesters": [m.pid for m in members],
            "scorer": [scorer.pid],
            "mongodb": [services["mongodb"]] if services.get("mongodb") else [],
            "kafka": [services["kafka"]] if services.get("kafka") else [],
        }
        counts = Counts(db)
        counts.start()
        cpu0, own0 = _cpu(pids), _own_cpu_s()
        produced = _produce_paced(cfg, cfg.kafka_topic, devices, seconds)
        own = _own_cpu_s() - own0
        n = produced["sent"]
        readings, preds = db[SENSOR_READINGS], db[PREDICTIONS]
        t_end = time.monotonic() + drain_s
        while time.monotonic() < t_end:
            if readings.estimated_document_count() >= n and preds.estimated_document_count() >= n:
                break
            time.sleep(1)
        cpu1 = _cpu(pids)
        counts.stop.set()
        counts.join()
        landed, scored = readings.count_documents({}), preds.count_documents({})
        lat = _latencies_ms(preds)
    finally:
        _stop(procs)
        client.drop_database(cfg.mongodb_database)
        delete_topics(cfg, [cfg.kafka_topic, cfg.kafka_dlq_topic])
        client.close()

    per_1000 = {s: 1000 * (cpu1[s] - cpu0[s]) / max(n, 1) for s in pids}
    per_1000["producer"] = 1000 * own / max(n, 1)
    return {
        "config": f"{ingesters}x{parts}",
        "ingesters": ingesters,
        "state_partitions": parts,
        "devices": devices,
        "seconds": seconds,
        "produced": n,
        "produced_per_s": round(n / produced["seconds"], 1),
        "producer_late_s": round(produced["producer_late_s"], 2),
        "landed": landed,
        "scored": scored,
        "landed_per_s": counts.rate(1),
        "scored_per_s": counts.rate(2),
        "p50_ms": round(float(np.percentile(lat, 50)), 1) if len(lat) else None,
        "p99_ms": round(float(np.percentile(lat, 99)), 1) if len(lat) else None,
        "cpu_s_per_1000": {s: round(v, 4) for s, v in per_1000.items()},
    }


def extrapolate(rows: list[dict]) -> list[dict]:
    """Cores each stage needs at ``TARGET_DEVICES`` readings/s, from each config's cost."""
    out = []
    for r in rows:
        cores = {s: round(c * TARGET_DEVICES / 1000, 1) for s, c in r["cpu_s_per_1000"].items()}
        out.append(
            {"config": r["config"], "cores_at_100k": cores, "total": round(sum(cores.values()), 1)}
        )
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=10_000)
    ap.add_argument("--seconds", type=int, default=120)
    ap.add_argument("--configs", default="1x1,2x1,1x2,1x4", help="INGESTERSxPARTITIONS,...")
    ap.add_argument("--drain-s", type=float, default=300)
    ap.add_argument("--quick", action="store_true", help="200 devices, 15 s, configs 1x1,2x2")
    args = ap.parse_args()
    if args.quick:
        args.devices, args.seconds, args.configs, args.drain_s = 200, 15, "1x1,2x2", 300
    settings = get_settings()
    bundle = promoted_bundle(settings)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_stream_scale_") as tmp:
        for c in args.configs.split(","):
            ing, parts = (int(x) for x in c.split("x"))
            row = run_config(
                settings, bundle, ing, parts, args.devices, args.seconds, args.drain_s, Path(tmp)
            )
            rows.append(row)
            print(row, flush=True)
    headers = [
        "config",
        "produced/s",
        "landed/s",
        "scored/s",
        "landed",
        "scored",
        "p50 ms",
        "p99 ms",
        *(f"{s} cpu/1k" for s in STAGES),
    ]
    print_table(
        f"{args.devices} devices, 1 reading/s each, {args.seconds} s",
        headers,
        [
            [
                r["config"],
                r["produced_per_s"],
                r["landed_per_s"],
                r["scored_per_s"],
                r["landed"],
                r["scored"],
                r["p50_ms"],
                r["p99_ms"],
                *(r["cpu_s_per_1000"].get(s) for s in STAGES),
            ]
            for r in rows
        ],
    )
    ext = extrapolate(rows)
    print_table(
        f"cores per stage at {TARGET_DEVICES:,} devices (1 reading/s each), from the costs above",
        ["config", *STAGES, "total"],
        [[e["config"], *(e["cores_at_100k"].get(s) for s in STAGES), e["total"]] for e in ext],
    )
    write_results(
        "stream_scale",
        {"configs": {"rows": rows}, "extrapolation": {"rows": ext}},
        quick=args.quick,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
