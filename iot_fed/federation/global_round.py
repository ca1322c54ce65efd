"""Aggregate the newest healthy local models into a new global version, validate it on the
held-out set against the promoted version, and (separately) promote it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pymongo.database import Database

from iot_fed.config import Settings
from iot_fed.federation.bundles import FEATURE_STD_FLOOR, ModelLoadError, load_bundle
from iot_fed.federation.health import local_model_health, promotion_verdict
from iot_fed.federation.windows import DeviceWindow, validation_windows
from iot_fed.fl.aggregation import AggregationConfig
from iot_fed.fl.normalization import Normalizer, SufficientStats
from iot_fed.fl.pytrees import stack_params
from iot_fed.fl.scoring import (
    calibrate_threshold,
    combine_thresholds,
    forward_numpy,
    score_batch,
)
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


def _as_utc(t: dt.datetime) -> dt.datetime:
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


def reference_error(bundle: ModelBundle, features: np.ndarray, ref: Normalizer) -> np.ndarray:
    """Per-reading reconstruction error in the units of ``ref``: the model reconstructs in
    its own normalisation, the error is measured in the reference one, so two versions with
    different normalisers are compared fairly."""
    n_out = bundle.spec.n_outputs
    z = bundle.norm.apply(features)
    recon = forward_numpy(bundle.params, z, bundle.spec.activation)
    recon_raw = recon * bundle.norm.std[:n_out] + bundle.norm.mean[:n_out]
    err = (recon_raw - features[:, :n_out]) / ref.std[:n_out]
    return np.mean(np.square(err), axis=1)


def validation_loss(
    bundle: ModelBundle, windows: Sequence[DeviceWindow], ref: Normalizer, quantile: float
) -> tuple[float, float | None, int]:
    """Mean held-out error (reference units), the global threshold (sample-weighted mean of
    the devices' score quantiles in the model's own units) and the number of readings."""
    windows = [w for w in windows if w.n]
    if not windows or bundle.norm is None:
        return float("nan"), None, 0
    feats = np.concatenate([w.features for w in windows])
    err = reference_error(bundle, feats, ref)
    loss = float(np.mean(err)) if np.all(np.isfinite(err)) else float("inf")
    quantiles = [calibrate_threshold(score_batch(bundle, w.features), quantile) for w in windows]
    thr = combine_thresholds(quantiles, [w.n for w in windows])
    return loss, thr, int(feats.shape[0])


def _accumulated_stats(
    promoted: dict[str, Any] | None, local_docs: Sequence[dict[str, Any]]
) -> SufficientStats:
    """Feature statistics of every window that reached a global model so far: the parent's
    running total plus the new local models' sufficient statistics (counts, sums, sums of
    squares; never raw readings). The normaliser follows the fleet as data arrives."""
    parts = [SufficientStats.from_dict(d["metrics"]["stats"]) for d in local_docs]
    if promoted and "norm_stats" in (promoted.get("metrics") or {}):
        parts.append(SufficientStats.from_dict(promoted["metrics"]["norm_stats"]))
    return SufficientStats.total(parts)


def aggregate_global_model(db: Database, settings: Settings, seed: int = 0) -> GlobalOutcome:
    """Aggregate local models newer than the latest global version into a new version.

    The new version is stored unpromoted with lineage and validation metrics; promotion is
    :func:`promote_if_better` (the Dagster layer runs it behind a blocking asset check).
    """
    promoted = repo.promoted_global_model(db)
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
    parent = load_bundle(promoted, "promoted global model") if promoted else None
    if parent is not None and parent.spec != healthy[0][1].spec:
        raise ModelLoadError(f"promoted global model version {parent_version} has another spec")
    weights = np.array([doc["n_samples"] for doc, _ in healthy], np.float64)
    agg_cfg = AggregationConfig.from_settings(settings)
    params, info = agg_cfg.aggregate(
        stack_params([b.params for _, b in healthy]),
        weights,
        global_params=parent.params if parent else None,
        seed=seed,
    )
    norm_stats = _accumulated_stats(promoted, [doc for doc, _ in healthy])
    norm = norm_stats.normalizer(FEATURE_STD_FLOOR)
    devices = [doc["device"] for doc, _ in healthy]
    bundle = ModelBundle(healthy[0][1].spec, params, norm)
    held_out = list(
        validation_windows(db, [int(d) for d in devices], VALIDATION_PER_DEVICE).values()
    )
    q = settings.threshold_quantile
    val_loss, threshold, n_val = validation_loss(bundle, held_out, norm, q)
    if threshold is None:  # no held-out data yet: fall back to the devices' thresholds
        threshold = combine_thresholds([doc["threshold"] for doc, _ in healthy], weights)
    bundle.threshold = threshold
    parent_val = validation_loss(parent, held_out, norm, q)[0] if parent else None
    total = float(weights.sum())
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
        "norm_stats": norm_stats.to_dict(),
        "val_loss": val_loss,
        "parent_val_loss": parent_val,
        "n_validation": n_val,
        "train_loss_after": float(
            np.average([doc["metrics"]["loss_after"] for doc, _ in healthy], weights=weights)
        ),
        "rejected_local_models": rejected,
        "aggregation": info,
    }
    doc = repo.save_global_model(
        db,
        bundle.to_bytes(),
        lineage=lineage,
        strategy=agg_cfg.strategy,
        parent_version=parent_version,
        threshold=float(threshold),
        metrics=metrics,
        config={
            "strategy": agg_cfg.strategy,
            "trim_ratio": agg_cfg.trim_ratio,
            "dp_clip_norm": agg_cfg.dp_clip_norm,
            "dp_noise_multiplier": agg_cfg.dp_noise_multiplier,
            "spec": bundle.spec.to_dict(),
        },
    )
    return GlobalOutcome(
        int(doc["version"]), parent_version, len(healthy), rejected, metrics, "stored"
    )


def promote_if_better(db: Database, version: int, tolerance: float) -> tuple[bool, str]:
    """Promote ``version`` when :func:`promotion_verdict` allows it."""
    doc = repo.get_global_model(db, version)
    if doc is None:
        raise ModelLoadError(f"global model version {version} does not exist")
    ok, why = promotion_verdict(doc, tolerance)
    if ok:
        repo.promote(db, version)
    return ok, why
