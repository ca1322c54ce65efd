"""Models for scoring: the promoted global model and the newest local models, with the
threshold each scores by.

The promoted model is read by the one loader, :func:`iot_fed.federation.bundles.load_promoted`,
and verified on the driver, so a missing or corrupted model fails early with a message
naming its version. Executors receive the verified bytes (broadcast) and rebuild bundles
through the loader's per-process cache (:func:`~iot_fed.federation.bundles.bundle_from_blob`).
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass
from typing import Any

from pymongo.database import Database

from iot_fed.federation.bundles import ModelLoadError, bundle_from_blob, load_promoted
from iot_fed.fl.serialization import ModelBlobError, ModelBundle
from iot_fed.store import GLOBAL_MODELS, latest_local_models

__all__ = [
    "ModelNotAvailableError",
    "ScoringModel",
    "bundle_from_blob",
    "load_global_model",
    "load_local_models",
    "load_scoring_bundle",
    "scoring_bundle",
    "scoring_model",
    "with_threshold",
]


class ModelNotAvailableError(ModelLoadError):
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


def _threshold(doc: dict[str, Any], bundle: ModelBundle, label: str) -> float:
    threshold = doc.get("threshold")
    if threshold is None:
        threshold = bundle.threshold
    if threshold is None:
        raise ModelNotAvailableError(f"{label} has no anomaly threshold (document or blob)")
    return float(threshold)


def scoring_model(
    doc: dict[str, Any],
    kind: str,
    device: str | None = None,
    bundle: ModelBundle | None = None,
) -> ScoringModel:
    """A stored model document, checked readable, with the threshold it scores by: the one
    loader of stored models for scoring (batch, stream, API). ``bundle``: the document's
    bundle as loaded with its per-device params (a global version storing them apart
    is then carried as that bundle's blob)."""
    version = int(doc["version"])
    label = (
        f"global model version {version}"
        if kind == "global"
        else f"local model of device {device} version {version}"
    )
    blob = bytes(doc["params"]) if "params" in doc else b""
    if bundle is None:
        try:
            bundle = bundle_from_blob(blob)
        except (ModelBlobError, KeyError, TypeError) as exc:
            raise ModelNotAvailableError(f"{label} is unreadable: {exc}") from None
    elif "device_params" in doc:
        blob = bundle.to_bytes()
    return ScoringModel(kind, version, blob, _threshold(doc, bundle, label), device)


def _load(db: Database, version: int | None) -> tuple[dict[str, Any], ModelBundle]:
    try:
        got = load_promoted(db, version)
    except ModelLoadError as exc:
        raise ModelNotAvailableError(str(exc)) from None
    if got is None:
        if version is None:
            raise ModelNotAvailableError(
                f"no promoted global model in {db.name}.{GLOBAL_MODELS}; "
                "train, aggregate and promote one first"
            )
        raise ModelNotAvailableError(
            f"global model version {version} not found in {db.name}.{GLOBAL_MODELS}"
        )
    return got


def load_global_model(db: Database, version: int | None = None) -> ScoringModel:
    """Global ``version`` (default: the promoted one) through the one loader
    (:func:`~iot_fed.federation.bundles.load_promoted`), verified; clear error otherwise."""
    doc, bundle = _load(db, version)
    return scoring_model(doc, "global", bundle=bundle)


def load_scoring_bundle(db: Database, version: int | None = None) -> tuple[int, ModelBundle]:
    """Global ``version`` (default: the promoted one) as (version, bundle judged by its
    document's threshold), with its per-device params, through the one loader."""
    doc, bundle = _load(db, version)
    label = f"global model version {doc['version']}"
    return int(doc["version"]), with_threshold(bundle, _threshold(doc, bundle, label))


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
