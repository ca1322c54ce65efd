"""Gates of a federated round: is a local model healthy, may a global version be promoted."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
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
    return bundle_health(bundle, doc.get("metrics") or {})


def bundle_health(bundle: ModelBundle, metrics: Mapping[str, Any]) -> tuple[bool, str]:
    """:func:`local_model_health` of a decoded model and its training metrics."""
    for layer in bundle.params.values():
        for leaf in layer.values():
            if not np.all(np.isfinite(leaf)):
                return False, "non-finite parameters"
    before, after = metrics.get("loss_before"), metrics.get("loss_after")
    if after is None or not math.isfinite(after):
        return False, f"loss after training is {after}"
    if before is not None and math.isfinite(before) and after > MAX_LOSS_RATIO * before:
        return False, f"loss diverged: {before:.4g} -> {after:.4g}"
    return True, "ok"


def promotion_verdict(doc: Mapping[str, Any]) -> tuple[bool, str]:
    """May this global version replace the promoted one? The verdict its round computed
    (:meth:`iot_fed.fl.rounds.ServerConfig.verdict`) and stored with it, read, not redone;
    then the promotion replay's, when it ran (:mod:`iot_fed.federation.replay_check`)."""
    metrics = doc.get("metrics") or {}
    verdict = metrics.get("verdict")
    if not isinstance(verdict, Mapping) or "ok" not in verdict:
        return False, "no promotion verdict stored with this version (made by an older round)"
    if not verdict["ok"]:
        return False, str(verdict.get("reason", ""))
    replay = metrics.get("replay")
    if isinstance(replay, Mapping) and not replay.get("ok", True):
        return False, f"replay: {replay.get('reason', '')}"
    return True, str(verdict.get("reason", ""))


REPLAY_FIGURES = ("alarm_rate", "flagged_rate", "alarm_limit", "f1", "promoted_f1", "skipped")
"""The promotion replay's figures shown with a refusal (API, reporting)."""


def last_refused(versions: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The newest never-promoted version whose stored verdict refuses it, with why and the
    replay's figures (``versions`` newest first, as
    :func:`iot_fed.store.live.global_model_versions` gives them); None when there is none."""
    for doc in versions:
        if doc.get("promoted") or doc.get("promoted_at"):
            continue
        ok, why = promotion_verdict(doc)
        if ok:
            continue
        replay = (doc.get("metrics") or {}).get("replay") or {}
        return {
            "version": int(doc["version"]),
            "created_at": doc.get("created_at"),
            "reason": why,
            "replay": {k: replay.get(k) for k in REPLAY_FIGURES} if replay else None,
        }
    return None
