"""``anomaly_benchmark``: detection quality of federated vs local vs centralised vs baselines."""

import base64
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
    description="Fault-injection benchmark: event recall / delay per fault type, false "
    "alarms per device-day and P/R/F1/PR-AUC/ROC-AUC for the federated window detector, "
    "local-only, centralised and baselines, robustness and DP; score-over-time plot.",
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
        failing=(config.failing_motes,),
        work_dir=out_dir / "work",
    )
    results, markdown = run_detection_benchmark(cfg)
    from iot_fed.evaluation.plots import plot_scores

    png = plot_scores(results["plot"], out_dir / "anomaly_scores.png")
    img = base64.b64encode(png.read_bytes()).decode()
    (out_dir / "anomaly_benchmark.json").write_text(json.dumps(results, indent=2, default=str))
    (out_dir / "anomaly_benchmark.md").write_text(markdown)
    context.log.info("anomaly benchmark written to %s", out_dir)
    return dg.MaterializeResult(
        metadata={
            "report": dg.MetadataValue.md(markdown),
            "score_plot": dg.MetadataValue.md(f"![scores](data:image/png;base64,{img})"),
            "score_plot_path": dg.MetadataValue.path(str(png)),
            "json_path": dg.MetadataValue.path(str(out_dir / "anomaly_benchmark.json")),
            "motes": config.motes,
            "rounds": config.rounds,
        }
    )
