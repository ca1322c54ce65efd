"""Federated learning core (pure JAX/optax + numpy; no Dagster).

Modules (import the one you need; this package imports nothing heavy eagerly):

* :mod:`~iot_fed.fl.spec` — :class:`ModelSpec`, params pytree layout (numpy)
* :mod:`~iot_fed.fl.features` — ``features_from_columns`` (numpy)
* :mod:`~iot_fed.fl.normalization` — ``SufficientStats``, ``Normalizer``, ``make_xy`` (numpy)
* :mod:`~iot_fed.fl.model` — JAX forward pass, ``init_params``, loss (JAX)
* :mod:`~iot_fed.fl.training` — ``train_devices`` (jit+vmap), ``evaluate_devices`` (JAX)
* :mod:`~iot_fed.fl.aggregation` — ``aggregate`` (fedavg / median / trimmed_mean, DP) (numpy)
* :mod:`~iot_fed.fl.serialization` — ``ModelBundle`` blobs, ``ModelBlobError`` (numpy)
* :mod:`~iot_fed.fl.scoring` — ``score_batch``, ``flag``, ``calibrate_threshold`` (numpy)

The names below are also available as ``iot_fed.fl.<name>`` (resolved lazily, so
``import iot_fed.fl.scoring`` never pulls in JAX).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ModelSpec": "spec",
    "Params": "spec",
    "features_from_columns": "features",
    "FEATURE_NAMES": "features",
    "SufficientStats": "normalization",
    "Normalizer": "normalization",
    "make_xy": "normalization",
    "init_params": "model",
    "forward": "model",
    "reconstruction_error": "model",
    "TrainConfig": "training",
    "TrainResult": "training",
    "EvalResult": "training",
    "train_devices": "training",
    "train_devices_loop": "training",
    "evaluate_devices": "training",
    "trace_counts": "training",
    "aggregate": "aggregation",
    "AggregationConfig": "aggregation",
    "AggregationError": "aggregation",
    "ModelBundle": "serialization",
    "ModelBlobError": "serialization",
    "params_to_bytes": "serialization",
    "params_from_bytes": "serialization",
    "score_batch": "scoring",
    "score_readings": "scoring",
    "flag": "scoring",
    "calibrate_threshold": "scoring",
    "combine_thresholds": "scoring",
    "stack_params": "pytrees",
    "unstack_params": "pytrees",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module 'iot_fed.fl' has no attribute {name!r}")
    return getattr(importlib.import_module(f"iot_fed.fl.{mod}"), name)
