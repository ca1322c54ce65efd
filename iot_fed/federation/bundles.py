"""Reading stored model bundles, and the normalisation floor every round uses."""

from __future__ import annotations

from typing import Any

import numpy as np

from iot_fed.fl.serialization import ModelBlobError, ModelBundle

FEATURE_STD_FLOOR = np.array([0.5, 1.0, 10.0, 0.01, 0.1, 0.1])
"""Smallest std per feature (degC, %RH, lux, V, sin, cos): a short window where a channel
is flat (lights off all night) must not turn ordinary changes into huge z-scores."""


class ModelLoadError(RuntimeError):
    """A stored model could not be read; the message names the version."""


def load_bundle(doc: dict[str, Any], what: str) -> ModelBundle:
    try:
        return ModelBundle.from_bytes(doc["params"])
    except (ModelBlobError, KeyError) as exc:
        raise ModelLoadError(f"{what} version {doc.get('version')}: {exc}") from exc
