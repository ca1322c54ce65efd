"""The one loader of stored models (the normalisation floor lives in :mod:`iot_fed.fl.rounds`).

:func:`load_promoted` reads the promoted global model (or a given version) for every caller:
the federated rounds (warm start, validation parent), the batch and streaming scorers
(:mod:`iot_fed.analytics.models`, :class:`iot_fed.analytics.live_state.ExecutorModel`) and the
model API (:class:`iot_fed.serving.app.ModelCache`); each caller keeps its own caching. A
version's per-device params stored apart are read in batches and cached per process. Bundles
are decoded through a per-process cache keyed by the blob's content, so one bundle object is
shared by every caller in the process: read it, never change it (a caller that needs another
threshold takes a copy: :func:`iot_fed.analytics.models.with_threshold`).
"""

from __future__ import annotations

import hashlib
from typing import Any

from pymongo.database import Database

from iot_fed.federation.device_params import attach
from iot_fed.fl.serialization import ModelBlobError, ModelBundle
from iot_fed.store import repository as repo
from iot_fed.store.device_params import read_device_params

_BUNDLE_CACHE: dict[str, ModelBundle] = {}
_CACHE_MAX = 256
_ATTACHED: dict[tuple[int, str, str], ModelBundle] = {}
_ATTACHED_MAX = 4
"""Bundles with their per-device params read apart, by (version, save token, blob)."""


class ModelLoadError(RuntimeError):
    """A stored model could not be read; the message names the version."""


def bundle_from_blob(blob: bytes) -> ModelBundle:
    """``ModelBundle.from_bytes`` with a per-process cache keyed by content (shared: read
    only)."""
    key = hashlib.sha1(blob).hexdigest()
    bundle = _BUNDLE_CACHE.get(key)
    if bundle is None:
        if len(_BUNDLE_CACHE) >= _CACHE_MAX:
            _BUNDLE_CACHE.clear()
        bundle = _BUNDLE_CACHE[key] = ModelBundle.from_bytes(blob)
    return bundle


def load_bundle(doc: dict[str, Any], what: str) -> ModelBundle:
    """The bundle of a stored model document; :class:`ModelLoadError` names ``what`` and
    the version when it cannot be read."""
    try:
        return bundle_from_blob(bytes(doc["params"]))
    except (ModelBlobError, KeyError, TypeError) as exc:
        raise ModelLoadError(f"{what} version {doc.get('version')} is unreadable: {exc}") from exc


def load_global_bundle(doc: dict[str, Any], db: Database, what: str) -> ModelBundle:
    """:func:`load_bundle` of a global version document, with its per-device params: from
    ``global_device_params`` in batches when stored apart (cached per process by version
    and save token), else from its blob (a version stored before they were split out:
    it was read the same way then, under MongoDB's 16 MiB by construction)."""
    shared = load_bundle(doc, what)
    saved = doc.get("device_params")
    if saved is None:
        return shared
    key = (int(doc["version"]), str(saved["token"]), hashlib.sha1(bytes(doc["params"])).hexdigest())
    bundle = _ATTACHED.get(key)
    if bundle is None:
        rows = read_device_params(db, int(doc["version"]), str(saved["token"]))
        if len(rows) != int(saved["count"]):
            raise ModelLoadError(
                f"{what} version {doc['version']} has {len(rows)} of its "
                f"{saved['count']} per-device params"
            )
        try:
            bundle = attach(shared, rows, f"{what} version {doc['version']}")
        except ValueError as exc:
            raise ModelLoadError(str(exc)) from None
        if len(_ATTACHED) >= _ATTACHED_MAX:
            _ATTACHED.clear()
        _ATTACHED[key] = bundle
    return bundle


def load_promoted(
    db: Database, version: int | None = None, *, device_params: bool = True
) -> tuple[dict[str, Any], ModelBundle] | None:
    """The promoted global model (or global ``version``): its stored document and its
    bundle with every device's params (:func:`load_global_bundle`; ``device_params=False``:
    without those stored apart, for a caller that needs only the shared weights); None
    when nothing is promoted (or there is no such version). :class:`ModelLoadError` when
    it cannot be read."""
    if version is None:
        doc = repo.promoted_global_model(db)
    else:
        doc = repo.get_global_model(db, int(version))
    if doc is None:
        return None
    what = "promoted global model" if version is None else "global model"
    if not device_params:
        return doc, load_bundle(doc, what)
    return doc, load_global_bundle(doc, db, what)
