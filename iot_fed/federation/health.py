"""Gates of a federated round: is a local model healthy, may a global version be promoted."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from iot_fed.fl.serialization import ModelBlobError, ModelBundle

MAX_LOSS_RATIO = 2.0
"""A local model whose training loss ends above this multiple of its start is diverging."""


def local_model_health(doc: Mapping[str, Any]) -> tuple[bool, str]:
    """``(ok, reason)``: parameters decode and are finite, loss finite and not diverging."""
    try:
        bundle = ModelBundle.from_bytes(doc["params"])
    except ModelBlobError as exc:
        return False, f"unreadable parameters: {exc}"
    for layer in bundle.params.values():
        for leaf in layer.values():
            if not np.all(np.isfinite(leaf)):
                return False, "non-finite parameters"
    m = doc.get("metrics") or {}
    before, after = m.get("loss_before"), m.get("loss_after")
    if after is None or not math.isfinite(after):
        return False, f"loss after training is {after}"
    if before is not None and math.isfinite(before) and after > MAX_LOSS_RATIO * before:
        return False, f"loss diverged: {before:.4g} -> {after:.4g}"
    return True, "ok"


def promotion_verdict(doc: Mapping[str, Any]) -> tuple[bool, str]:
    """May this global version replace the promoted one? The verdict its round computed
    (:meth:`iot_fed.fl.rounds.ServerConfig.verdict`) and stored with it, read, not redone."""
    verdict = (doc.get("metrics") or {}).get("verdict")
    if not isinstance(verdict, Mapping) or "ok" not in verdict:
        return False, "no promotion verdict stored with this version (made by an older round)"
    return bool(verdict["ok"]), str(verdict.get("reason", ""))
