"""Benchmark: the streaming scorer alone, micro-batch time and end-to-end latency.

Not a test, and no ``make run`` needed (``bench_latency.py`` measures the running
pipeline): with the local services up, each configuration gets a fresh topic, database
(with a small promoted model) and checkpoint; readings for 54 motes are produced at
``--rate`` for ``--seconds`` while the real query (:func:`start_streaming_evaluation`)
scores them; half-way a new global version is promoted (the time to the first prediction
made with it is reported). Compared in one run, round-robin: the scorer's state
partitions (each is a task, a Python worker call and a state-store commit per micro-batch)
and a no-op stateful function (Spark's own floor for a stateful Python micro-batch on this machine).

    .venv/bin/python bench/bench_scorer.py [--rates 10,1000] [--partitions 1,4] [--seconds 40]

Prints a table; writes bench/results/scorer.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from confluent_kafka import Producer

import iot_fed.analytics.streaming as streaming
from iot_fed.analytics.session import build_session
from iot_fed.config import load_settings
from iot_fed.evaluation.report import machine_info
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

RESULTS = Path(__file__).parent / "results" / "scorer.json"
MOTES = 54


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


def one(
    spark: Any,
    settings: Any,
    bundle: ModelBundle,
    rate: float,
    seconds: float,
    parts: int,
    noop: bool,
) -> dict:
    tag = uuid.uuid4().hex[:8]
    s = settings.model_copy(
        update={
            "mongodb_database": f"bench_scorer_{tag}",
            "kafka_topic": f"bench_scorer_{tag}",
            "scorer_state_partitions": parts,
        }
    )
    db = connect(s.mongodb_uri, s.mongodb_database)
    init_database(db)
    save_global_model(db, bundle.to_bytes(), threshold=bundle.threshold, promoted=True)
    ensure_topics(s, [s.kafka_topic])
    real = streaming.stateful_scorer
    if noop:
        streaming.stateful_scorer = noop_scorer
    try:
        run = streaming.start_streaming_evaluation(
            spark,
            s,
            topic=s.kafka_topic,
            checkpoint_name=f"bench_{tag}",
            trigger_seconds=settings.scorer_trigger_s,
        )
    finally:
        streaming.stateful_scorer = real
    time.sleep(3)
    producer = Producer(producer_config(s))
    rows = readings(int(rate * seconds) + MOTES).to_dict("records")
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
    progress = run.query.recentProgress
    run.stop()
    durs = [p["durationMs"]["triggerExecution"] for p in progress if p.get("numInputRows")]
    warm = durs[2:] or durs  # the first batches start the Python workers
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
        "batches": len(durs),
        "batch_ms_median": float(np.median(warm)) if warm else None,
        "batch_ms_p90": float(np.percentile(warm, 90)) if warm else None,
        "latency_p50_s": float(np.percentile(lat, 50)) if lat else None,
        "latency_p99_s": float(np.percentile(lat, 99)) if lat else None,
        "latency_p99_steady_s": float(np.percentile(steady, 99)) if steady else None,
        "promotion_to_first_prediction_s": promotion_s,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rates", default="10,1000")
    ap.add_argument("--partitions", default="1,4")
    ap.add_argument("--seconds", type=float, default=40)
    args = ap.parse_args()
    settings = load_settings()
    spark = build_session(settings, "bench_scorer")
    bundle = promoted_bundle(settings)
    one(spark, settings, bundle, 10, 15, 1, False)  # warm-up (JVM, Python workers): not reported
    rows = []
    for rate in [float(r) for r in args.rates.split(",")]:
        configs = [(int(p), False) for p in args.partitions.split(",")] + [(1, True)]
        for parts, noop in configs:
            rows.append(one(spark, settings, bundle, rate, args.seconds, parts, noop))
            print(json.dumps(rows[-1]), flush=True)
    spark.stop()
    head = (
        "rate",
        "fn",
        "parts",
        "batches",
        "batch ms p50/p90",
        "e2e p50/p99 s",
        "p99 steady",
        "promotion s",
    )
    widths = (6, 6, 5, 7, 17, 14, 10, 11)
    print("\n" + " ".join(f"{h:>{w}}" for h, w in zip(head, widths, strict=True)))
    for r in rows:
        b = f"{r['batch_ms_median'] or 0:.0f}/{r['batch_ms_p90'] or 0:.0f}"
        e = (
            "-"
            if r["latency_p50_s"] is None
            else f"{r['latency_p50_s']:.2f}/{r['latency_p99_s']:.2f}"
        )
        st = "-" if r["latency_p99_steady_s"] is None else f"{r['latency_p99_steady_s']:.2f}"
        cells = (
            f"{r['rate']:.0f}",
            r["stateful_fn"],
            r["state_partitions"],
            r["batches"],
            b,
            e,
            st,
        )
        print(" ".join(f"{c!s:>{w}}" for c, w in zip(cells, widths, strict=True)))
    RESULTS.write_text(
        json.dumps(
            {"machine": machine_info(), "trigger_s": settings.scorer_trigger_s, "runs": rows},
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
