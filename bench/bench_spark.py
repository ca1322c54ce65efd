"""Spark analytics benchmark (not a test): batch scoring throughput and streaming latency.

1. Batch: N synthetic readings in a cached Spark DataFrame, scored with the global model
   per mote by ``groupBy(moteid).applyInPandas`` (``score_device`` over each mote's window
   features, broadcast blob) and aggregated; versus the same scoring in plain numpy in one
   process. Goal: >= 100,000 readings/s on 2 cores.
2. Streaming: a real Kafka topic fed at ``--rate`` records/s for ``--seconds``; the
   streaming evaluation query (processing-time trigger) scores and stores predictions in
   MongoDB. Latency = stored time - produce time: a reading counts as stored when the
   predictions count first covers it (polled every 50 ms; records are produced in order),
   so the MongoDB write is included; cross-checked with each prediction's ``created_at``
   (taken just before its bulk write). Goal: p99 < 5 s.

Needs the local services (``iot-fed services up``) and the connector jars
(``iot-fed spark install``). Prints a table, writes ``bench/results/spark.json``.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from confluent_kafka import Producer
from pymongo import MongoClient
from pyspark.sql import functions as F

from iot_fed.analytics.batch_scoring import score_devices, score_per_device
from iot_fed.analytics.models import bundle_from_blob
from iot_fed.analytics.session import build_session
from iot_fed.analytics.streaming import start_streaming_evaluation
from iot_fed.config import load_settings
from iot_fed.evaluation.report import machine_info
from iot_fed.fl.rounds import calibrate_bundle, feature_stats
from iot_fed.fl.serialization import ModelBundle
from iot_fed.fl.spec import ModelSpec
from iot_fed.fl.stream_scoring import CHANNELS
from iot_fed.fl.window_features import window_features
from iot_fed.store import init_database, save_global_model
from iot_fed.stream.admin import delete_topics, ensure_topics
from iot_fed.stream.kafka_config import producer_config
from iot_fed.stream.messages import encode_key, encode_reading

RESULTS = Path(__file__).parent / "results" / "spark.json"


def synthetic(n: int, motes: int = 54, seed: int = 0) -> pd.DataFrame:
    """Readings with unique (moteid, ts): ms-spaced timestamps round-robin over motes."""
    rng = np.random.default_rng(seed)
    i = np.arange(n)
    return pd.DataFrame(
        {
            "ts": pd.Timestamp("2004-03-01", tz="UTC") + pd.to_timedelta(i, unit="ms"),
            "epoch": i // motes,
            "moteid": (i % motes + 1).astype(np.int32),
            "temperature": 20 + rng.normal(0, 2, n),
            "humidity": 40 + rng.normal(0, 5, n),
            "light": 200 + rng.normal(0, 50, n),
            "voltage": 2.6 + rng.normal(0, 0.05, n),
            "label": [None] * n,
        }
    )


def make_model(df: pd.DataFrame, spec: ModelSpec) -> ModelBundle:
    rng = np.random.default_rng(1)
    sizes = spec.sizes
    params = {
        f"layer_{k}": {
            "w": rng.uniform(-1, 1, (sizes[k], sizes[k + 1])).astype(np.float32)
            / np.sqrt(sizes[k]),
            "b": np.zeros(sizes[k + 1], np.float32),
        }
        for k in range(len(sizes) - 1)
    }
    sample = df[df["moteid"] <= 8].sort_values(["moteid", "epoch"])
    feats = {}
    for mote, part in sample.groupby("moteid"):
        ts_ms = (part["ts"].astype("int64") // 1_000_000).to_numpy()
        vals = part[list(CHANNELS)].to_numpy(np.float64)
        feats[int(mote)], _ = window_features(ts_ms, vals, len(part), spec.window_config())
    norm = feature_stats(np.concatenate(list(feats.values()))).normalizer()
    bundle = ModelBundle(spec, params, norm)
    calibrate_bundle(bundle, feats, 0.99)
    return bundle


def bench_batch(spark, df: pd.DataFrame, bundle: ModelBundle, repeats: int) -> dict[str, Any]:
    n = len(df)
    numpy_times = []
    for _ in range(repeats):
        t = time.perf_counter()
        score_per_device(bundle, df)
        numpy_times.append(time.perf_counter() - t)
    numpy_s = min(numpy_times)

    sdf = spark.createDataFrame(
        df,
        schema="ts timestamp, epoch long, moteid int, "
        "temperature double, humidity double, light double, "
        "voltage double, label string",
    )
    sdf = sdf.repartition(spark.sparkContext.defaultParallelism * 2).cache()
    sdf.count()
    blob = spark.sparkContext.broadcast(bundle.to_bytes())

    def job():  # a new plan each time: re-collecting one plan would reuse its shuffle files
        threshold = float(bundle.threshold)

        def score(pdf: pd.DataFrame) -> pd.DataFrame:
            return score_devices(bundle_from_blob(blob.value), threshold, pdf)[
                ["moteid", "score", "flag"]
            ].rename(columns={"flag": "is_anomaly"})

        scored = sdf.groupBy("moteid").applyInPandas(
            score, "moteid int, score double, is_anomaly boolean"
        )
        return scored.agg(
            F.count(F.lit(1)).alias("n"), F.sum(F.col("is_anomaly").cast("long"))
        ).collect()[0]

    job()  # warm-up: python workers, imports
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        row = job()
        times.append(time.perf_counter() - t)
    assert row["n"] == n
    blob.unpersist()
    sdf.unpersist()
    spark_s = min(times)
    return {
        "readings": n,
        "spark_seconds": round(spark_s, 3),
        "spark_readings_per_s": round(n / spark_s),
        "numpy_seconds": round(numpy_s, 3),
        "numpy_readings_per_s": round(n / numpy_s),
        "spark_over_numpy": round(numpy_s / spark_s, 3),
        "cores": spark.sparkContext.defaultParallelism,
    }


def bench_stream(
    spark,
    settings,
    bundle: ModelBundle,
    rate: float,
    seconds: float,
    trigger: float,
    write_partitions: int | None,
) -> dict[str, Any]:
    name = f"bench_spark_{uuid.uuid4().hex[:8]}"
    s = settings.model_copy(update={"mongodb_database": name, "kafka_topic": name})
    client: MongoClient = MongoClient(s.mongodb_uri, tz_aware=True)
    db = client[name]
    init_database(db)
    save_global_model(db, bundle.to_bytes(), threshold=bundle.threshold, promoted=True)
    ensure_topics(s, [name])
    total = int(rate * seconds)
    warm = 200
    df = synthetic(warm + total, seed=5)
    values = [(encode_key(r["moteid"]), encode_reading(r)) for r in df.to_dict("records")]
    producer = Producer(producer_config(s, **{"linger.ms": 2}))
    preds = db["predictions"]
    polls: list[tuple[float, int]] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            polls.append((time.time(), preds.count_documents({})))
            time.sleep(0.05)

    run = start_streaming_evaluation(
        spark,
        s,
        topic=name,
        checkpoint_name=name,
        trigger_seconds=trigger,
    )  # write_partitions: the stateful scorer always writes on the driver (kept for the JSON)
    try:
        for k, v in values[:warm]:
            producer.produce(name, v, k)
        producer.flush(30)
        deadline = time.time() + 180
        while preds.estimated_document_count() < warm and time.time() < deadline:
            time.sleep(0.2)
        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        sent = np.zeros(total)
        t0 = time.time()
        for j, (k, v) in enumerate(values[warm:]):
            due = t0 + j / rate
            while (now := time.time()) < due:
                time.sleep(min(due - now, 0.005))
            producer.produce(name, v, k)
            sent[j] = time.time()
            producer.poll(0)
        producer.flush(30)
        deadline = time.time() + 120
        while preds.estimated_document_count() < warm + total and time.time() < deadline:
            time.sleep(0.1)
        stop.set()
        poller.join()
        progress = [p["durationMs"] for p in run.query.recentProgress if p.get("numInputRows")]
    finally:
        run.stop()
        counts = run.counts.summary()
    stored = np.full(total, np.nan)
    poll_t = np.array([p[0] for p in polls])
    poll_n = np.array([p[1] for p in polls])
    # reading j is stored once the count covers warm + j + 1 predictions
    idx = np.searchsorted(np.maximum.accumulate(poll_n), warm + np.arange(total) + 1)
    ok = idx < len(poll_t)
    stored[ok] = poll_t[idx[ok]]
    lat = stored - sent
    done = lat[np.isfinite(lat)]
    # cross-check: the created_at each prediction got just before its bulk write
    created = {d["_id"]: d["created_at"].timestamp() for d in preds.find({}, {"created_at": 1})}
    ids = [
        f"{m}:{int(t.value // 1_000_000)}"
        for m, t in zip(df["moteid"][warm:], df["ts"][warm:], strict=True)
    ]
    lat_created = np.array([created.get(i, np.nan) for i in ids]) - sent
    lat_created = lat_created[np.isfinite(lat_created)]
    if not lat_created.size:
        print("no created_at match", list(created)[:3], ids[:3])
        lat_created = np.array([np.nan])
    client.drop_database(name)
    client.close()
    delete_topics(s, [name])
    return {
        "rate_per_s": rate,
        "seconds": seconds,
        "records": total,
        "stored": int(done.size),
        "trigger_s": trigger,
        "write_partitions": write_partitions,
        "latency_p50_s": round(float(np.percentile(done, 50)), 3) if done.size else None,
        "latency_p99_s": round(float(np.percentile(done, 99)), 3) if done.size else None,
        "latency_max_s": round(float(done.max()), 3) if done.size else None,
        "write_start_latency_p50_s": round(float(np.percentile(lat_created, 50)), 3),
        "write_start_latency_p99_s": round(float(np.percentile(lat_created, 99)), 3),
        "micro_batches": counts["batches"],
        "batch_ms": [int(p.get("triggerExecution", 0)) for p in progress],
        "latency_p99_by_10s": [
            round(float(np.percentile(lat[k : k + int(rate * 10)], 99)), 2)
            for k in range(0, total, int(rate * 10))
        ],
        "batch_ms_p50": {
            k: float(np.median([p.get(k, 0) for p in progress]))
            for k in ("triggerExecution", "addBatch", "latestOffset", "walCommit", "commitOffsets")
        }
        if progress
        else {},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--readings", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rate", type=float, default=1000.0)
    ap.add_argument("--seconds", type=float, default=45.0)
    ap.add_argument("--trigger", type=float, default=1.0)
    ap.add_argument("--master", default="local[2]", help="Spark master (2 cores by default)")
    ap.add_argument(
        "--write-partitions",
        type=int,
        default=1,
        help="streaming tasks per micro-batch (0: on the driver)",
    )
    ap.add_argument("--skip-stream", action="store_true")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()

    settings = load_settings()
    spark = build_session(settings, "iot_fed-bench", **{"spark.master": args.master})
    spec = ModelSpec.from_settings(settings)
    df = synthetic(args.readings)
    bundle = make_model(df, spec)
    results: dict[str, Any] = {
        "machine": machine_info(),
        "model": spec.to_dict(),
        "spark_master": args.master,
    }
    try:
        results["batch"] = bench_batch(spark, df, bundle, args.repeats)
        if not args.skip_stream:
            results["stream"] = bench_stream(
                spark,
                settings,
                bundle,
                args.rate,
                args.seconds,
                args.trigger,
                args.write_partitions,
            )
    finally:
        spark.stop()
    b = results["batch"]
    print(f"\n{'metric':<40}{'value':>16}{'goal':>14}")
    rows = [
        ("batch readings", b["readings"], ""),
        ("spark mapInPandas readings/s", b["spark_readings_per_s"], ">= 100000"),
        ("numpy single-process readings/s", b["numpy_readings_per_s"], ""),
        ("spark / numpy throughput ratio", b["spark_over_numpy"], ""),
    ]
    if "stream" in results:
        st = results["stream"]
        rows += [
            ("stream rate (records/s) x seconds", f"{st['rate_per_s']:g} x {st['seconds']:g}", ""),
            ("stream records stored", f"{st['stored']}/{st['records']}", ""),
            ("stream latency p50 (s)", st["latency_p50_s"], ""),
            ("stream latency p99 (s)", st["latency_p99_s"], "< 5"),
        ]
    for name, value, goal in rows:
        print(f"{name:<40}{value!s:>16}{goal:>14}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
