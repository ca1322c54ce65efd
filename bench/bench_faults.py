"""A broker outage during ``iot-fed stream --limit``: exact counts after kill -9 + restart.

Starts ``iot-fed stream --limit N --rate R`` into a fresh topic, kills the local broker
with SIGKILL (the PID the service manager tracks) once some readings are in, keeps it
down ``--outage`` seconds, restarts it, waits for the producer and counts the topic.
Needs the local services up (``iot-fed services up``). Prints a table; writes
``bench/results/faults.json``.

    .venv/bin/python bench/bench_faults.py [--outage 60] [--n 3000] [--rate 100]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
from confluent_kafka import Consumer, TopicPartition

from iot_fed.config import get_settings
from iot_fed.services import manager
from iot_fed.services.process import ProcessRecord, is_alive
from iot_fed.stream.admin import delete_topics, ensure_topics, partitions_of

RESULTS = Path(__file__).parent / "results" / "faults.json"


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--outage", type=float, default=60.0)
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--rate", type=float, default=100.0)
    args = ap.parse_args()
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
    print("| sent | outage s | exit | delivered | failed | in topic | lost | duplicated |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    print(
        f"| {row['sent']} | {row['outage_s']:.0f} | {row['exit_code']} | "
        f"{row['reported_delivered']} | {row['reported_failed']} | {row['in_topic']} | "
        f"{row['lost']} | {row['duplicated']} |"
    )
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"stream_limit_broker_outage": row}, indent=2) + "\n")


if __name__ == "__main__":
    main()
