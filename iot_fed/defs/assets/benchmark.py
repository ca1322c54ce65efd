"""``anomaly_benchmark``: detection quality of federated vs local vs centralised vs baselines."""

import base64
import json
from typing import Any

import dagster as dg

from iot_fed.defs.resources import SettingsResource


class AnomalyBenchmarkConfig(dg.Config):
    """Size of the run; the defaults keep it to a few minutes on 2 cores."""

    motes: int = 12
    days: float = 1.5
    rounds: int = 5
    failing_motes: int = 2
    sensitivity_magnitudes: list[float] = [0.25, 0.5, 1.0, 2.0]
    """Fault magnitudes of the sensitivity sweep (1.0: the benchmark's injector); empty:
    no sweep."""


@dg.asset(
    group_name="evaluation",
    description="Fault-injection benchmark: event recall / delay per fault type, false "
    "alarms per device-day and P/R/F1/PR-AUC/ROC-AUC for the federated window detector, "
    "local-only, centralised and baselines, robustness and DP; score-over-time plot; "
    "sensitivity sweep: event recall against fault magnitude at 1 false incident per "
    "device-day for every method.",
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
    metadata: dict[str, Any] = {
        "report": dg.MetadataValue.md(markdown),
        "score_plot": dg.MetadataValue.md(f"![scores](data:image/png;base64,{img})"),
        "score_plot_path": dg.MetadataValue.path(str(png)),
        "json_path": dg.MetadataValue.path(str(out_dir / "anomaly_benchmark.json")),
        "motes": config.motes,
        "rounds": config.rounds,
    }
    if config.sensitivity_magnitudes:
        from iot_fed.evaluation.plots import plot_sensitivity
        from iot_fed.evaluation.sensitivity import SweepConfig, run_sensitivity

        sweep = SweepConfig(
            bench=cfg,
            magnitudes=tuple(sorted(set(config.sensitivity_magnitudes))),
            incidents_per_device_day=s.false_alarms_per_device_day,
            quiet_s=s.incident_quiet_s,
        )
        results["sensitivity"], sens_md = run_sensitivity(sweep)
        sens_png = plot_sensitivity(results["sensitivity"], out_dir / "sensitivity.png")
        sens_img = base64.b64encode(sens_png.read_bytes()).decode()
        markdown += "\n" + sens_md
        metadata["sensitivity"] = dg.MetadataValue.md(sens_md)
        metadata["sensitivity_plot"] = dg.MetadataValue.md(
            f"![recall vs magnitude](data:image/png;base64,{sens_img})"
        )
        metadata["sensitivity_plot_path"] = dg.MetadataValue.path(str(sens_png))
    (out_dir / "anomaly_benchmark.json").write_text(json.dumps(results, indent=2, default=str))
    (out_dir / "anomaly_benchmark.md").write_text(markdown)
    context.log.info("anomaly benchmark written to %s", out_dir)
    return dg.MaterializeResult(metadata=metadata)
