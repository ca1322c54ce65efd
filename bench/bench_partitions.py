"""Dagster's dynamic partitions at 1,000 / 10,000 / 100,000 keys, one per device: the
per-device ``devices`` partitions ``local_model`` had before decision 0009 moved it to
shard partitions (issue #26). The keys are this benchmark's own partitions definition (the
alternative measured); the sensor tick is today's ``iot_stream_sensor`` (shard runs).

On a throwaway database of the project's PostgreSQL, with the instance ``iot-fed run``
writes (its pooled storages, ``DAGSTER_EVENT_BATCH_SIZE``), the partitions grow to each
size in turn, one device key each; at each size it measures:

- **add**: the new keys with ``instance.add_dynamic_partitions`` in batches of ``--batch``
  (the stream sensor's add request, applied by the daemon);
- **materialize**: one ``local_model`` materialization per new key, written as a run
  writes them (batched events): the asset's history after one round per device;
- **get**: ``instance.get_dynamic_partitions`` (median of 3): what every stream-sensor tick
  and every partition-range run reads;
- **sensor tick**: the real ``iot_stream_sensor`` evaluated as the daemon evaluates it, on
  a MongoDB database where every device landed ``min_new_samples`` readings since its last
  training (all ready: one run over all of them); its cursor and serialized result sizes
  (what crosses the daemon's gRPC and is stored per tick);
- **UI**: GraphQL on ``dagster-webserver`` (median of 3): the asset's Partitions tab
  (``partitionKeysByDimension`` + ``assetPartitionStatuses``) and the catalog's
  ``partitionStats``, with their response sizes;
- **a round's metadata**: the size of the ``local_model`` metadata a training run over
  every device writes today (its per-device ``models`` table), which Dagster copies into
  each partition's materialization event: per event and per round (computed, not timed);
- **memory**: peak RSS of this process (instance + sensor) and of the webserver.

Prints a table, writes bench/results/partitions.json (``--quick``: tiny sizes, to
assets_data/bench-quick/). Starts PostgreSQL and the MongoDB-compatible server if needed.

    .venv/bin/python bench/bench_partitions.py [--sizes 1000,10000,100000] [--batch 10000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg
from common import create_pg_database, drop_pg_database, print_table, write_results

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dagster._core.events import (  # noqa: E402 - bench only: a run's batched event writes
    DagsterEvent,
    DagsterEventBatchMetadata,
    DagsterEventType,
    StepMaterializationData,
)
from dagster._core.instance.utils import RUNLESS_JOB_NAME, RUNLESS_RUN_ID  # noqa: E402
from dagster._serdes import serialize_value  # noqa: E402

from iot_fed.config import get_settings, load_settings  # noqa: E402
from iot_fed.definitions import defs  # noqa: E402
from iot_fed.defs.assets.models import outcomes_table  # noqa: E402
from iot_fed.defs.resources import MongoDBResource, SettingsResource  # noqa: E402
from iot_fed.federation.outcomes import DeviceOutcome  # noqa: E402
from iot_fed.services import manager  # noqa: E402

devices = dg.DynamicPartitionsDefinition(name="devices")
"""One key per device: the partitions decision 0009 measured and replaced by shards."""
from iot_fed.services.dagster_instance import configure  # noqa: E402
from iot_fed.store.client import connect  # noqa: E402
from iot_fed.store.collections import INGEST_DEVICES  # noqa: E402

LOCAL_MODEL = dg.AssetKey("local_model")
WEBSERVER = str(Path(sys.executable).with_name("dagster-webserver"))
PARTITIONS_TAB = """query PartitionsTab($k: AssetKeyInput!) { assetNodeOrError(assetKey: $k) {
  ... on AssetNode { id partitionKeysByDimension { name partitionKeys }
    assetPartitionStatuses { ... on DefaultPartitionStatuses {
      materializedPartitions failedPartitions materializingPartitions } } } } }"""
CATALOG_STATS = """query CatalogStats { assetNodes { assetKey { path }
  partitionStats { numMaterialized numPartitions numFailed numMaterializing } } }"""


def timed(fn: Callable[[], Any], repeat: int = 1) -> tuple[float, Any]:
    """Median seconds of ``repeat`` calls, and the last result."""
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def peak_rss_mb(pid: int | None = None) -> float:
    if pid is None:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def materialize(instance: dg.DagsterInstance, keys: list[str]) -> None:
    """One ``local_model`` materialization per key, batched as a run's event writer does."""
    batch_id = uuid.uuid4().hex
    for i, key in enumerate(keys):
        event = DagsterEvent(
            event_type_value=DagsterEventType.ASSET_MATERIALIZATION.value,
            event_specific_data=StepMaterializationData(
                dg.AssetMaterialization(LOCAL_MODEL, partition=key)
            ),
            job_name=RUNLESS_JOB_NAME,
        )
        meta = DagsterEventBatchMetadata(batch_id, is_end=i == len(keys) - 1)
        instance.report_dagster_event(event, run_id=RUNLESS_RUN_ID, batch_metadata=meta)


def run_metadata_kb(n: int) -> float:
    """Size of the ``local_model`` metadata a training run over ``n`` devices writes today
    (its per-device ``models`` table); Dagster copies it into each partition's event."""
    outcomes = [DeviceOutcome(str(d), 40, 1, 0.123456, 0.0987654, 0.5) for d in range(1, n + 1)]
    return len(outcomes_table(outcomes).encode()) / 1024


def land(db: Any, n: int, readings: int) -> None:
    """Every one of ``n`` devices has landed ``readings`` readings (ingest_devices)."""
    db[INGEST_DEVICES].delete_many({})
    for lo in range(1, n + 1, 20_000):
        docs = [{"_id": d, "readings": readings} for d in range(lo, min(lo + 20_000, n + 1))]
        db[INGEST_DEVICES].insert_many(docs, ordered=False)


class Webserver:
    """``dagster-webserver -m iot_fed.definitions`` on a free port, for GraphQL queries."""

    def __init__(self, home: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        log = open(home / "webserver.log", "wb")  # noqa: SIM115 - closed with the process
        cmd = [WEBSERVER, "-m", "iot_fed.definitions", "-h", "127.0.0.1", "-p", str(self.port)]
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.time() + 180
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/server_info", timeout=5)
                return
            except OSError:
                time.sleep(1)
        raise RuntimeError(f"webserver did not answer; see {home / 'webserver.log'}")

    def query(self, text: str, variables: dict | None = None) -> tuple[dict, int]:
        body = json.dumps({"query": text, "variables": variables or {}}).encode()
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/graphql",
            data=body,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=600) as resp:
            raw = resp.read()
        doc = json.loads(raw)
        if doc.get("errors"):
            raise RuntimeError(f"GraphQL errors: {doc['errors'][:2]}")
        return doc["data"], len(raw)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(60)


def tick(definitions: dg.Definitions, instance: dg.DagsterInstance, resources: dict, cursor):
    """One ``iot_stream_sensor`` evaluation as the daemon makes it (resources built per tick)."""
    sensor = definitions.get_sensor_def("iot_stream_sensor")
    with dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources=resources,
        definitions=definitions,
        instance_ref=instance.get_ref(),  # as the daemon's: run requests' shards are checked
    ) as ctx:
        return sensor.evaluate_tick(ctx)


def measure(args: argparse.Namespace, instance: dg.DagsterInstance, db: Any, home: Path) -> list:
    settings = get_settings()
    resources = {"mongodb": MongoDBResource(), "settings": SettingsResource()}  # the sensor's
    definitions = defs()  # loaded once, as in the daemon's code location
    web = Webserver(home)
    rows, cursor, have = [], None, 0
    try:
        for step, n in enumerate(sorted(args.sizes), start=1):
            new = [str(d) for d in range(have + 1, n + 1)]
            t0 = time.perf_counter()
            for lo in range(0, len(new), args.batch):
                instance.add_dynamic_partitions(devices.name, new[lo : lo + args.batch])
            add_s = time.perf_counter() - t0
            mat_s, _ = timed(lambda new=new: materialize(instance, new))
            have = n
            get_s, keys = timed(lambda: instance.get_dynamic_partitions(devices.name), 3)
            assert len(keys) == n
            land(db, n, step * settings.min_new_samples)
            tick_s, data = timed(lambda c=cursor: tick(definitions, instance, resources, c))
            assert len(data.run_requests) == 1, "every device is ready: one run"
            cursor = data.cursor
            tab_s, (tab, tab_bytes) = timed(
                lambda: web.query(PARTITIONS_TAB, {"k": {"path": ["local_model"]}}), 3
            )
            node = tab["assetNodeOrError"]
            assert len(node["assetPartitionStatuses"]["materializedPartitions"]) == n
            stats_s, (_, stats_bytes) = timed(lambda: web.query(CATALOG_STATS), 3)
            rows.append(
                {
                    "partitions": n,
                    "add_s": add_s,
                    "add_per_1000_s": add_s / len(new) * 1000,
                    "materialize_events_s": mat_s,
                    "get_dynamic_partitions_s": get_s,
                    "sensor_tick_s": tick_s,
                    "sensor_cursor_kb": len(cursor or "") / 1024,
                    "sensor_result_kb": len(serialize_value(data)) / 1024,
                    "ui_partitions_tab_s": tab_s,
                    "ui_partitions_tab_kb": tab_bytes / 1024,
                    "ui_catalog_stats_s": stats_s,
                    "ui_catalog_stats_kb": stats_bytes / 1024,
                    "run_event_metadata_kb": run_metadata_kb(n),
                    "round_event_metadata_mb": n * run_metadata_kb(n) / 1024,
                    "bench_peak_rss_mb": peak_rss_mb(),
                    "webserver_peak_rss_mb": peak_rss_mb(web.proc.pid),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    finally:
        web.stop()
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--batch", type=int, default=10_000, help="keys per add_dynamic_partitions")
    ap.add_argument("--quick", action="store_true", help="100 and 1,000 keys")
    args = ap.parse_args()
    args.sizes = [100, 1000] if args.quick else [int(s) for s in args.sizes.split(",")]
    settings = load_settings()
    name = f"bench_partitions_{uuid.uuid4().hex[:8]}"
    home = Path(tempfile.mkdtemp(prefix="bench_partitions_"))
    with manager.session(settings, only=("postgres", "mongodb")):
        create_pg_database(settings.postgres_uri, name)
        db = connect(settings.mongodb_uri, name)
        os.environ.update(IOT_FED_MONGODB_DATABASE=name, DAGSTER_HOME=str(home))
        get_settings.cache_clear()
        try:
            config = configure(home, get_settings(), "postgres", database=name)
            os.environ.update(config.env)
            with dg.DagsterInstance.get() as instance:
                rows = measure(args, instance, db, home)
        finally:
            db.client.drop_database(name)
            drop_pg_database(settings.postgres_uri, name)
    cols = [
        ("partitions", "keys"),
        ("add_per_1000_s", "add s/1k"),
        ("materialize_events_s", "events s"),
        ("get_dynamic_partitions_s", "get s"),
        ("sensor_tick_s", "tick s"),
        ("sensor_cursor_kb", "cursor KB"),
        ("sensor_result_kb", "tick result KB"),
        ("ui_partitions_tab_s", "UI partitions s"),
        ("ui_partitions_tab_kb", "UI partitions KB"),
        ("ui_catalog_stats_s", "UI catalog s"),
        ("run_event_metadata_kb", "run metadata KB/event"),
        ("round_event_metadata_mb", "round metadata MB"),
        ("bench_peak_rss_mb", "bench RSS MB"),
        ("webserver_peak_rss_mb", "webserver RSS MB"),
    ]
    print_table(
        "Dagster dynamic partitions (devices), PostgreSQL instance",
        [c[1] for c in cols],
        [[r[c[0]] for c in cols] for r in rows],
    )
    write_results("partitions", {"devices": {"batch": args.batch, "rows": rows}}, quick=args.quick)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
