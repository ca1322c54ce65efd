"""``iot-fed spark install|evaluate|predict`` and ``iot-fed spark-stream``."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from iot_fed.config import get_settings


def _cmd_install(args: argparse.Namespace) -> int:
    from iot_fed.analytics.jars import SparkJarsError, install_spark_jars, spark_jar_paths

    settings = get_settings()
    try:
        folder = install_spark_jars(settings, force=args.force)
    except SparkJarsError as exc:
        print(f"iot-fed spark install: {exc}", file=sys.stderr)
        return 1
    print(f"Spark connector jars in {folder}:")
    for p in spark_jar_paths(settings):
        print(f"  {p.name}")
    from iot_fed.analytics.jvm_archive import build_archive

    try:  # an optimisation: Spark runs without it, only slower to start
        print(f"Spark JVM class archive: {build_archive(settings)}")
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        print(f"iot-fed spark install: no JVM class archive ({exc})", file=sys.stderr)
    return 0


def _session(app: str):
    from iot_fed.analytics.session import build_session

    return build_session(get_settings(), app)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from iot_fed.analytics.evaluation import evaluation_report

    spark = _session("iot_fed-evaluate")
    try:
        report = evaluation_report(spark, get_settings(), global_version=args.version)
    finally:
        spark.stop()
    print(report.per_device.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(json.dumps(report.summary, indent=2, default=str))
    print(f"plot: {report.plot_path}\nparquet: {report.parquet_path}")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from iot_fed.analytics.predictions import write_predictions

    spark = _session("iot_fed-predict")
    try:
        result = write_predictions(spark, get_settings(), model_version=args.version)
    finally:
        spark.stop()
    print(json.dumps(result.summary(), indent=2))
    return 0


def _cmd_stream(args: argparse.Namespace) -> int:
    from iot_fed.analytics.streaming import run_streaming_evaluation, streaming_evaluation

    settings = get_settings()
    spark = _session("iot_fed-spark-stream")
    try:
        if args.reset_checkpoint:
            from iot_fed.analytics.checkpoint import reset_checkpoint

            print(json.dumps(reset_checkpoint(spark, settings, args.checkpoint), indent=2))
            return 0
        if args.available_now:
            counts = streaming_evaluation(
                spark, settings, topic=args.topic, checkpoint_name=args.checkpoint
            )
        else:
            print(
                f"streaming evaluation of {args.topic or settings.kafka_topic} "
                f"every {args.trigger_seconds:g}s; Ctrl-C stops",
                flush=True,
            )
            counts = run_streaming_evaluation(
                spark,
                settings,
                topic=args.topic,
                checkpoint_name=args.checkpoint,
                trigger_seconds=args.trigger_seconds,
                max_offsets_per_trigger=args.max_offsets_per_trigger,
            )
    finally:
        spark.stop()
    print(json.dumps(counts.summary(), indent=2))
    return 0


def _guard(func):
    def run(args: argparse.Namespace) -> int:
        from iot_fed.analytics.checkpoint import CheckpointMismatchError
        from iot_fed.analytics.jars import SparkJarsError
        from iot_fed.analytics.models import ModelNotAvailableError
        from iot_fed.store import StoreConnectionError

        try:
            return func(args)
        except (
            CheckpointMismatchError,
            ModelNotAvailableError,
            SparkJarsError,
            StoreConnectionError,
        ) as exc:
            print(f"iot-fed: {exc}", file=sys.stderr)
            return 1

    return run


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``spark`` (install / evaluate / predict) and ``spark-stream`` to ``iot-fed``."""
    p = subparsers.add_parser("spark", help="Spark analytics: connector jars, batch jobs")
    sub = p.add_subparsers(dest="spark_command", required=True)
    sp = sub.add_parser(
        "install",
        help="fetch the Spark Kafka connector jars (Maven; cached) and build the JVM class archive",
    )
    sp.add_argument("--force", action="store_true", help="fetch again even if cached")
    sp.set_defaults(func=_guard(_cmd_install))
    sp = sub.add_parser("evaluate", help="batch evaluation report (global vs local models)")
    sp.add_argument("--version", type=int, help="global model version (default: promoted)")
    sp.set_defaults(func=_guard(_cmd_evaluate))
    sp = sub.add_parser("predict", help="score all readings, upsert predictions")
    sp.add_argument("--version", type=int, help="global model version (default: promoted)")
    sp.set_defaults(func=_guard(_cmd_predict))

    s = subparsers.add_parser("spark-stream", help="streaming evaluation: Kafka -> predictions")
    s.add_argument("--topic", help="Kafka topic (default: IOT_FED_KAFKA_TOPIC)")
    s.add_argument(
        "--checkpoint",
        default="streaming_evaluation",
        help="checkpoint name under IOT_FED_SCORER_CHECKPOINT (default <data_dir>/checkpoints)",
    )
    s.add_argument(
        "--reset-checkpoint",
        action="store_true",
        help="move the checkpoint aside; the next run starts from its committed offsets "
        "with the current state settings (the devices' scoring context restarts)",
    )
    s.add_argument("--trigger-seconds", type=float, default=1.0, help="micro-batch interval")
    s.add_argument(
        "--max-offsets-per-trigger",
        type=int,
        help="cap records per micro-batch (default IOT_FED_SCORER_MAX_OFFSETS_PER_TRIGGER)",
    )
    s.add_argument(
        "--available-now", action="store_true", help="process what is in the topic now, then stop"
    )
    s.set_defaults(func=_guard(_cmd_stream))
