"""A global version's per-device params, stored apart from its document.

:func:`split` turns an aggregated bundle into the version's shared blob (weights, fleet
normaliser, residual scales, global threshold) and one row per device (its normaliser,
threshold and lineage) for ``global_device_params``; :func:`attach` puts the rows read
back onto the shared bundle. A device without a row is not in ``known_devices``: it is
scored learning (``learning:no_device_params``), never with another device's params.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from iot_fed.fl.normalization import Normalizer
from iot_fed.fl.serialization import ModelBundle

LINEAGE_CAP = 100
"""At most this many lineage entries in a version document; every device's own entry is
in its params row."""


def split(
    bundle: ModelBundle, lineage: Mapping[int, Mapping[str, Any]]
) -> tuple[ModelBundle, list[dict[str, Any]]]:
    """(the shared bundle, one params row per device with a normaliser, a threshold or a
    lineage entry in this version)."""
    motes = sorted(
        {int(m) for m in bundle.device_norms}
        | {int(m) for m in bundle.device_thresholds}
        | {int(m) for m in lineage}
    )
    rows = []
    for m in motes:
        norm = bundle.device_norms.get(m)
        thr = bundle.device_thresholds.get(m)
        lin = lineage.get(m)
        rows.append(
            {
                "moteid": m,
                "threshold": None if thr is None else float(thr),
                "norm_mean": None if norm is None else np.asarray(norm.mean, "<f8").tobytes(),
                "norm_std": None if norm is None else np.asarray(norm.std, "<f8").tobytes(),
                "lineage": None if lin is None else dict(lin),
            }
        )
    shared = replace(bundle, device_thresholds={}, device_norms={}, known_devices=None)
    return shared, rows


def attach(shared: ModelBundle, rows: Sequence[Mapping[str, Any]], what: str) -> ModelBundle:
    """``shared`` with the devices' params of ``rows`` (a copy: ``shared`` is cached and
    read by every caller in the process). ValueError naming ``what`` and the mote on a
    malformed row."""
    n = shared.spec.n_features
    thresholds: dict[int, float] = {}
    norms: dict[int, Normalizer] = {}
    for r in rows:
        m = int(r["moteid"])
        if r.get("threshold") is not None:
            thresholds[m] = float(r["threshold"])
        if r.get("norm_mean") is not None:
            mean = np.frombuffer(bytes(r["norm_mean"]), "<f8")
            std = np.frombuffer(bytes(r.get("norm_std") or b""), "<f8")
            if mean.shape != (n,) or std.shape != (n,):
                raise ValueError(f"{what}: the normaliser of mote {m} is not ({n},) means and stds")
            norms[m] = Normalizer(mean.copy(), std.copy())
    known = frozenset(int(r["moteid"]) for r in rows)
    return replace(shared, device_thresholds=thresholds, device_norms=norms, known_devices=known)
