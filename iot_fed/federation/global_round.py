"""The server half of a round in the product: aggregate the newest healthy local models
with :func:`iot_fed.fl.rounds.server_update` (aggregation, normaliser, thresholds on the
held-out readings of every device with a local model, validation verdict), store the new
version, and (separately) promote."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pymongo.database import Database

from iot_fed.config import Settings
from iot_fed.federation.bundles import ModelLoadError, load_bundle, load_promoted
from iot_fed.federation.calibration import FleetCalibration, span_epochs, split_fleet
from iot_fed.federation.device_params import LINEAGE_CAP, split
from iot_fed.federation.health import local_model_health, promotion_verdict
from iot_fed.federation.windows import VALIDATION_PER_DEVICE, validation_samples
from iot_fed.fl.normalization import SufficientStats
from iot_fed.fl.pytrees import stack_params
from iot_fed.fl.rounds import ClientUpdate, ServerConfig, server_update
from iot_fed.fl.serialization import ModelBundle
from iot_fed.store import repository as repo


@dataclass
class GlobalOutcome:
    """A stored global version, or why none was made (``version`` None)."""

    version: int | None
    parent_version: int | None = None
    n_devices: int = 0
    rejected: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    reason: str = ""
    calibration: FleetCalibration | None = None
    """The fleet (devices with a local model) split into calibrated and learning."""
    held_out: dict[int, int] = field(default_factory=dict)
    """Held-out windows per device the thresholds were calibrated on."""


@dataclass
class RoundInputs:
    """Everything a round reads, in one batched load (:func:`load_round`)."""

    promoted: tuple[dict[str, Any], ModelBundle] | None
    healthy: list[tuple[dict[str, Any], ModelBundle]]
    rejected: dict[str, str]
    fleet: list[int]
    """Every device with a local model: the version serves them all."""
    held_out: dict[int, np.ndarray]
    held_epochs: dict[int, np.ndarray] = field(default_factory=dict)
    """The epochs of ``held_out``'s rows: how much data time each device's sample spans."""


def calibrated_span(
    thresholds: dict[int, float], held_epochs: dict[int, np.ndarray], min_epochs: float
) -> tuple[dict[int, float], list[int]]:
    """The device thresholds whose held-out sample spans ``min_epochs``, and the devices
    left learning for want of it (a model that has not seen a whole day calibrated on
    night readings flags the morning)."""

    def spans(m: int) -> bool:
        ep = held_epochs.get(m)
        return ep is not None and ep.size > 0 and float(ep.max() - ep.min()) >= min_epochs

    kept = {m: t for m, t in thresholds.items() if spans(m)}
    return kept, sorted(m for m in thresholds if m not in kept)


def load_round(db: Database) -> RoundInputs:
    """The promoted version (with its per-device params), the newest local models since
    the latest global version, the fleet and its held-out samples: a fixed number of
    queries per batch of devices."""
    promoted = load_promoted(db)  # the parent: what the new version must not be worse than
    since = repo.latest_global_created_at(db)
    candidates = repo.latest_local_models(db, fresher_than=since)
    rejected: dict[str, str] = {}
    healthy: list[tuple[dict[str, Any], ModelBundle]] = []
    for device, doc in sorted(candidates.items(), key=lambda kv: int(kv[0])):
        ok, why = local_model_health(doc)
        if not ok:
            rejected[device] = why
            continue
        healthy.append((doc, load_bundle(doc, f"local model of device {device}")))
    # judged and calibrated on the whole fleet's held-out readings, not only this round's
    # devices: the version serves every device (a round of two devices once set a threshold
    # that flagged 94 % of the others' readings, and passed its gate on those two alone)
    fleet = [int(d) for d in repo.local_model_devices(db)] if healthy else []
    spec = healthy[0][1].spec if healthy else None
    held = validation_samples(db, fleet, VALIDATION_PER_DEVICE, spec) if spec else {}
    return RoundInputs(
        promoted,
        healthy,
        rejected,
        fleet,
        {m: f for m, (_, f) in held.items()},
        {m: ep for m, (ep, _) in held.items()},
    )


def aggregate_global_model(
    db: Database,
    settings: Settings,
    seed: int = 0,
    round_record: Mapping[str, Any] | None = None,
) -> GlobalOutcome:
    """Aggregate local models newer than the latest global version into a new version:
    one batched load (:func:`load_round`), the server update in :mod:`iot_fed.fl`, one
    batched save (the per-device params, then the version document).

    ``round_record``: the round's shards (included, failed, missing), stored with the version
    as ``metrics.round``. The new version is stored unpromoted with lineage and validation
    metrics; promotion is
    :func:`promote_if_better` (the Dagster layer runs it behind a blocking asset check).
    """
    inputs = load_round(db)
    promoted = inputs.promoted[0] if inputs.promoted else None
    parent_version = int(promoted["version"]) if promoted else None
    healthy, rejected = inputs.healthy, inputs.rejected
    if not healthy:
        return GlobalOutcome(
            None,
            parent_version,
            rejected=rejected,
            reason="no new healthy local models since the latest global version",
        )
    spec = healthy[0][1].spec
    parent = inputs.promoted[1] if inputs.promoted else None
    if parent is not None and parent.spec != spec:
        raise ModelLoadError(f"promoted global model version {parent_version} has another spec")
    nan = np.full(len(healthy), np.nan)
    update = ClientUpdate(
        moteids=tuple(int(doc["device"]) for doc, _ in healthy),
        params=stack_params([b.params for _, b in healthy]),
        n_samples=np.array([doc["n_samples"] for doc, _ in healthy], np.float64),
        loss_before=nan,
        loss_after=np.array([doc["metrics"]["loss_after"] for doc, _ in healthy], np.float64),
        stats=tuple(SufficientStats.from_dict(doc["metrics"]["stats"]) for doc, _ in healthy),
        norm=healthy[0][1].norm,
    )
    prior = None
    if promoted and "norm_stats" in (promoted.get("metrics") or {}):
        prior = SufficientStats.from_dict(promoted["metrics"]["norm_stats"])
    held_out = inputs.held_out
    scfg = ServerConfig.from_settings(settings)
    out = server_update(update, held_out, spec, scfg, parent=parent, prior_stats=prior, seed=seed)
    bundle = out.bundle
    bundle.device_thresholds, short_span = calibrated_span(
        bundle.device_thresholds, inputs.held_epochs, span_epochs(settings.calibration_min_span_h)
    )
    total = float(update.n_samples.sum())
    lineage = {
        int(doc["device"]): {
            "version": int(doc["version"]),
            "n_samples": int(doc["n_samples"]),
            "weight": float(doc["n_samples"]) / total,
        }
        for doc, _ in healthy
    }
    metrics = {
        "norm_stats": out.norm_stats.to_dict(),
        "val_loss": out.val_loss,
        "parent_val_loss": out.parent_val_loss,
        "n_validation": out.n_validation,
        "verdict": {"ok": out.verdict.ok, "reason": out.verdict.reason},
        "train_loss_after": float(np.average(update.loss_after, weights=update.n_samples)),
        "rejected_local_models": rejected,
        "aggregation": out.aggregation,
        "device_thresholds": len(bundle.device_thresholds),
        "learning_short_span": len(short_span),
        "threshold_quantile": out.thresholds.quantile,
    }
    if round_record is not None:
        metrics["round"] = dict(round_record)
    agg = scfg.aggregation
    shared, device_rows = split(bundle, lineage)
    doc = repo.save_global_model(
        db,
        shared.to_bytes(),
        lineage=[{"device": str(m), **e} for m, e in sorted(lineage.items())[:LINEAGE_CAP]],
        strategy=agg.strategy,
        parent_version=parent_version,
        threshold=float(bundle.threshold),
        metrics=metrics,
        config={
            "strategy": agg.strategy,
            "trim_ratio": agg.trim_ratio,
            "dp_clip_norm": agg.dp_clip_norm,
            "dp_noise_multiplier": agg.dp_noise_multiplier,
            "false_alarms_per_device_day": scfg.false_alarms_per_device_day,
            "spec": spec.to_dict(),
        },
        device_params=device_rows,
        devices_aggregated=len(lineage),
    )
    return GlobalOutcome(
        int(doc["version"]),
        parent_version,
        len(healthy),
        rejected,
        metrics,
        "stored",
        split_fleet(int(doc["version"]), bundle.device_thresholds, inputs.fleet),
        {m: len(f) for m, f in held_out.items()},
    )


def promote_if_better(db: Database, version: int) -> tuple[bool, str]:
    """Promote ``version`` when its stored :func:`promotion_verdict` allows it."""
    doc = repo.get_global_model(db, version)
    if doc is None:
        raise ModelLoadError(f"global model version {version} does not exist")
    ok, why = promotion_verdict(doc)
    if ok:
        repo.promote(db, version)
    return ok, why
