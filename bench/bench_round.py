"""One Dagster-orchestrated federated round under the real daemon (not a test).

A burst of readings for D devices is produced into a fresh topic; ``dagster-daemon`` runs
``iot_stream_sensor`` and ``aggregation_sensor`` on a temporary instance (the project's
``scripts/dagster.yaml``, storage as ``make run`` writes it: ``--storage postgres`` is a
throwaway database on the project's PostgreSQL, ``sqlite`` a file instance); the benchmark
waits for a promoted global version in a fresh database and splits the wall time into:
waiting for + evaluating the sensor tick, run launch (queued -> started), training
(the local_model run), aggregation (the global run, after its sensor's interval) and the
number of Dagster runs in the round (one when training, aggregation and promotion share a
run). The training run is split further from its event log: planned events at creation,
dequeue, worker start (process up, code loaded) and each step. It also measures the
import time of ``iot_fed.definitions`` (``python -X importtime``, best of 3) beside a bare
``import dagster``. Configurations (storages x checkouts) run round-robin ``--repeat``
times; each column is the round with the median total.

``--baseline DIR`` runs the same rounds on another checkout of the code (e.g. one made with
``git worktree add /tmp/base <commit>``; it uses this checkout's venv and instance
settings). Prints a table, writes bench/results/round.json.

    .venv/bin/python bench/bench_round.py [--storage postgres,sqlite] [--repeat 3]
        [--devices 54] [--per-device 40] [--baseline DIR] [--keep-home]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import IO, Any

import dagster as dg
import numpy as np
import pandas as pd
from common import create_pg_database, drop_pg_database, write_results

ROOT = Path(__file__).resolve().parents[1]
local_model_key = dg.AssetKey("local_model")
sys.path.insert(0, str(ROOT))

from iot_fed.config import load_settings  # noqa: E402
from iot_fed.services.dagster_instance import DAGSTER_DATABASE, configure  # noqa: E402
from iot_fed.store import repository as repo  # noqa: E402
from iot_fed.store.client import connect  # noqa: E402
from iot_fed.stream.admin import ensure_topics  # noqa: E402
from iot_fed.stream.messages import encode_key, encode_reading  # noqa: E402


def burst(devices: int, per_device: int, first: int = 1) -> pd.DataFrame:
    """``per_device`` clean readings (31 s apart) of motes ``first`` .. ``first + devices - 1``."""
    e = np.arange(per_device)
    frames = []
    for m in range(first, first + devices):
        hours = e * 31 / 3600
        frames.append(
            pd.DataFrame(
                {
                    "ts": pd.Timestamp("2004-03-01", tz="UTC") + pd.to_timedelta(e * 31, unit="s"),
                    "epoch": e,
                    "moteid": m,
                    "temperature": 21 + 3 * np.sin(2 * np.pi * hours / 24) + 0.05 * m,
                    "humidity": 38 - 4 * np.sin(2 * np.pi * hours / 24),
                    "light": 300.0 + m,
                    "voltage": 2.7 - 1e-5 * e,
                    "label": None,
                }
            )
        )
    return pd.concat(frames, ignore_index=True).sort_values(["epoch", "moteid"])


def produce(settings, topic: str, df: pd.DataFrame) -> None:
    from confluent_kafka import Producer

    ensure_topics(settings, [topic])
    p = Producer({**settings.kafka_client_config(), "linger.ms": 5, "acks": "all"})
    for r in df.to_dict("records"):
        p.produce(topic, encode_reading(r), encode_key(r["moteid"]))
    assert p.flush(30) == 0


def import_seconds(code_root: Path, module: str, repeat: int = 3) -> float:
    """Best-of-``repeat`` cumulative import time of ``module`` (``-X importtime``)."""
    best = float("inf")
    for _ in range(repeat):
        out = subprocess.run(
            [sys.executable, "-X", "importtime", "-W", "ignore", "-c", f"import {module}"],
            cwd=code_root,
            env={**os.environ, "PYTHONPATH": str(code_root)},
            capture_output=True,
            text=True,
            check=True,
        )
        for line in out.stderr.splitlines():
            parts = [p.strip() for p in line.split("|")]
            if len(parts) == 3 and parts[2] == module:
                best = min(best, int(parts[1]) / 1e6)
    return best


def start_daemon(env: dict[str, str], code_root: Path, log: IO[str]) -> subprocess.Popen:
    """``dagster-daemon run`` on the instance of ``env["DAGSTER_HOME"]``, in its own session."""
    return subprocess.Popen(
        [str(ROOT / ".venv/bin/dagster-daemon"), "run", "-m", "iot_fed.definitions"],
        env=env,
        cwd=code_root,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop_daemon(daemon: subprocess.Popen) -> None:
    """SIGTERM (the daemon waits for its runs), then kill after two minutes."""
    daemon.terminate()
    try:
        daemon.wait(120)
    except subprocess.TimeoutExpired:  # a loaded machine: do not lose the figures
        daemon.kill()
        daemon.wait(30)


def run_timeline(instance: dg.DagsterInstance, record: dg.RunRecord) -> dict[str, float]:
    """The training run's split: created -> enqueued (planned events) -> starting
    (dequeued) -> started (worker process up, code loaded), then each step's duration."""
    created = record.create_timestamp.timestamp()
    first: dict[str, float] = {}
    step_start: dict[str, float] = {}
    out: dict[str, float] = {}
    for e in instance.all_logs(record.dagster_run.run_id):
        ev = e.dagster_event
        if ev is None:
            continue
        first.setdefault(ev.event_type_value, e.timestamp)
        if ev.event_type_value == "STEP_START":
            step_start[e.step_key] = e.timestamp
        elif ev.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE") and e.step_key in step_start:
            out[f"step_{e.step_key}_s"] = e.timestamp - step_start[e.step_key]
    enq, starting, start = (
        first.get(k) for k in ("PIPELINE_ENQUEUED", "PIPELINE_STARTING", "PIPELINE_START")
    )
    if enq and starting and start:
        out = {
            "run_planned_events_s": enq - created,
            "run_dequeue_s": starting - enq,
            "run_worker_start_s": start - starting,
            **out,
        }
    return out


def round_once(args: argparse.Namespace, code_root: Path, storage: str) -> dict:
    """One daemon-driven round on the code in ``code_root`` with the Dagster instance on
    ``storage`` (``sqlite`` or ``postgres``, a throwaway database); the timings as a dict."""
    tag = uuid.uuid4().hex[:8]
    home = Path(tempfile.mkdtemp(prefix="iot_fed_bench_home_"))
    pg_database = f"bench_round_{tag}" if storage == "postgres" else None
    base = load_settings()
    if pg_database:
        create_pg_database(base.postgres_uri, pg_database)
    instance_config = configure(home, base, storage, pg_database or DAGSTER_DATABASE)
    env = {
        **os.environ,
        **instance_config.env,
        "PYTHONPATH": str(code_root),
        "DAGSTER_HOME": str(home),
        "IOT_FED_KAFKA_TOPIC": f"bench_round_{tag}",
        "IOT_FED_KAFKA_CONSUMER_GROUP": f"bench_round_{tag}",
        "IOT_FED_MONGODB_DATABASE": f"bench_round_{tag}",
        "IOT_FED_SENSOR_INTERVAL_S": str(args.interval),
        "IOT_FED_AGGREGATION_INTERVAL_S": str(args.interval),
        "IOT_FED_MIN_NEW_SAMPLES": str(min(20, args.per_device)),
    }
    os.environ.update(env)
    settings = load_settings()
    db = connect(settings.mongodb_uri, settings.mongodb_database)
    ensure_topics(settings, [settings.kafka_topic])
    log = open(home / "daemon.log", "w")  # noqa: SIM115 - lives as long as the daemon
    daemon = start_daemon(env, code_root, log)
    # the ingestion consumer group (one member): the sensor triggers from what it lands
    ingester = subprocess.Popen(
        [str(ROOT / ".venv/bin/iot-fed"), "ingest", "--name", f"bench-{tag}"],
        env={**os.environ, **env},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        with dg.DagsterInstance.get() as instance:
            # Let the daemon start and run the sensor once on the empty topic.
            deadline = time.time() + 120
            while time.time() < deadline and not (home / "storage").exists():
                time.sleep(0.5)
            time.sleep(args.interval + 5)
            t0 = time.time()
            produce(settings, settings.kafka_topic, burst(args.devices, args.per_device))
            t_produced = time.time()
            promoted = None
            while time.time() < t_produced + args.timeout:
                promoted = repo.promoted_global_model(db)
                if promoted:
                    break
                time.sleep(0.2)
            t_done = time.time()
            if promoted is None:
                log_path = home / "daemon.log"
                raise SystemExit(f"no promoted version within {args.timeout} s; see {log_path}")
            for _ in range(300):  # the promoting run still has to finish its bookkeeping
                if all(r.dagster_run.is_finished for r in instance.get_run_records()):
                    break
                time.sleep(0.2)
            runs = sorted(instance.get_run_records(), key=lambda r: r.create_timestamp)
            steps = run_timeline(
                instance,
                next(r for r in runs if local_model_key in (r.dagster_run.asset_selection or ())),
            )
            rows = []
            for r in runs:
                st = instance.get_run_stats(r.dagster_run.run_id)
                rows.append(
                    {
                        "job": r.dagster_run.job_name,
                        "assets": sorted(
                            k.to_user_string() for k in r.dagster_run.asset_selection or []
                        ),
                        "created": r.create_timestamp.timestamp(),
                        "start": st.start_time,
                        "end": st.end_time,
                        "status": r.dagster_run.status.value,
                    }
                )
    finally:
        ingester.terminate()
        ingester.wait(60)
        stop_daemon(daemon)
        log.close()
    train = next(r for r in rows if "local_model" in r["assets"])
    agg = next(
        r for r in rows if "global_model" in r["assets"] or r["job"] == "aggregate_global_model"
    )
    result = {
        "code": str(code_root),
        "storage": storage,
        "devices": args.devices,
        "readings": args.devices * args.per_device,
        "interval_s": args.interval,
        "produce_s": t_produced - t0,
        "sensor_wait_and_tick_s": train["created"] - t_produced,
        "train_launch_s": train["start"] - train["created"],
        "training_run_s": train["end"] - train["start"],
        "aggregation_wait_s": agg["created"] - train["end"],
        "aggregation_launch_s": agg["start"] - agg["created"],
        "aggregation_run_s": agg["end"] - agg["start"],
        "total_s": t_done - t_produced,
        "runs_in_round": len(rows),
        "promoted_version": promoted["version"],
        "devices_in_global": len(promoted["lineage"]),
    }
    if agg is train:  # one run trained, aggregated and promoted
        for k in ("aggregation_wait_s", "aggregation_launch_s", "aggregation_run_s"):
            result[k] = 0.0
    result.update(steps)
    result["total_excluding_aggregation_wait_s"] = result["total_s"] - result["aggregation_wait_s"]
    if args.import_repeat:
        result["import_definitions_s"] = import_seconds(
            code_root, "iot_fed.definitions", args.import_repeat
        )
        result["import_dagster_s"] = import_seconds(code_root, "dagster", args.import_repeat)
    result |= clean_up(db, settings.postgres_uri, pg_database, home, args.keep_home)
    return result


def clean_up(
    db: Any, postgres_uri: str, pg_database: str | None, home: Path, keep_home: bool
) -> dict[str, str]:
    """Drop a round's MongoDB database, and unless ``keep_home`` its instance (PostgreSQL
    database and DAGSTER_HOME); ``{"dagster_home": path}`` when kept."""
    db.client.drop_database(db.name)
    if keep_home:
        return {"dagster_home": str(home)}
    if pg_database:
        drop_pg_database(postgres_uri, pg_database)
    shutil.rmtree(home, ignore_errors=True)
    return {}


def median_round(rounds: list[dict]) -> dict:
    """The round with the median total (its own step split, not a mix of rounds)."""
    ordered = sorted(rounds, key=lambda r: r["total_s"])
    return {**ordered[(len(ordered) - 1) // 2], "totals_s": [r["total_s"] for r in rounds]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--devices", type=int, default=54)
    ap.add_argument("--per-device", type=int, default=40)
    ap.add_argument("--interval", type=int, default=5, help="sensor + aggregation interval (s)")
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--baseline", type=Path, help="another checkout to measure first")
    ap.add_argument(
        "--storage",
        default="postgres",
        help="comma-separated Dagster instance storages to compare: postgres (what make run "
        "uses when its PostgreSQL is up; a throwaway database), sqlite",
    )
    ap.add_argument("--repeat", type=int, default=1, help="rounds per configuration")
    ap.add_argument(
        "--import-repeat", type=int, default=3, help="import timings: best of N (0: none)"
    )
    ap.add_argument("--keep-home", action="store_true", help="keep each DAGSTER_HOME (events)")
    ap.add_argument("--quick", action="store_true", help="one round, 2 s interval, no imports")
    args = ap.parse_args()
    if args.quick:  # fewer devices fail the promotion check (too little held-out data)
        args.interval, args.repeat, args.import_repeat = 2, 1, 0

    roots = {"baseline": args.baseline.resolve()} if args.baseline else {}
    roots["this"] = ROOT
    configs = [(name, storage) for name in roots for storage in args.storage.split(",")]
    rounds: dict[str, list[dict]] = {f"{n}/{st}": [] for n, st in configs}
    for _ in range(args.repeat):  # round-robin: a noisy minute hits every configuration
        for name, storage in configs:
            r = round_once(args, roots[name], storage)
            rounds[f"{name}/{storage}"].append(r)
            print(f"{name}/{storage}", json.dumps(r), flush=True)
    results = {k: median_round(v) for k, v in rounds.items()}
    names = list(results)
    print(f"median of {args.repeat} round(s) per configuration")
    print("| step | " + " | ".join(names) + " |\n|---|" + "---|" * len(names))
    for k in results[names[-1]]:
        if (k.endswith("_s") and k != "totals_s") or k == "runs_in_round":
            print(f"| {k} | " + " | ".join(f"{results[n][k]:.2f}" for n in names) + " |")
    results["rounds"] = rounds
    write_results("round", {"round": results}, quick=args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
