"""Reading stored model bundles (the normalisation floor lives in :mod:`iot_fed.fl.rounds`)."""

from __future__ import annotations

from typing import Any

from iot_fed.fl.serialization import ModelBlobError, ModelBundle


class ModelLoadError(RuntimeError):
    """A stored model could not be read; the message names the version."""


def load_bundle(doc: dict[str, Any], what: str) -> ModelBundle:
    try:
        return ModelBundle.from_bytes(doc["params"])
    except (ModelBlobError, KeyError) as exc:
        raise ModelLoadError(f"{what} version {doc.get('version')}: {exc}") from exc
