"""Benchmark: the streaming scorer alone, micro-batch time and end-to-end latency.

Not a test, and no ``make run`` needed (``--against-running`` measures a running pipeline
instead, see below): with the local services up, each run gets a fresh topic, database (with a small
promoted model) and checkpoint; readings for 54 motes are produced at each ``--rates``
value for ``--seconds`` while the real query (:func:`start_streaming_evaluation`) scores
them; half-way a new global version is promoted (the time to the first prediction made
with it is reported).

Compared in one run, round-robin over ``--rounds`` (the machine may be shared: compare
variants within a run, as ratios): ``--variants``, each a set of Spark settings on top of
the product's (:data:`VARIANTS`; ``-noop`` = a no-op stateful function, Spark's own floor
for the query shape). Variants that change SparkContext settings get their own session.
Each run reports the query's ``durationMs`` breakdown (median over the warm micro-batches
with data) and the stateful operator's own times (``allUpdatesTimeMs``: the Python call
for new data; ``allRemovalsTimeMs``: the timeout pass, a second Python call;
``commitTimeMs``: the state-store commit).

    .venv/bin/python bench/bench_scorer.py [--rates 10,1000] [--variants before,after]
        [--rounds 2] [--seconds 40] [--partitions 1]

``--python-cost`` measures the stateful step alone, in Python, at ``--devices`` (per-mote
groups vs ``--buckets``; :mod:`scorer_python_cost`), each in its own process;
``--baseline DIR`` adds another checkout's buckets (``git worktree add DIR <commit>``).

``--against-running`` measures a RUNNING ``make run`` / ``iot-fed run`` instead
(:mod:`live_pipeline`): Kafka append -> stored prediction at each ``--rates`` for
``--seconds``, promotion -> first prediction with the new version, and ``POST /api/score``
p50/p99 (section ``running``).

Prints a table; writes bench/results/scorer.json: section ``--section`` (default
``variants``; the C1-vs-C2 JIT comparison, ``--variants c2-jit,c1-jit``, is kept as
``jit``) or ``running``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from common import C1, median, print_table, tree_cpu_s, write_results
from confluent_kafka import Producer
from live_pipeline import against_running
from scorer_python_cost import measure

import iot_fed.analytics.streaming as streaming
from iot_fed.analytics.session import build_session
from iot_fed.config import load_settings
from iot_fed.fl.model import init_params
from iot_fed.fl.rounds import calibrate_bundle, feature_stats
from iot_fed.fl.serialization import ModelBundle
from iot_fed.fl.spec import ModelSpec
from iot_fed.fl.stream_scoring import CHANNELS
from iot_fed.fl.window_features import window_features
from iot_fed.store import connect, init_database, save_global_model
from iot_fed.stream.admin import delete_topics, ensure_topics
from iot_fed.stream.kafka_config import producer_config
from iot_fed.stream.messages import encode_key, encode_reading

MOTES = 54
DURATIONS = (
    "triggerExecution",
    "addBatch",
    "queryPlanning",
    "walCommit",
    "commitOffsets",
    "latestOffset",
    "getBatch",
)
STATE_TIMES = ("allUpdatesTimeMs", "allRemovalsTimeMs", "commitTimeMs")


@dataclass(frozen=True)
class Variant:
    """Settings on top of the product's: ``session`` needs its own SparkContext,
    ``sql`` is set on the session for the run's query only."""

    session: dict[str, str] = field(default_factory=dict)
    sql: dict[str, str] = field(default_factory=dict)
    noop: bool = False
    checkpoint_dir: str | None = None  # another data_dir for the checkpoint (comparison)
    source: dict[str, str] | None = None  # instead of streaming.SOURCE_OPTIONS
    java_options: str | None = None  # instead of the product's spark_java_options
    settings: dict[str, Any] = field(default_factory=dict)  # on top of the product's settings


_BEFORE = {"spark.python.daemon.module": "pyspark.daemon"}  # Spark's own daemon
VARIANTS: dict[str, Variant] = {
    "before": Variant(session=_BEFORE, source={}),
    "before-noop": Variant(session=_BEFORE, source={}, noop=True),
    "daemon-only": Variant(source={}),
    "fetch-wait-only": Variant(session=_BEFORE),
    "after": Variant(),
    "after-noop": Variant(noop=True),
    # the state store of a new checkpoint is a setting (IOT_FED_SCORER_STATE_STORE)
    "rocksdb": Variant(settings={"scorer_state_store": "rocksdb"}),
    "hdfs-store": Variant(settings={"scorer_state_store": "hdfs"}),
    "rocksdb-changelog": Variant(
        settings={"scorer_state_store": "rocksdb"},
        sql={"spark.sql.streaming.stateStore.rocksdb.changelogCheckpointing.enabled": "true"},
    ),
    "shm-checkpoint": Variant(checkpoint_dir="/dev/shm/iot_fed_bench_scorer"),
    "no-arrow-collect": Variant(sql={"spark.sql.execution.arrow.pyspark.enabled": "false"}),
    "retain-10": Variant(sql={"spark.sql.streaming.minBatchesToRetain": "10"}),
    "no-worker-reuse": Variant(session={"spark.python.worker.reuse": "false"}),
    "c2-jit": Variant(java_options=""),  # the JVM's default tiered JIT (C1 then C2)
    "c1-jit": Variant(java_options=C1),
}


def readings(n: int, start_epoch: int = 0) -> pd.DataFrame:
    i = np.arange(n)
    epoch = start_epoch + i // MOTES
    return pd.DataFrame(
        {
            "ts": pd.Timestamp("2030-01-01", tz="UTC") + pd.to_timedelta(epoch * 31.0, unit="s"),
            "epoch": epoch,
            "moteid": i % MOTES + 1,
            "temperature": 21 + np.sin(epoch / 30),
            "humidity": 38 + np.cos(epoch / 30),
            "light": 120.0 + i % 3,
            "voltage": 2.68 - epoch * 1e-5,
            "label": None,
        }
    )


def promoted_bundle(settings: Any) -> ModelBundle:
    """A randomly initialised model of the product's spec, calibrated on clean readings."""
    spec = ModelSpec(window=settings.model_window)
    df = readings(MOTES * 80)
    feats = {}
    for mote, part in df.groupby("moteid"):
        ts_ms = (part["ts"].astype("int64") // 1_000_000).to_numpy()
        vals = part[list(CHANNELS)].to_numpy(np.float64)
        feats[int(mote)], _ = window_features(ts_ms, vals, len(part), spec.window_config())
    params = {
        k: {m: np.asarray(v) for m, v in layer.items()} for k, layer in init_params(spec, 0).items()
    }
    bundle = ModelBundle(
        spec, params, feature_stats(np.concatenate(list(feats.values()))).normalizer()
    )
    calibrate_bundle(bundle, feats, 0.999)
    return bundle


def noop_scorer(*_a: Any, **_k: Any):
    def run(_key: Any, pdfs: Any, _state: Any) -> Iterator[pd.DataFrame]:
        for _ in pdfs:
            pass
        return iter(())

    return run


def jvm_tree_cpu_s() -> float:
    """CPU seconds used so far by the gateway JVM and its children (the Python workers)."""
    from pyspark import SparkContext

    return tree_cpu_s(SparkContext._gateway.proc.pid)  # type: ignore[union-attr]


def fresh_jvm() -> None:
    """Stop pyspark's gateway JVM so that the next session launches a new one (JVM
    options only apply at launch)."""
    from pyspark import SparkContext

    if SparkContext._active_spark_context is not None:
        SparkContext._active_spark_context.stop()
    gw = SparkContext._gateway
    if gw is not None:
        gw.shutdown()
        gw.proc.stdin.close()  # type: ignore[attr-defined]
        gw.proc.wait(30)  # type: ignore[attr-defined]
    SparkContext._gateway = None  # type: ignore[assignment]
    SparkContext._jvm = None  # type: ignore[assignment]


def one(
    spark: Any,
    settings: Any,
    bundle: ModelBundle,
    rate: float,
    seconds: float,
    parts: int,
    variant: Variant,
) -> dict:
    noop = variant.noop
    tag = uuid.uuid4().hex[:8]
    update: dict[str, Any] = {
        "mongodb_database": f"bench_scorer_{tag}",
        "kafka_topic": f"bench_scorer_{tag}",
        "scorer_state_partitions": parts,
        **variant.settings,
    }
    if variant.checkpoint_dir:
        update["data_dir"] = Path(variant.checkpoint_dir)
    s = settings.model_copy(update=update)
    db = connect(s.mongodb_uri, s.mongodb_database)
    init_database(db)
    save_global_model(db, bundle.to_bytes(), threshold=bundle.threshold, promoted=True)
    ensure_topics(s, [s.kafka_topic])
    previous = {k: spark.conf.get(k, None) for k in variant.sql}
    for k, v in variant.sql.items():
        spark.conf.set(k, v)
    real, source = streaming.stateful_scorer, streaming.SOURCE_OPTIONS
    if noop:
        streaming.stateful_scorer = noop_scorer
    if variant.source is not None:
        streaming.SOURCE_OPTIONS = variant.source
    try:
        run = streaming.start_streaming_evaluation(
            spark,
            s,
            topic=s.kafka_topic,
            checkpoint_name=f"bench_{tag}",
            trigger_seconds=settings.scorer_trigger_s,
        )
    finally:
        streaming.stateful_scorer, streaming.SOURCE_OPTIONS = real, source
        for k, v in previous.items():
            spark.conf.unset(k) if v is None else spark.conf.set(k, v)
    time.sleep(3)
    producer = Producer(producer_config(s))
    rows = readings(int(rate * seconds) + MOTES).to_dict("records")
    cpu0 = jvm_tree_cpu_s()
    t0, n = time.time(), 0
    promoted_at: float | None = None
    while time.time() - t0 < seconds and n < len(rows):
        if promoted_at is None and not noop and time.time() - t0 > seconds / 2:
            # a new version mid-stream: how long until the first prediction made with it
            save_global_model(db, bundle.to_bytes(), threshold=bundle.threshold, promoted=True)
            promoted_at = time.time()
        r = rows[n]
        producer.produce(s.kafka_topic, encode_reading(r), encode_key(r["moteid"]))
        producer.poll(0)
        n += 1
        wait = t0 + n / rate - time.time()
        if wait > 0:
            time.sleep(wait)
    producer.flush(30)
    deadline = time.time() + 120
    while time.time() < deadline and db.predictions.estimated_document_count() < (0 if noop else n):
        time.sleep(0.5)
    if noop:
        time.sleep(3)  # the last readings' micro-batch
    cores = (jvm_tree_cpu_s() - cpu0) / (time.time() - t0)
    progress = run.query.recentProgress
    run.stop()
    per_batch = max(run.counts.batches, 1)
    if variant.checkpoint_dir:
        shutil.rmtree(run.checkpoint, ignore_errors=True)
    with_data = [p for p in progress if p.get("numInputRows")]
    warm = with_data[2:] or with_data  # the first batches start the Python workers
    durs = [p["durationMs"]["triggerExecution"] for p in warm]
    breakdown = {k: median([p["durationMs"].get(k, 0) for p in warm]) for k in DURATIONS}
    state_ms = {
        k: median([p["stateOperators"][0][k] for p in warm if p.get("stateOperators")])
        for k in STATE_TIMES
    }
    docs = list(db.predictions.find({}, {"scored_at": 1, "kafka_ts": 1}))
    lat = [(d["scored_at"] - d["kafka_ts"]).total_seconds() for d in docs]
    # steady state: the readings produced after the first 10 s (the query's start-up)
    t_steady = t0 + 10
    steady = [
        x
        for x, d in zip(lat, docs, strict=True)
        if d["kafka_ts"].replace(tzinfo=dt.UTC).timestamp() >= t_steady
    ]
    first_v2 = next(
        iter(db.predictions.find({"model_version": 2}).sort("scored_at", 1).limit(1)), None
    )
    promotion_s = (
        None
        if promoted_at is None or first_v2 is None
        else first_v2["scored_at"].replace(tzinfo=dt.UTC).timestamp() - promoted_at
    )
    db.client.drop_database(s.mongodb_database)
    delete_topics(s, [s.kafka_topic])
    return {
        "rate": rate,
        "state_partitions": parts,
        "stateful_fn": "noop" if noop else "score",
        "sent": n,
        "predictions": len(lat),
        "batches": len(with_data),
        "batch_ms_median": median(durs),
        "batch_ms_p90": float(np.percentile(durs, 90)) if durs else None,
        "duration_ms_median": breakdown,
        "state_operator_ms_median": state_ms,
        # driver side of addBatch, mean per micro-batch: the Spark job, the MongoDB writes
        "collect_ms_mean": run.counts.collect_ms / per_batch,
        "store_ms_mean": run.counts.store_ms / per_batch,
        "latency_p50_s": float(np.percentile(lat, 50)) if lat else None,
        "latency_p99_s": float(np.percentile(lat, 99)) if lat else None,
        "latency_p99_steady_s": float(np.percentile(steady, 99)) if steady else None,
        "promotion_to_first_prediction_s": promotion_s,
        "jvm_tree_cores": cores,
    }


def _session_key(v: Variant) -> tuple[tuple[str, str], ...]:
    jvm = () if v.java_options is None else (("java_options", v.java_options),)
    return tuple(sorted(v.session.items())) + jvm


def summarize(rows: list[dict]) -> list[dict]:
    """Per (variant, rate): the median over rounds of each figure."""
    out = []
    keys = sorted({(r["variant"], r["rate"]) for r in rows}, key=lambda k: (k[1], k[0]))
    for name, rate in keys:
        rs = [r for r in rows if r["variant"] == name and r["rate"] == rate]

        def med(get: Any, rs: list[dict] = rs) -> float | None:
            return median([x for x in (get(r) for r in rs) if x is not None])

        out.append(
            {
                "variant": name,
                "rate": rate,
                "rounds": len(rs),
                "batch_ms_median": med(lambda r: r["batch_ms_median"]),
                "latency_p50_s": med(lambda r: r["latency_p50_s"]),
                "latency_p99_s": med(lambda r: r["latency_p99_s"]),
                "latency_p99_steady_s": med(lambda r: r["latency_p99_steady_s"]),
                "collect_ms_mean": med(lambda r: r["collect_ms_mean"]),
                "jvm_tree_cores": med(lambda r: r["jvm_tree_cores"]),
                "store_ms_mean": med(lambda r: r["store_ms_mean"]),
                "duration_ms_median": {
                    k: med(lambda r, k=k: r["duration_ms_median"][k]) for k in DURATIONS
                },
                "state_operator_ms_median": {
                    k: med(lambda r, k=k: r["state_operator_ms_median"][k]) for k in STATE_TIMES
                },
            }
        )
    return out


def print_summary(summary: list[dict]) -> None:
    """One row per (rate, variant): medians over the rounds."""
    f = lambda x: "-" if x is None else f"{x:.0f}"  # noqa: E731
    g = lambda x: "-" if x is None else f"{x:.2f}"  # noqa: E731
    rows = []
    for r in summary:
        d, so = r["duration_ms_median"], r["state_operator_ms_median"]
        rows.append(
            [
                f"{r['rate']:.0f}",
                r["variant"],
                f(r["batch_ms_median"]),
                f"{g(r['latency_p50_s'])}/{g(r['latency_p99_s'])}",
                g(r["latency_p99_steady_s"]),
                "/".join(f(d[k]) for k in DURATIONS[:6]),
                "/".join(f(so[k]) for k in STATE_TIMES),
                f"{f(r['collect_ms_mean'])}/{f(r['store_ms_mean'])}",
                g(r["jvm_tree_cores"]),
            ]
        )
    head = [
        "rate",
        "variant",
        "batch ms",
        "e2e p50/p99 s",
        "p99 st",
        "trigger/addBatch/plan/wal/commit/latest ms",
        "py new/timeout/state commit ms",
        "collect/store ms",
        "JVM+workers cores",
    ]
    print_table("The streaming scorer alone", head, rows)


def _cost_in(root: Path, devices: int, buckets: int | None) -> dict[str, Any]:
    """:func:`scorer_python_cost.measure` in a child process on the checkout at ``root``
    (its ``iot_fed``; this bench's code)."""
    cmd = [sys.executable, __file__, "--python-cost-one", str(devices)]
    cmd += ["--buckets", str(buckets)] if buckets else ["--one-per-mote"]
    env = {**os.environ, "PYTHONPATH": str(root)}
    got = subprocess.run(cmd, env=env, cwd=root, check=True, capture_output=True, text=True)
    return json.loads(got.stdout.strip().splitlines()[-1])


def python_cost(args: argparse.Namespace) -> None:
    """The ``python_cost`` section (see :mod:`scorer_python_cost`): this checkout per mote
    and in buckets, and with ``--baseline DIR`` another checkout's buckets (``git worktree
    add DIR <commit>``), each in its own process, alternating per device count."""
    devices = [int(d) for d in args.devices.split(",")]
    if args.quick:
        devices = [200]
    checkouts = {"this": Path(__file__).resolve().parents[1]}
    if args.baseline:
        checkouts["baseline"] = args.baseline.resolve()
    rows = []
    for n in devices:
        runs = [("this", None)] if args.per_mote else []
        runs += [(code, args.buckets) for code in checkouts]
        for code, buckets in runs:
            rows.append({"code": code, **_cost_in(checkouts[code], n, buckets)})
            print(json.dumps({k: v for k, v in rows[-1].items() if k != "batch_ms"}), flush=True)
    print_table(
        "The stateful step's Python cost per micro-batch (one reading per device)",
        ["code", "devices", "grouping", "Python calls", "batch ms", "ms per device"],
        [
            [
                r["code"],
                r["devices"],
                r["grouping"],
                r["python_calls"],
                f"{r['batch_ms_median']:.0f}",
                f"{r['ms_per_device']:.3f}",
            ]
            for r in rows
        ],
    )
    write_results("scorer", {"python_cost": {"rows": rows}}, quick=args.quick)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rates", default="10,1000")
    ap.add_argument("--variants", default="before,before-noop,after,after-noop")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--partitions", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=40)
    ap.add_argument("--section", default="variants", help="the results section written")
    ap.add_argument(
        "--quick", action="store_true", help="tiny: one variant, 10 rec/s, 8 s, no warm-up"
    )
    ap.add_argument(
        "--python-cost",
        action="store_true",
        help="the stateful step alone: Python ms per device per micro-batch, per-mote groups "
        "vs buckets (section python_cost; no services needed)",
    )
    ap.add_argument("--devices", default="1000,10000", help="--python-cost only")
    ap.add_argument("--buckets", type=int, default=64, help="--python-cost only")
    ap.add_argument(
        "--baseline", type=Path, default=None, help="--python-cost only: another checkout too"
    )
    ap.add_argument(
        "--no-per-mote",
        dest="per_mote",
        action="store_false",
        help="--python-cost only: skip the per-mote grouping (slow at 10,000 devices)",
    )
    ap.add_argument("--python-cost-one", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--one-per-mote", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--against-running", action="store_true", help="measure a running make run")
    ap.add_argument("--api-requests", type=int, default=300, help="--against-running only")
    ap.add_argument("--skip-promotion", action="store_true", help="--against-running only")
    args = ap.parse_args()
    if args.quick:
        args.variants, args.rates, args.seconds, args.rounds = "after", "10", 8.0, 1
    if args.python_cost_one is not None:  # a child of --python-cost: one measurement
        settings = load_settings()
        buckets = None if args.one_per_mote else args.buckets
        got = measure(
            promoted_bundle(settings), args.python_cost_one, buckets, settings.model_window, 3
        )
        print(json.dumps(got))
        return 0
    if args.python_cost:
        python_cost(args)
        return 0
    if args.against_running:
        res = against_running(args.rates, args.seconds, args.api_requests, args.skip_promotion)
        if res is not None:
            write_results("scorer", {"running": res}, quick=args.quick)
        return 0
    names = args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        ap.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    rates = [float(r) for r in args.rates.split(",")]
    settings = load_settings()
    bundle = promoted_bundle(settings)
    groups: dict[tuple, list[str]] = {}
    for n in names:
        groups.setdefault(_session_key(VARIANTS[n]), []).append(n)
    rows = []
    for rnd in range(args.rounds):
        order = list(groups.items())
        if rnd % 2:
            order.reverse()
        for key, members in order:
            conf = dict(key)
            java = conf.pop("java_options", None)
            s = (
                settings
                if java is None
                else settings.model_copy(update={"spark_java_options": java})
            )
            fresh_jvm()  # every group in its own JVM: JVM options and JIT state per group
            spark = build_session(s, "bench_scorer", **conf)
            try:
                if not args.quick:  # warm-up (JVM, Python workers): not reported
                    v = VARIANTS[members[0]]
                    one(spark, settings, bundle, 10, 15.0, args.partitions, v)
                for rate in rates:
                    for n in members if rnd % 2 == 0 else members[::-1]:
                        row = one(
                            spark,
                            settings,
                            bundle,
                            rate,
                            args.seconds,
                            args.partitions,
                            VARIANTS[n],
                        )
                        rows.append({"variant": n, "round": rnd, **row})
                        print(json.dumps(rows[-1]), flush=True)
            finally:
                spark.stop()
    summary = summarize(rows)
    print_summary(summary)
    write_results(
        "scorer",
        {
            args.section: {
                "trigger_s": settings.scorer_trigger_s,
                "variants": {
                    n: {
                        "session": v.session,
                        "sql": v.sql,
                        "source": v.source,
                        "noop": v.noop,
                        "checkpoint_dir": v.checkpoint_dir,
                        "java_options": v.java_options,
                        "settings": v.settings,
                    }
                    for n, v in VARIANTS.items()
                    if n in names
                },
                "summary": summary,
                "runs": rows,
            }
        },
        quick=args.quick,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
