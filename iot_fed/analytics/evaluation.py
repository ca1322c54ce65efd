"""Batch evaluation report: the promoted global model versus each device's local model.

Every stored reading is scored inside Spark (``mapInPandas`` over the numpy scorer, model
blobs broadcast); Spark sums per device; the report (per-device table + fleet summary)
goes to MongoDB ``evaluation_reports``, Parquet and a PNG plot under the data dir.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from iot_fed.analytics.batch_scoring import EVAL_SCHEMA, evaluation_scorer
from iot_fed.analytics.metrics import fleet_summary, per_device_table
from iot_fed.analytics.models import load_global_model, load_local_models
from iot_fed.analytics.plots import plot_per_device
from iot_fed.analytics.readings import MongoTarget, read_readings
from iot_fed.config import Settings
from iot_fed.store import save_evaluation_report

log = logging.getLogger(__name__)


@dataclass
class EvaluationReport:
    """What ``evaluation_report`` produced (and where it stored it)."""

    report_id: str
    summary: dict[str, Any]
    per_device: pd.DataFrame
    plot_path: Path
    parquet_path: Path
    details: dict[str, Any] = field(default_factory=dict)


def reports_dir(settings: Settings) -> Path:
    return settings.data_dir / "reports" / "evaluation"


def device_sums(scored: DataFrame) -> pd.DataFrame:
    """Per device: counts and sums for both models (``<model>_<n|n_faults|sum_*|...>``)."""
    fault = F.col("is_fault")
    has_local = F.col("has_local")

    def n_true(cond) -> F.Column:
        return F.sum(F.when(cond, 1).otherwise(0)).cast("long")

    return (
        scored.groupBy("moteid")
        .agg(
            F.count(F.lit(1)).alias("global_n"),
            n_true(fault).alias("global_n_faults"),
            F.sum("g_mse").alias("global_sum_mse"),
            F.sum("g_mae").alias("global_sum_mae"),
            n_true(F.col("g_flag")).alias("global_n_flagged"),
            n_true(F.col("g_flag") & fault).alias("global_tp"),
            n_true(has_local).alias("local_n"),
            n_true(has_local & fault).alias("local_n_faults"),
            F.sum("l_mse").alias("local_sum_mse"),
            F.sum("l_mae").alias("local_sum_mae"),
            n_true(has_local & F.col("l_flag")).alias("local_n_flagged"),
            n_true(has_local & F.col("l_flag") & fault).alias("local_tp"),
        )
        .toPandas()
    )


def _flat(prefix: str, metrics: dict[str, Any]) -> dict[str, Any]:
    return {f"{prefix}_{k}": v for k, v in metrics.items()}


def evaluation_report(
    spark: SparkSession,
    settings: Settings,
    *,
    global_version: int | None = None,
    out_dir: Path | None = None,
    save: bool = True,
) -> EvaluationReport:
    """Score all readings with the global model (``global_version``, default the promoted
    one) and each device's newest local model; return and store the report.

    ``summary`` is flat (scalars only: metadata-friendly); ``per_device`` has one row per
    device with ``global_*`` and ``local_*`` metrics (mse, mae, anomaly_rate, precision,
    recall, f1; local ones null where a device has no local model).
    """
    t0 = time.monotonic()
    target = MongoTarget.from_settings(settings)
    db = target.connect()
    try:
        global_model = load_global_model(db, global_version)
        local_models = load_local_models(db)
        created = dt.datetime.now(dt.UTC)
        report_id = f"eval-g{global_model.version}-{created:%Y%m%dT%H%M%S%fZ}"
        sc = spark.sparkContext
        g_blob = sc.broadcast(global_model.blob)
        l_blobs = sc.broadcast({m: (lm.blob, lm.threshold) for m, lm in local_models.items()})
        try:
            readings = read_readings(spark, settings)
            scored = readings.mapInPandas(
                evaluation_scorer(g_blob, global_model.threshold, l_blobs), EVAL_SCHEMA
            )
            sums = device_sums(scored)
        finally:
            g_blob.unpersist()
            l_blobs.unpersist()
        if sums.empty:
            raise ValueError(
                f"no readings in {settings.mongodb_database}.sensor_readings to evaluate"
            )
        labelled = bool(sums["global_n_faults"].sum() > 0)
        local_versions = {m: lm.version for m, lm in local_models.items()}
        table = per_device_table(sums, local_versions, labelled)
        fleet = fleet_summary(sums, labelled)
        summary: dict[str, Any] = {
            "report_id": report_id,
            "global_version": global_model.version,
            "global_threshold": global_model.threshold,
            "n_readings": int(sums["global_n"].sum()),
            "n_devices": len(sums),
            "n_devices_with_local_model": int((sums["local_n"] > 0).sum()),
            "has_labels": labelled,
            **_flat("global", fleet["global"]),
            **_flat("local", fleet["local"]),
            **_flat("global_on_local_devices", fleet["global_on_local_devices"]),
        }
        out = (out_dir or reports_dir(settings)) / report_id
        out.mkdir(parents=True, exist_ok=True)
        parquet_path = out / "per_device.parquet"
        table.to_parquet(parquet_path, index=False)
        plot_path = plot_per_device(
            table,
            out / "per_device.png",
            f"global v{global_model.version} vs local models ({summary['n_readings']} readings)",
        )
        summary["seconds"] = round(time.monotonic() - t0, 3)
        if save:
            save_evaluation_report(
                db,
                {
                    "report_id": report_id,
                    "created_at": created,
                    "global_version": global_model.version,
                    "local_versions": {str(m): v for m, v in local_versions.items()},
                    "summary": summary,
                    "fleet": fleet,
                    "devices": table.to_dict("records"),
                    "parquet_path": str(parquet_path),
                    "plot_path": str(plot_path),
                },
            )
    finally:
        db.client.close()
    log.info(
        "evaluation report %s: %d readings, %d devices in %.1fs",
        report_id,
        summary["n_readings"],
        summary["n_devices"],
        summary["seconds"],
    )
    return EvaluationReport(
        report_id,
        summary,
        table,
        plot_path,
        parquet_path,
        {"fleet": fleet, "local_versions": local_versions},
    )
