"""``anomaly_benchmark``: detection quality of federated vs local vs centralised vs baselines."""

import json

import dagster as dg

from iot_fed.defs.resources import SettingsResource


class AnomalyBenchmarkConfig(dg.Config):
    """Size of the run; the defaults keep it to a few minutes on 2 cores."""

    motes: int = 12
    days: float = 1.5
    rounds: int = 5
    failing_motes: int = 2


@dg.asset(
    group_name="evaluation",
    description="Fault-injection benchmark: precision/recall/"
    "F1/ROC-AUC per fault type for the federated, local-only and centralised models "
    "and rolling z-score / MAD baselines, plus the failing-device experiment.",
)
def anomaly_benchmark(
    context: dg.AssetExecutionContext, config: AnomalyBenchmarkConfig, settings: SettingsResource
) -> dg.MaterializeResult:
    from iot_fed.evaluation.benchmark import DetectionBenchConfig, run_detection_benchmark

    s = settings.get()
    out_dir = s.data_dir / "benchmarks"
    (out_dir / "work").mkdir(parents=True, exist_ok=True)
    cfg = DetectionBenchConfig.from_settings(
        s,
        motes=config.motes,
        days=config.days,
        rounds=config.rounds,
        failing_motes=config.failing_motes,
        work_dir=out_dir / "work",
    )
    results, markdown = run_detection_benchmark(cfg)
    (out_dir / "anomaly_benchmark.json").write_text(json.dumps(results, indent=2, default=str))
    (out_dir / "anomaly_benchmark.md").write_text(markdown)
    context.log.info("anomaly benchmark written to %s", out_dir)
    return dg.MaterializeResult(
        metadata={
            "report": dg.MetadataValue.md(markdown),
            "json_path": dg.MetadataValue.path(str(out_dir / "anomaly_benchmark.json")),
            "motes": config.motes,
            "rounds": config.rounds,
        }
    )
