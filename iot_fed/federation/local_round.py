"""The client half of a round in the product: train a set of devices in one vmapped call
(:func:`iot_fed.fl.rounds.client_update`), warm-started from the promoted global model."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from pymongo.database import Database

from iot_fed.config import Settings
from iot_fed.federation.bundles import ModelLoadError, load_promoted
from iot_fed.federation.health import bundle_health
from iot_fed.federation.outcomes import DeviceOutcome
from iot_fed.federation.windows import DeviceWindow, holdout_fields, training_windows
from iot_fed.fl.compile_cache import enable_compilation_cache
from iot_fed.fl.model import init_params
from iot_fed.fl.rounds import ServerConfig, calibrate_bundle, client_update, initial_normalizer
from iot_fed.fl.serialization import ModelBundle
from iot_fed.fl.spec import ModelSpec
from iot_fed.fl.training import TrainConfig
from iot_fed.store import repository as repo
from iot_fed.store.device_state import read_device_states

DEVICE_CHUNK = 256
"""Devices per vmapped call: a shard run of more trains chunk by chunk on one compiled
shape, so its memory is bounded by the chunk whatever the shard size."""


@dataclass
class StartingPoint:
    """What a round warm-starts from: the promoted global model, or a fresh init."""

    bundle: ModelBundle
    version: int | None


def starting_point(db: Database, spec: ModelSpec, seed: int) -> StartingPoint:
    # the shared weights and fleet normaliser: training reads no device's stored params
    promoted = load_promoted(db, device_params=False)
    if promoted is None:
        params = {
            k: {n: np.asarray(v) for n, v in layer.items()}
            for k, layer in init_params(spec, seed).items()
        }
        return StartingPoint(ModelBundle(spec, params), None)
    doc, bundle = promoted
    if bundle.spec != spec:
        raise ModelLoadError(
            f"promoted global model version {doc['version']} has spec "
            f"{bundle.spec.to_dict()}, settings ask for {spec.to_dict()}"
        )
    return StartingPoint(bundle, int(doc["version"]))


def train_local_models(
    db: Database,
    devices: Sequence[str],
    settings: Settings,
    seed: int = 0,
    new_readings: Mapping[int, int] | None = None,
) -> list[DeviceOutcome]:
    """Train ``devices`` (partition keys = mote ids) on readings since their last model.

    Devices with no new readings keep their current version (``skipped`` says why).
    Each trained device is stored as its next version in ``local_models``, with its own
    thresholds calibrated on its held-out readings of the window, and its held-out sample
    (``device_state``) is extended by those readings. Reads and writes are batched.
    """
    enable_compilation_cache(settings.data_dir / "jax_cache")
    spec = ModelSpec.from_settings(settings)
    cfg = TrainConfig.from_settings(settings, device_chunk=DEVICE_CHUNK)
    quantile = ServerConfig.from_settings(settings).quantile
    # one batched load: the warm start, each device's newest version and trained-through
    # epoch, its readings since then, its kept held-out sample
    start = starting_point(db, spec, settings.seed)
    windows: list[DeviceWindow] = []
    outcomes: list[DeviceOutcome] = []
    last = repo.local_versions(db, devices)
    since = {int(d): last.get(int(d), (0, None))[1] for d in devices}
    found = training_windows(db, since, settings.training_window, spec, new_readings)
    states = read_device_states(db, [int(d) for d in devices if found[int(d)].n])
    for device in devices:
        w = found[int(device)]
        if w.n == 0:
            outcomes.append(
                DeviceOutcome(device, 0, n_faulty=w.n_faulty, skipped="no new usable readings")
            )
        elif not np.isfinite(w.data.train).all(axis=1).any():
            # a new device's first readings lack the context its window features need
            why = "no complete window yet: too few readings for the window context"
            outcomes.append(DeviceOutcome(device, 0, n_faulty=w.n_faulty, skipped=why))
        else:
            windows.append(w)
    if not windows:
        return outcomes
    norm = start.bundle.norm or initial_normalizer([w.data for w in windows])
    upd = client_update(start.bundle.params, norm, [w.data for w in windows], spec, cfg, seed=seed)
    docs, holdouts, health = [], {}, []
    for i, w in enumerate(windows):
        metrics = {
            "loss_before": float(upd.loss_before[i]),
            "loss_after": float(upd.loss_after[i]),
            "n_faulty_excluded": w.n_faulty,
            "stats": upd.stats[i].to_dict(),
            "kafka_offsets": w.offsets,
        }
        own = {w.moteid: upd.device_norms[w.moteid]}
        bundle = ModelBundle(spec, upd.device_params(i), norm, device_norms=own)
        held = {w.moteid: w.data.held_out if len(w.data.held_out) else w.data.train}
        calibrate_bundle(bundle, held, quantile)
        threshold = float(bundle.threshold)
        holdouts[w.moteid] = holdout_fields(states.get(w.moteid), w)
        doc = repo.local_model_doc(
            str(w.moteid),
            bundle.to_bytes(),
            version=last.get(w.moteid, (0, None))[0] + 1,
            n_samples=w.n,
            base_version=start.version,
            last_epoch=w.last_epoch,
            threshold=threshold,
            metrics=metrics,
            config={
                "spec": spec.to_dict(),
                "optimizer": cfg.optimizer,
                "learning_rate": cfg.learning_rate,
                "local_epochs": cfg.local_epochs,
                "batch_size": cfg.batch_size,
                "fedprox_mu": cfg.fedprox_mu,
                "seed": seed,
            },
        )
        docs.append(doc)
        health.append(bundle_health(bundle, metrics))  # the stored blob is this bundle
    # one batched save: the models, then their devices' states (version, epoch, sample)
    repo.save_local_models(db, docs, holdouts)
    for w, doc, (ok, why) in zip(windows, docs, health, strict=True):
        outcomes.append(
            DeviceOutcome(
                device=str(w.moteid),
                n_samples=w.n,
                version=doc["version"],
                loss_before=doc["metrics"]["loss_before"],
                loss_after=doc["metrics"]["loss_after"],
                threshold=doc["threshold"],
                n_faulty=w.n_faulty,
                offsets=w.offsets,
                base_version=start.version,
                unhealthy=None if ok else why,
            )
        )
    return outcomes
