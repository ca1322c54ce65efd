"""Federated model assets: ``local_model[shard]`` -> ``global_model`` -> ``promoted_model``.

``local_model`` is partitioned by training shard (decision 0009): a shard run trains the
shard's devices in one vmapped JAX call; a round is the shard runs, then aggregation.

Hyperparameters are run config (``TrainingConfig``, ``AggregationRunConfig``): unset fields
come from the settings, so the launchpad or ``dagster asset materialize --config`` can
try another strategy or learning rate for one run. The round's code (JAX, numpy, the
store) is imported inside the assets: loading the code location does not pay for it.
"""

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import dagster as dg
from pydantic import Field

from iot_fed.defs.partitions import ROUND_TAG, shards
from iot_fed.defs.resources import MongoDBResource, SettingsResource
from iot_fed.defs.rounds import round_shards
from iot_fed.defs.settings_fields import config_class, overrides

if TYPE_CHECKING:
    from iot_fed.federation.calibration import FleetCalibration
    from iot_fed.federation.outcomes import DeviceOutcome

LOCAL_HEALTH_CHECK = "params_finite_loss_not_diverging"
PROMOTION_CHECK = "not_worse_than_promoted"
RETRY = dg.RetryPolicy(max_retries=2, delay=2, backoff=dg.Backoff.EXPONENTIAL)
"""Transient failures (a store or broker hiccup) are retried; the round is idempotent."""

TRAINING_FIELDS = (
    "model_hidden",
    "model_activation",
    "optimizer",
    "learning_rate",
    "local_epochs",
    "batch_size",
    "fedprox_mu",
    "training_window",
    "seed",
)
AGGREGATION_FIELDS = (
    "aggregation_strategy",
    "trim_ratio",
    "dp_clip_norm",
    "dp_noise_multiplier",
    "seed",
)

TrainingConfig = config_class(
    "TrainingConfig",
    dg.Config,
    TRAINING_FIELDS,
    "Model and local-training hyperparameters of one run (unset: from the settings).",
    __name__,
)
AggregationRunConfig = config_class(
    "AggregationRunConfig",
    dg.Config,
    AGGREGATION_FIELDS,
    "Aggregation hyperparameters of one run (unset: from the settings).",
    __name__,
)


TABLE_DEVICES = 60
"""Up to this many devices, run and calibration metadata carry a per-device table."""


def _fmt(x: float | None) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4g}"


def outcomes_table(outcomes: Sequence["DeviceOutcome"]) -> str:
    """The run's devices as a Markdown table, at most ``TABLE_DEVICES`` rows: skipped and
    unhealthy devices first (the devices needing a look); every device's result is in
    ``local_models`` (docs/decisions/0009)."""
    rows = [
        "| device | version | samples | loss before | loss after | threshold | note |",
        "|---|---|---|---|---|---|---|",
    ]
    shown = sorted(outcomes, key=lambda o: not (o.skipped or o.unhealthy))[:TABLE_DEVICES]
    rows += [
        f"| {o.device} | {o.version or ''} | {o.n_samples} | {_fmt(o.loss_before)} | "
        f"{_fmt(o.loss_after)} | {_fmt(o.threshold)} | {o.skipped or o.unhealthy or ''} |"
        for o in shown
    ]
    if len(outcomes) > len(shown):
        rows.append(f"\n{len(outcomes) - len(shown)} more devices: the local_models collection")
    return "\n".join(rows)


def round_metadata(record: Mapping[str, Any]) -> dict[str, Any]:
    """A round's shards as a global version's metadata (lists, a few hundred keys at most)."""
    return {
        "round": record["round"],
        "shards_included": record["shards_included"] or "none",
        "shards_failed": record["shards_failed"] or "none",
        "shards_missing": record["shards_missing"] or "none",
    }


def calibration_metadata(
    cal: "FleetCalibration", held_out: Mapping[int, int] | None = None
) -> dict[str, Any]:
    """Devices calibrated vs learning under a version: counts, the (capped) learning
    devices, and per device state and held-out windows when the fleet is small."""
    summary = cal.summary()
    meta: dict[str, Any] = {
        "devices_calibrated": summary["calibrated"],
        "devices_learning": summary["learning"],
        "learning_devices": summary["learning_devices"] or "none",
    }
    fleet = sorted((*cal.calibrated, *cal.learning))
    if len(fleet) <= TABLE_DEVICES:
        own = set(cal.calibrated)
        # with held_out: what the version was calibrated on, per device
        extra = held_out is not None
        rows = [
            "| device | state |" + (" held-out windows |" if extra else ""),
            "|---|---|" + ("---|" if extra else ""),
        ]
        for d in fleet:
            n = f" {held_out.get(d, 0)} |" if held_out is not None else ""
            rows.append(f"| {d} | {'calibrated' if d in own else 'learning'} |{n}")
        meta["device_states"] = dg.MetadataValue.md("\n".join(rows))
    return meta


class ShardRunConfig(TrainingConfig):
    """A shard run's hyperparameters, and optionally the devices it trains."""

    devices: list[int] | None = Field(
        None,
        description="train only these devices of the shard (retraining one device is a "
        "shard run with this field) [default: every device of the shard with readings "
        "landed since its last model]",
    )


def shard_counts(outcomes: Sequence["DeviceOutcome"]) -> dict[str, int]:
    """A shard run's results as counts (never a row per device)."""
    return {
        "devices_in_run": len(outcomes),
        "devices_trained": sum(o.version is not None for o in outcomes),
        "devices_skipped": sum(o.skipped is not None for o in outcomes),
        "devices_unhealthy": sum(o.unhealthy is not None for o in outcomes),
    }


@dg.asset(
    partitions_def=shards,
    group_name="federation",
    deps=["sensor_readings"],
    retry_policy=RETRY,
    check_specs=[
        dg.AssetCheckSpec(
            LOCAL_HEALTH_CHECK,
            asset="local_model",
            blocking=True,
            description="parameters finite, loss not diverging",
        )
    ],
    description="The anomaly models of one training shard's devices, each trained on its "
    "readings since its last version, warm-started from the promoted global model, in one "
    "vmapped call. Stored per device in local_models.",
)
def local_model(
    context: dg.AssetExecutionContext,
    config: ShardRunConfig,
    mongodb: MongoDBResource,
    settings: SettingsResource,
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    from iot_fed.federation.shard_round import train_shard  # JAX: training runs only

    shard = context.partition_key
    s = settings.get(**overrides(config, TRAINING_FIELDS))
    outcomes = train_shard(mongodb.db, shard, s, config.devices, seed=s.seed)
    trained = [o for o in outcomes if o.version is not None]
    counts = shard_counts(outcomes)
    context.log.info("%s: %s (one vmapped call)", shard, counts)
    unhealthy = {o.device: o.unhealthy for o in trained if o.unhealthy}
    yield dg.MaterializeResult(
        metadata={
            **counts,
            "samples": sum(o.n_samples for o in trained),
            "base_global_version": trained[0].base_version if trained else None,
            "models": dg.MetadataValue.md(outcomes_table(outcomes)),
        }
    )
    yield dg.AssetCheckResult(
        check_name=LOCAL_HEALTH_CHECK,
        passed=not unhealthy,
        metadata={
            "unhealthy": len(unhealthy),
            "unhealthy_devices": dict(list(unhealthy.items())[:TABLE_DEVICES]) or "none",
            "checked": len(trained),
        },
    )


@dg.asset(
    deps=[dg.AssetDep("local_model", partition_mapping=dg.AllPartitionMapping())],
    group_name="federation",
    output_required=False,
    retry_policy=RETRY,
    description="A new global version aggregated (FedAvg / median / trimmed mean, optional DP) "
    "from the newest healthy local models; stored unpromoted with lineage.",
)
def global_model(
    context: dg.AssetExecutionContext,
    config: AggregationRunConfig,
    mongodb: MongoDBResource,
    settings: SettingsResource,
) -> Iterator[dg.MaterializeResult]:
    from iot_fed.federation.global_round import aggregate_global_model

    s = settings.get(**overrides(config))
    round_id = context.run.tags.get(ROUND_TAG)
    record = round_shards(context.instance, round_id).record() if round_id else None
    out = aggregate_global_model(mongodb.db, s, seed=s.seed, round_record=record)
    if out.rejected:
        context.log.warning("local models left out: %s", out.rejected)
    if out.version is None:
        context.log.info("no new global version: %s", out.reason)
        return
    m = out.metrics
    yield dg.MaterializeResult(
        metadata={
            "version": out.version,
            "parent_version": out.parent_version,
            "devices": out.n_devices,
            "strategy": s.aggregation_strategy,
            "val_loss": m["val_loss"],
            "parent_val_loss": m["parent_val_loss"],
            "train_loss_after": m["train_loss_after"],
            "rejected_local_models": out.rejected or "none",
            **(round_metadata(record) if record else {}),
            "dp": {"clip_norm": s.dp_clip_norm, "noise_multiplier": s.dp_noise_multiplier},
            **(calibration_metadata(out.calibration, out.held_out) if out.calibration else {}),
        },
        data_version=dg.DataVersion(str(out.version)),
    )


@dg.asset_check(
    asset=global_model,
    blocking=True,
    name=PROMOTION_CHECK,
    description="held-out validation loss within promotion_tolerance of the "
    "promoted version, threshold calibrated on at least min_calibration_windows held-out "
    "windows; then a replay on the fleet's newest held-out readings: alarm rate at most "
    "promotion_alarm_factor x false_alarms_per_device_day, F1 on injected faults at most "
    "promotion_max_f1_drop below the promoted version's; otherwise the version stays "
    "unpromoted",
)
def not_worse_than_promoted(
    mongodb: MongoDBResource, settings: SettingsResource
) -> dg.AssetCheckResult:
    from iot_fed.federation.health import promotion_verdict
    from iot_fed.federation.replay_check import replay_check
    from iot_fed.store import repository as repo

    db = mongodb.db
    doc = repo.latest_global_model(db)
    if doc is None:
        return dg.AssetCheckResult(passed=False, metadata={"reason": "no global model stored"})
    version = int(doc["version"])
    ok, why = promotion_verdict(doc)
    meta: dict[str, Any] = {"version": version}
    if ok:  # the round's verdict passed: replay what the version would do
        r = replay_check(db, version, settings.get())
        ok, why = promotion_verdict(repo.get_global_model(db, version) or doc)
        meta |= replay_metadata(r.to_dict())
    return dg.AssetCheckResult(
        passed=ok,
        metadata={**meta, "verdict": why},
        description=None if ok else f"version {version} refused: {why}",
    )


def replay_metadata(r: Mapping[str, Any]) -> dict[str, Any]:
    """The replay's figures as check metadata (absent figures as empty text)."""
    return {
        "replay_ok": bool(r["ok"]),
        "replay_reason": r["reason"],
        "replay_alarm_rate": _fmt(r["alarm_rate"]),
        "replay_alarm_limit": float(r["alarm_limit"]),
        "replay_incidents": int(r["incidents"]),
        "replay_flagged_rate": _fmt(r["flagged_rate"]),
        "replay_device_days": float(r["device_days"]),
        "replay_held_out_readings": int(r["held_out_readings"]),
        "replay_devices_judged": int(r["devices_judged"]),
        "replay_devices_learning": int(r["devices_learning"]),
        "replay_f1": _fmt(r["f1"]),
        "replay_promoted_f1": _fmt(r["promoted_f1"]),
        "replay_against_version": r["against_version"],
        "replay_fault_readings": int(r["fault_readings"]),
        "replay_skipped": "; ".join(r["skipped"]) or "none",
    }


@dg.asset(
    deps=[global_model],
    group_name="federation",
    description="The global version that serves predictions (promoted if it passed the check).",
)
def promoted_model(
    context: dg.AssetExecutionContext, mongodb: MongoDBResource
) -> dg.MaterializeResult:
    from iot_fed.federation.calibration import fleet_calibration
    from iot_fed.federation.global_round import promote_if_better
    from iot_fed.store import repository as repo

    db = mongodb.db
    latest = repo.latest_global_model(db)
    if latest is None:
        raise dg.Failure("no global model to promote yet")
    ok, why = promote_if_better(db, int(latest["version"]))
    context.log.info("version %s: %s", latest["version"], why)
    cal = fleet_calibration(db)  # what the scorers serve now: calibrated vs learning
    return dg.MaterializeResult(
        metadata={
            "candidate_version": latest["version"],
            "promoted": ok,
            "verdict": why,
            "promoted_version": cal.version if cal else None,
            **(calibration_metadata(cal) if cal else {}),
        }
    )
