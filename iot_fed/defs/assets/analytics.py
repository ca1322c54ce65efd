"""Spark analytics assets: evaluation report, predictions (dagster-pyspark's
``PySparkResource`` as ``pyspark``, made by ``PySparkFactory``).

The analytics modules are imported inside the assets: every Dagster run process loads this
code location, and only runs of these assets need pyspark's Python side."""

import base64

import dagster as dg

from iot_fed.defs.resources import MongoDBResource, PySparkParam


def _png_markdown(path) -> dg.MetadataValue:
    data = base64.b64encode(path.read_bytes()).decode()
    alt = "error and anomaly rate per device"
    return dg.MetadataValue.md(f"![{alt}](data:image/png;base64,{data})")


class EvaluationReportConfig(dg.Config):
    """``version``: the global version to evaluate (default: the promoted one)."""

    version: int | None = None


@dg.asset(
    deps=["promoted_model"],
    group_name="analytics",
    description="Batch evaluation in Spark: promoted global model vs each device's newest "
    "local model (MSE/MAE, anomaly rate, precision/recall/F1 where labelled).",
)
def evaluation_report(
    context: dg.AssetExecutionContext,
    config: EvaluationReportConfig,
    pyspark: PySparkParam,
    mongodb: MongoDBResource,
) -> dg.MaterializeResult:
    from iot_fed.analytics.evaluation import evaluation_report as build_report

    rep = build_report(pyspark.spark_session, mongodb.settings(), global_version=config.version)
    context.log.info("evaluation report %s", rep.report_id)
    return dg.MaterializeResult(
        metadata={
            **{k: v for k, v in rep.summary.items() if v is not None},
            "per_device": dg.MetadataValue.md(rep.per_device.to_markdown(index=False)),
            "plot": _png_markdown(rep.plot_path),
            "plot_path": dg.MetadataValue.path(str(rep.plot_path)),
            "parquet_path": dg.MetadataValue.path(str(rep.parquet_path)),
        }
    )


@dg.asset(
    deps=["promoted_model"],
    group_name="analytics",
    description="Anomaly score and flag of the promoted global model for every stored "
    "reading, written to MongoDB predictions idempotently.",
)
def predictions(pyspark: PySparkParam, mongodb: MongoDBResource) -> dg.MaterializeResult:
    from iot_fed.analytics.predictions import write_predictions

    res = write_predictions(pyspark.spark_session, mongodb.settings())
    return dg.MaterializeResult(metadata=res.summary())
