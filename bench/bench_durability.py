"""Durability of acknowledged writes on mongo-java-server (H2 MVStore) across kill -9.

For each server mode (``-Dmvstore.durability`` x ``-Dmvstore.fsync``) and write concern,
a fresh store file gets ``--docs`` readings in bulk inserts of ``--batch``; right after the
last acknowledgement the server is killed with SIGKILL and restarted on the same file; the
documents left are counted. Throughput (docs/s) is measured on the same run, so the modes
compare as ratios. Prints a table; writes ``bench/results/durability.json``.

    .venv/bin/python bench/bench_durability.py [--docs 20000] [--batch 5000]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from pymongo import MongoClient
from pymongo.write_concern import WriteConcern

from iot_fed.config import get_settings
from iot_fed.services import artifacts
from iot_fed.services.process import port_open

RESULTS = Path(__file__).parent / "results"

# (label, durability, fsync, write concern)
CASES = [
    ("background, j=true (before)", "background", False, WriteConcern(w=1, j=True)),
    ("concern, w=1 (no j)", "concern", False, WriteConcern(w=1)),
    ("concern, j=true", "concern", False, WriteConcern(w=1, j=True)),
    ("concern+fsync, j=true", "concern", True, WriteConcern(w=1, j=True)),
    ("always, w=1", "always", False, WriteConcern(w=1)),
]


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
        proc = start(store, port, durability, fsync)
        uri = f"mongodb://127.0.0.1:{port}/"
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
        assert client["bench"]["readings"].count_documents({"moteid": 7, "epoch": {"$lt": 5}})
        client.close()
        proc.terminate()
        proc.wait(30)
    return {
        "acknowledged": acked,
        "kept_after_kill9": kept,
        "lost": acked - kept,
        "docs_per_s": round(acked / elapsed),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=20_000)
    ap.add_argument("--batch", type=int, default=5000)
    ap.add_argument("--small-batch", type=int, default=200, help="second series, small writes")
    args = ap.parse_args()
    rows = []
    for batch in (args.batch, args.small_batch):
        for label, durability, fsync, wc in CASES:
            r = run_case(durability, fsync, wc, args.docs, batch)
            rows.append({"mode": label, "batch": batch, **r})
            print(json.dumps(rows[-1]), flush=True)
    print("\n| mode | batch | acknowledged | kept after kill -9 | lost | docs/s |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['mode']} | {r['batch']} | {r['acknowledged']} | {r['kept_after_kill9']} "
            f"| {r['lost']} | {r['docs_per_s']:,} |"
        )
    RESULTS.mkdir(exist_ok=True)
    out = {"docs": args.docs, "cpus": os.cpu_count(), "rows": rows}
    (RESULTS / "durability.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
