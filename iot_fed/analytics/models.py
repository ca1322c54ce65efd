"""Model loading for scoring: the promoted global model and the newest local models.

Blobs come from :mod:`iot_fed.store` and are verified with
:class:`iot_fed.fl.serialization.ModelBundle` on the driver, so a missing or corrupted
model fails early with a message naming its version. Executors receive the verified
bytes (broadcast) and rebuild bundles through a small per-process cache.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass
from typing import Any

from pymongo.database import Database

from iot_fed.fl.serialization import ModelBlobError, ModelBundle
from iot_fed.store import (
    GLOBAL_MODELS,
    get_global_model,
    latest_local_models,
    promoted_version,
)

_BUNDLE_CACHE: dict[str, ModelBundle] = {}
_CACHE_MAX = 256


class ModelNotAvailableError(RuntimeError):
    """A model needed for scoring is missing, unreadable or has no threshold."""


@dataclass(frozen=True)
class ScoringModel:
    """A verified model blob plus what scoring needs to know about it."""

    kind: str  # "global" | "local"
    version: int
    blob: bytes
    threshold: float
    device: str | None = None

    @property
    def name(self) -> str:
        if self.kind == "global":
            return f"global model version {self.version}"
        return f"local model of device {self.device} version {self.version}"

    @property
    def digest(self) -> str:
        return hashlib.sha1(self.blob).hexdigest()


def bundle_from_blob(blob: bytes) -> ModelBundle:
    """``ModelBundle.from_bytes`` with a per-process cache keyed by content (executors)."""
    key = hashlib.sha1(blob).hexdigest()
    bundle = _BUNDLE_CACHE.get(key)
    if bundle is None:
        if len(_BUNDLE_CACHE) >= _CACHE_MAX:
            _BUNDLE_CACHE.clear()
        bundle = _BUNDLE_CACHE[key] = ModelBundle.from_bytes(blob)
    return bundle


def with_threshold(bundle: ModelBundle, threshold: float) -> ModelBundle:
    """``bundle`` with the model document's global ``threshold`` (a copy when it differs)."""
    if bundle.threshold == threshold:
        return bundle
    out = copy.copy(bundle)
    out.threshold = threshold
    return out


def scoring_bundle(model: ScoringModel) -> ModelBundle:
    """The model's bundle judged by its document's threshold (a copy when that differs:
    cached bundles are shared by every caller in the process)."""
    return with_threshold(bundle_from_blob(model.blob), model.threshold)


def scoring_model(doc: dict[str, Any], kind: str, device: str | None = None) -> ScoringModel:
    """A stored model document, checked readable, with the threshold it scores by: the one
    loader of stored models for scoring (batch, stream, API)."""
    version = int(doc["version"])
    label = (
        f"global model version {version}"
        if kind == "global"
        else f"local model of device {device} version {version}"
    )
    try:
        bundle = bundle_from_blob(bytes(doc["params"]))
    except (ModelBlobError, KeyError, TypeError) as exc:
        raise ModelNotAvailableError(f"{label} is unreadable: {exc}") from None
    threshold = doc.get("threshold")
    if threshold is None:
        threshold = bundle.threshold
    if threshold is None:
        raise ModelNotAvailableError(f"{label} has no anomaly threshold (document or blob)")
    return ScoringModel(kind, version, bytes(doc["params"]), float(threshold), device)


def load_global_model(db: Database, version: int | None = None) -> ScoringModel:
    """Global ``version`` (default: the promoted one), verified; clear error otherwise."""
    if version is None:
        version = promoted_version(db)
        if version is None:
            raise ModelNotAvailableError(
                f"no promoted global model in {db.name}.{GLOBAL_MODELS}; "
                "train, aggregate and promote one first"
            )
    doc = get_global_model(db, version)
    if doc is None:
        raise ModelNotAvailableError(
            f"global model version {version} not found in {db.name}.{GLOBAL_MODELS}"
        )
    return scoring_model(doc, "global")


def load_local_models(db: Database) -> dict[int, ScoringModel]:
    """The newest local model per device, keyed by moteid (devices are ``str(moteid)``)."""
    out: dict[int, ScoringModel] = {}
    for device, doc in latest_local_models(db).items():
        try:
            moteid = int(device)
        except ValueError:
            continue  # not a mote partition
        out[moteid] = scoring_model(doc, "local", device)
    return out
