"""The server half of a round in the product: aggregate the newest healthy local models
with :func:`iot_fed.fl.rounds.server_update` (aggregation, normaliser, thresholds on the
held-out readings of every device with a local model, validation verdict), store the new
version, and (separately) promote."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pymongo.database import Database

from iot_fed.config import Settings
from iot_fed.federation.bundles import ModelLoadError, load_bundle, load_promoted
from iot_fed.federation.calibration import FleetCalibration, split_fleet
from iot_fed.federation.health import local_model_health, promotion_verdict
from iot_fed.federation.windows import validation_windows
from iot_fed.fl.normalization import SufficientStats
from iot_fed.fl.pytrees import stack_params
from iot_fed.fl.rounds import ClientUpdate, ServerConfig, server_update
from iot_fed.fl.serialization import ModelBundle
from iot_fed.store import repository as repo

VALIDATION_PER_DEVICE = 500


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


def _as_utc(t: dt.datetime) -> dt.datetime:
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


def aggregate_global_model(db: Database, settings: Settings, seed: int = 0) -> GlobalOutcome:
    """Aggregate local models newer than the latest global version into a new version.

    The new version is stored unpromoted with lineage and validation metrics; promotion is
    :func:`promote_if_better` (the Dagster layer runs it behind a blocking asset check).
    """
    promoted_model = load_promoted(db)  # the parent: what the new version must not be worse than
    promoted = promoted_model[0] if promoted_model else None
    latest = repo.latest_global_model(db)
    since = _as_utc(latest["created_at"]) if latest else None
    candidates = repo.latest_local_models(db, fresher_than=since)
    rejected: dict[str, str] = {}
    healthy: list[tuple[dict[str, Any], ModelBundle]] = []
    for device, doc in sorted(candidates.items(), key=lambda kv: int(kv[0])):
        ok, why = local_model_health(doc)
        if not ok:
            rejected[device] = why
            continue
        healthy.append((doc, load_bundle(doc, f"local model of device {device}")))
    parent_version = int(promoted["version"]) if promoted else None
    if not healthy:
        return GlobalOutcome(
            None,
            parent_version,
            rejected=rejected,
            reason="no new healthy local models since the latest global version",
        )
    spec = healthy[0][1].spec
    parent = promoted_model[1] if promoted_model else None
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
    # judged and calibrated on the whole fleet's held-out readings, not only this round's
    # devices: the version serves every device (a round of two devices once set a threshold
    # that flagged 94 % of the others' readings, and passed its gate on those two alone)
    fleet = [int(d) for d in repo.local_model_devices(db)]  # this round's devices among them
    held_out = validation_windows(db, fleet, VALIDATION_PER_DEVICE, spec)
    scfg = ServerConfig.from_settings(settings)
    out = server_update(update, held_out, spec, scfg, parent=parent, prior_stats=prior, seed=seed)
    bundle = out.bundle
    total = float(update.n_samples.sum())
    lineage = [
        {
            "device": doc["device"],
            "version": int(doc["version"]),
            "n_samples": int(doc["n_samples"]),
            "weight": float(doc["n_samples"]) / total,
        }
        for doc, _ in healthy
    ]
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
        "threshold_quantile": out.thresholds.quantile,
    }
    agg = scfg.aggregation
    doc = repo.save_global_model(
        db,
        bundle.to_bytes(),
        lineage=lineage,
        strategy=agg.strategy,
        parent_version=parent_version,
        threshold=float(bundle.threshold),
        calibrated_devices=bundle.device_thresholds,
        metrics=metrics,
        config={
            "strategy": agg.strategy,
            "trim_ratio": agg.trim_ratio,
            "dp_clip_norm": agg.dp_clip_norm,
            "dp_noise_multiplier": agg.dp_noise_multiplier,
            "false_alarms_per_device_day": scfg.false_alarms_per_device_day,
            "spec": spec.to_dict(),
        },
    )
    return GlobalOutcome(
        int(doc["version"]),
        parent_version,
        len(healthy),
        rejected,
        metrics,
        "stored",
        split_fleet(int(doc["version"]), bundle.device_thresholds, fleet),
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
