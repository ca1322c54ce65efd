"""Dashboard queries on a reporting store holding 1 M readings of history (not a test).

Loads, into a throwaway database on the project's PostgreSQL, the reporting tables that
1 M readings produce (54 motes, two readings a minute each: ~500 k mote-minutes, 1 %
anomalies, 20 % of epochs missing as gaps, 500 global versions with their local models,
dead letters by reason), then times each query the Superset dashboards run on the
``reporting.v_*`` views: median and p95 of ``--repeat`` runs, with the project's indexes
and, in the same run, without the secondary ones (the ratio is what the indexes buy).
It also times one steady-state :func:`~iot_fed.reporting.refresh.refresh` tick (54 new
readings plus their verdicts in MongoDB) on top of that history. Prints a table, writes
section ``queries`` of bench/results/reporting.json. ``--against-running SECONDS`` instead
measures, in a running ``make run``, how far the reporting store is behind MongoDB
(section ``freshness``).

    .venv/bin/python bench/bench_reporting.py [--readings 1000000] [--repeat 15]
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import time
import uuid
from pathlib import Path

import psycopg
from common import write_results

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from iot_fed.config import load_settings  # noqa: E402
from iot_fed.reporting.refresh import refresh  # noqa: E402
from iot_fed.reporting.schema import ensure_schema  # noqa: E402
from iot_fed.services import manager  # noqa: E402
from iot_fed.services.postgres import database_uri  # noqa: E402
from iot_fed.store.client import connect  # noqa: E402
from iot_fed.store.collections import PREDICTIONS  # noqa: E402
from iot_fed.store.repository import insert_readings  # noqa: E402

MOTES = 54
PER_MINUTE = 2
T0 = "2026-01-01 00:00:00+00"
SECONDARY_INDEXES = {
    "device_minute_minute": "reporting.device_minute (minute)",
    "anomalies_ts": "reporting.anomalies (ts)",
    "local_losses_created": "reporting.local_losses (created_at)",
    "gaps_to_ts": "reporting.gaps (moteid, to_ts)",
}
LAST = "(SELECT max(minute) FROM reporting.fleet_minute)"
QUERIES = {
    "fleet: readings/s + anomalies per minute (6 h)": f"""
        SELECT minute, readings_per_s, anomalies FROM reporting.v_fleet_minute
        WHERE minute >= {LAST} - interval '6 hours' ORDER BY minute""",
    "fleet: anomaly rate per mote with x,y (6 h)": f"""
        SELECT moteid, x, y, sum(anomalies)::float / NULLIF(sum(scored), 0) AS rate
        FROM reporting.v_device_minute WHERE minute >= {LAST} - interval '6 hours'
        GROUP BY moteid, x, y""",
    "fleet: anomaly rate per mote with x,y (all time)": """
        SELECT moteid, x, y, anomaly_rate FROM reporting.v_mote_anomaly_rate""",
    "fleet: promoted version": "SELECT * FROM reporting.v_promoted_version",
    "device: 4 channels + anomalies, one mote (6 h)": f"""
        SELECT minute, temperature, humidity, light, voltage, anomalies
        FROM reporting.v_device_minute
        WHERE moteid = 17 AND minute >= {LAST} - interval '6 hours' ORDER BY minute""",
    "device: 4 channels, one mote (all history)": """
        SELECT minute, temperature, humidity, light, voltage, anomalies
        FROM reporting.v_device_minute WHERE moteid = 17 ORDER BY minute""",
    "device: anomaly markers, one mote (6 h)": f"""
        SELECT ts, score, channels FROM reporting.v_anomalies
        WHERE moteid = 17 AND ts >= {LAST} - interval '6 hours' ORDER BY ts""",
    "federation: global versions over time": """
        SELECT version, created_at, val_loss, devices, strategy, status
        FROM reporting.v_global_versions ORDER BY version""",
    "federation: local losses per device (6 h)": f"""
        SELECT moteid, created_at, loss_after FROM reporting.v_local_losses
        WHERE created_at >= {LAST} - interval '6 hours' ORDER BY created_at""",
    "quality: dead letters by reason (6 h)": f"""
        SELECT minute, reason, letters FROM reporting.v_dead_letters_minute
        WHERE minute >= {LAST} - interval '6 hours' ORDER BY minute""",
    "quality: gaps per device": "SELECT * FROM reporting.v_gaps_device ORDER BY moteid",
    "quality: latest gaps (6 h)": f"""
        SELECT moteid, from_ts, to_ts, missing_epochs FROM reporting.v_gaps
        WHERE to_ts >= {LAST} - interval '6 hours' ORDER BY to_ts""",
}


def load(conn: psycopg.Connection, readings: int) -> dict[str, int]:
    """Fill the reporting tables as ``readings`` readings would; return row counts."""
    minutes = readings // (MOTES * PER_MINUTE)
    versions = 500
    conn.execute(f"""
        INSERT INTO reporting.device_minute (moteid, minute, readings, faults, scored,
            anomalies, score_mean, score_max, temperature, humidity, light, voltage,
            min_epoch, max_epoch, first_ts, last_ts)
        SELECT m, '{T0}'::timestamptz + i * interval '1 minute', 2, 0, 2,
               (random() < 0.01)::int, random(), random() * 3, 20 + random(), 40 + random(),
               100 * random(), 2.7, i * 2, i * 2 + 1,
               '{T0}'::timestamptz + i * interval '1 minute',
               '{T0}'::timestamptz + i * interval '1 minute' + interval '30 seconds'
        FROM generate_series(1, {MOTES}) m, generate_series(0, {minutes - 1}) i""")
    conn.execute("""
        INSERT INTO reporting.fleet_minute (minute, readings, devices, faults, scored,
            anomalies, score_mean, score_max)
        SELECT minute, sum(readings), count(*), sum(faults), sum(scored), sum(anomalies),
               avg(score_mean), max(score_max)
        FROM reporting.device_minute GROUP BY minute""")
    conn.execute("""
        INSERT INTO reporting.devices (moteid, x, y, first_ts, last_ts, first_epoch,
            last_epoch, readings, faults, scored, anomalies)
        SELECT moteid, random() * 40, random() * 30, min(first_ts), max(last_ts),
               min(min_epoch), max(max_epoch), sum(readings), sum(faults), sum(scored),
               sum(anomalies)
        FROM reporting.device_minute GROUP BY moteid""")
    conn.execute("""
        INSERT INTO reporting.anomalies (moteid, ts, epoch, score, threshold, model_version,
            channels)
        SELECT moteid, first_ts, min_epoch, score_max, 1.0, 1, ARRAY['temperature']
        FROM reporting.device_minute WHERE anomalies > 0""")
    conn.execute("""
        INSERT INTO reporting.gaps (moteid, after_epoch, missing_epochs, from_ts, to_ts)
        SELECT moteid, max_epoch, 1 + (random() * 3)::int, last_ts, last_ts + interval '1 minute'
        FROM reporting.device_minute WHERE random() < 0.2""")
    conn.execute(f"""
        INSERT INTO reporting.model_versions (version, created_at, strategy, devices,
            val_loss, threshold, promoted, promoted_at, is_current, status)
        SELECT v, '{T0}'::timestamptz + v * ({minutes} * interval '1 minute' / {versions}),
               'fedavg', {MOTES}, random(), 1.0, v % 3 = 0, NULL, v = {versions - versions % 3},
               CASE WHEN v % 3 = 0 THEN 'promoted' ELSE 'rejected' END
        FROM generate_series(1, {versions}) v""")
    conn.execute(f"""
        INSERT INTO reporting.local_losses (moteid, version, created_at, n_samples,
            loss_before, loss_after)
        SELECT m, v, '{T0}'::timestamptz + v * ({minutes} * interval '1 minute' / {versions}),
               40, 1 + random(), random()
        FROM generate_series(1, {MOTES}) m, generate_series(1, {versions}) v""")
    conn.execute(f"""
        INSERT INTO reporting.dead_letters_minute (minute, reason, letters)
        SELECT '{T0}'::timestamptz + i * interval '1 minute', r, 1 + (random() * 5)::int
        FROM generate_series(0, {minutes - 1}) i,
             unnest(ARRAY['invalid json', 'bad humidity', 'bad moteid']) r
        WHERE random() < 0.3""")
    conn.commit()
    conn.execute("ANALYZE")
    tables = ["device_minute", "fleet_minute", "anomalies", "gaps", "local_losses"]
    tables += ["model_versions", "dead_letters_minute"]
    return {t: conn.execute(f"SELECT count(*) FROM reporting.{t}").fetchone()[0] for t in tables}


def time_queries(conn: psycopg.Connection, repeat: int) -> dict[str, dict[str, float]]:
    out = {}
    for name, sql in QUERIES.items():
        rows = len(conn.execute(sql).fetchall())  # warm the cache once
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            conn.execute(sql).fetchall()
            times.append((time.perf_counter() - t0) * 1000)
        times.sort()
        p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
        out[name] = {"median_ms": statistics.median(times), "p95_ms": p95, "rows": rows}
    return out


def time_refresh(conn: psycopg.Connection, settings) -> dict[str, float]:
    """One steady-state tick: 54 new readings (+ verdicts) on top of the loaded history."""
    db = connect(settings.mongodb_uri, f"bench_reporting_{uuid.uuid4().hex[:8]}")
    try:
        last = conn.execute("SELECT max(minute) FROM reporting.fleet_minute").fetchone()[0]
        conn.commit()
        t = last + dt.timedelta(minutes=1)
        docs = [
            {"ts": t, "epoch": 10**7, "moteid": m, "temperature": 20.0, "humidity": 40.0,
             "light": 100.0, "voltage": 2.7, "label": None}
            for m in range(1, MOTES + 1)
        ]  # fmt: skip
        insert_readings(db, docs)
        db[PREDICTIONS].insert_many(
            [{"moteid": d["moteid"], "ts": t, "epoch": d["epoch"], "score": 0.5,
              "flag": False, "threshold": 1.0, "model_version": 1} for d in docs]
        )  # fmt: skip
        refresh(db, conn)  # first call creates nothing new but warms the code path
        t0 = time.perf_counter()
        res = refresh(db, conn)
        return {"tick_ms": (time.perf_counter() - t0) * 1000, "buckets": res.buckets}
    finally:
        db.client.drop_database(db.name)
        db.client.close()


def table(results: dict[str, dict[str, dict[str, float]]]) -> str:
    lines = [
        "| query | rows | median ms | p95 ms | median ms, no secondary indexes | ratio |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in results["indexed"].items():
        n = results["no_secondary_indexes"][name]
        ratio = n["median_ms"] / max(r["median_ms"], 1e-6)
        lines.append(
            f"| {name} | {r['rows']} | {r['median_ms']:.1f} | {r['p95_ms']:.1f} "
            f"| {n['median_ms']:.1f} | {ratio:.1f}x |"
        )
    return "\n".join(lines)


def freshness(settings, seconds: float, every_s: float = 2.0) -> dict[str, float]:
    """Against a running pipeline: the age of the oldest reading MongoDB holds that the
    reporting store has not folded in yet (0 when caught up), sampled every ``every_s``."""
    from bson import ObjectId

    from iot_fed.store.collections import SENSOR_READINGS

    db = connect(settings.mongodb_uri, settings.mongodb_database)
    ages: list[float] = []
    end = time.time() + seconds
    with psycopg.connect(settings.postgres_uri, autocommit=True) as pg:
        while time.time() < end:
            row = pg.execute(
                "SELECT value FROM reporting.watermarks WHERE source = 'readings'"
            ).fetchone()
            if row:
                after = {"_id": {"$gt": ObjectId(row[0])}}
                first = db[SENSOR_READINGS].find_one(after, {"_id": 1}, sort=[("_id", 1)])
                now = dt.datetime.now(dt.UTC)
                ages.append((now - first["_id"].generation_time).total_seconds() if first else 0)
            time.sleep(every_s)
    db.client.close()
    ages.sort()
    return {
        "samples": len(ages),
        "median_s": round(statistics.median(ages), 1) if ages else float("nan"),
        "p95_s": round(ages[int(0.95 * (len(ages) - 1))], 1) if ages else float("nan"),
        "max_s": round(ages[-1], 1) if ages else float("nan"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--readings", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--quick", action="store_true", help="20 k readings, 3 repeats")
    ap.add_argument(
        "--against-running",
        type=float,
        metavar="SECONDS",
        help="measure the reporting store's freshness behind MongoDB in a running `make run` "
        "for SECONDS (goal: the oldest unreported reading <= 30 s old)",
    )
    args = ap.parse_args()
    if args.against_running:
        fresh = freshness(load_settings(), args.against_running)
        print(
            f"oldest reading not yet in the reporting store: median {fresh['median_s']} s, "
            f"p95 {fresh['p95_s']} s, max {fresh['max_s']} s ({fresh['samples']} samples)"
        )
        write_results("reporting", {"freshness": fresh})
        return
    if args.quick:
        args.readings, args.repeat = 20_000, 3
    settings = load_settings()
    manager.up(settings, only=["mongodb", "postgres"])
    name = f"bench_reporting_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(settings.postgres_uri, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        with psycopg.connect(database_uri(settings.postgres_uri, name)) as conn:
            ensure_schema(conn)
            t0 = time.perf_counter()
            counts = load(conn, args.readings)
            load_s = time.perf_counter() - t0
            results = {"indexed": time_queries(conn, args.repeat)}
            tick = time_refresh(conn, settings)
            for idx in SECONDARY_INDEXES:
                conn.execute(f"DROP INDEX reporting.{idx}")
            conn.commit()
            results["no_secondary_indexes"] = time_queries(conn, max(args.repeat // 3, 3))
    finally:
        with psycopg.connect(settings.postgres_uri, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    worst = max(r["median_ms"] for r in results["indexed"].values())
    worst_p95 = max(r["p95_ms"] for r in results["indexed"].values())
    out = {
        "readings": args.readings,
        "rows": counts,
        "load_s": round(load_s, 1),
        "queries": results,
        "worst_median_ms": worst,
        "worst_p95_ms": worst_p95,
        "refresh_tick": tick,
    }
    print(f"reporting store: {args.readings:,} readings of history -> {counts} "
          f"(loaded in {load_s:.1f} s)")  # fmt: skip
    print(table(results))
    print(f"worst median {worst:.1f} ms, worst p95 {worst_p95:.1f} ms (goal <= 300 ms)")
    print(f"steady refresh tick on this history: {tick['tick_ms']:.0f} ms "
          f"({tick['buckets']} buckets)")  # fmt: skip
    write_results("reporting", {"queries": out}, quick=args.quick)


if __name__ == "__main__":
    main()
