"""Spark batch benchmark (not a test): batch scoring throughput and the evaluation report.

1. ``batch``: N synthetic readings in a cached Spark DataFrame, scored with the global model
   per mote by ``groupBy(moteid).applyInPandas`` (``score_device`` over each mote's window
   features, broadcast blob) and aggregated; versus the same scoring in plain numpy in one
   process. Goal: >= 100,000 readings/s on 2 cores.
2. ``report``: one ``evaluation_report`` as Dagster runs it, in a fresh process and JVM,
   per JVM variant (:mod:`spark_report`): wall time and CPU of the process tree.

Streaming latency is ``bench_scorer.py``'s question. Needs the local services
(``iot-fed services up``) and the connector jars (``iot-fed spark install``). Prints
tables, writes ``bench/results/spark.json`` (sections ``batch``, ``report``).

    .venv/bin/python bench/bench_spark.py [--parts batch,report] [--quick]
        [--readings 1000000] [--repeats 3] [--report-readings 20000] [--report-repeat 3]
        [--variants c2-jit,c1-jit,c1-cds]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
import pandas as pd
from common import parts_parser, print_table, run_parts
from pyspark.sql import functions as F
from spark_report import VARIANTS, report

from iot_fed.analytics.batch_scoring import score_devices, score_per_device
from iot_fed.analytics.models import bundle_from_blob
from iot_fed.analytics.session import build_session
from iot_fed.config import load_settings
from iot_fed.fl.rounds import calibrate_bundle, feature_stats
from iot_fed.fl.serialization import ModelBundle
from iot_fed.fl.spec import ModelSpec
from iot_fed.fl.stream_scoring import CHANNELS
from iot_fed.fl.window_features import window_features


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


def batch(args: argparse.Namespace) -> dict[str, Any]:
    """Part 1: Spark vs numpy batch scoring of ``--readings`` readings."""
    settings = load_settings()
    spark = build_session(settings, "iot_fed-bench", **{"spark.master": args.master})
    spec = ModelSpec.from_settings(settings)
    df = synthetic(args.readings)
    bundle = make_model(df, spec)
    try:
        b = bench_batch(spark, df, bundle, args.repeats)
    finally:
        spark.stop()
    print_table(
        "Batch scoring",
        ["metric", "value", "goal"],
        [
            ["batch readings", b["readings"], ""],
            ["spark applyInPandas readings/s", b["spark_readings_per_s"], ">= 100000"],
            ["numpy single-process readings/s", b["numpy_readings_per_s"], ""],
            ["spark / numpy throughput ratio", b["spark_over_numpy"], ""],
        ],
    )
    return {"model": spec.to_dict(), "spark_master": args.master, **b}


PARTS = {
    "batch": batch,
    "report": lambda a: report(a.report_readings, a.report_repeat, a.variants.split(",")),
}


def main() -> None:
    ap = parts_parser(__doc__, PARTS, "tiny: 20k readings, one report")
    ap.add_argument("--readings", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--master", default="local[2]", help="Spark master (2 cores by default)")
    ap.add_argument("--report-readings", type=int, default=20_000)
    ap.add_argument("--report-repeat", type=int, default=3)
    ap.add_argument("--variants", default=",".join(VARIANTS), help="report JVM variants")
    args = ap.parse_args()
    if args.quick:
        args.readings, args.repeats = 20_000, 1
        args.report_readings, args.report_repeat, args.variants = 2000, 1, "c1-cds"
    run_parts("spark", PARTS, args)


if __name__ == "__main__":
    main()
