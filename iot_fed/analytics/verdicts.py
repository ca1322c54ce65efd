"""The one builder of verdict documents (``predictions`` and ``anomalies``), for the batch
``predictions`` asset and the streaming scorer alike: the same reading scored by the same
model version gives the same document whichever path scored it; only the provenance fields
(:data:`PROVENANCE`) say when and how.

Input: a frame of scored readings with the columns of :data:`VERDICT_COLUMNS` (what
:func:`iot_fed.fl.stream_scoring.score_device` returns, per reading), plus ``kafka_ts_ms``
and ``kafka_offset`` when the reading came through the stream.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pandas as pd

from iot_fed.fl.sanity import SANITY_PREFIX
from iot_fed.readings import CHANNELS

VERDICT_COLUMNS = (
    "moteid",
    "epoch",
    "ts_ms",
    "score",
    "threshold",
    "flag",
    "reason",
    "label",
    "model_version",
    *(f"err_{c}" for c in CHANNELS),
)
PROVENANCE = ("created_at", "scored_at", "source", "kafka_ts", "kafka_offset")
TOP_CHANNELS = 2  # an anomaly names the channels with the largest errors
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _utc(ms: Any) -> dt.datetime:
    return _EPOCH + dt.timedelta(milliseconds=int(ms))


def _finite(v: Any) -> float | None:
    return None if v is None or not np.isfinite(v) else float(v)


def _text(v: Any) -> str | None:
    return v if isinstance(v, str) else None


def channels_responsible(errors: np.ndarray, reason: str | None) -> list[str]:
    """The channels responsible: a data fault's or a sanity rule's own, else the largest
    errors."""
    if reason and reason.startswith(("data_fault:", SANITY_PREFIX)):
        return [reason.split(":", 1)[1].split(" ")[0]]
    finite = np.nan_to_num(errors, nan=-1.0)
    return [CHANNELS[j] for j in np.argsort(-finite)[:TOP_CHANNELS] if finite[j] >= 0]


def verdict_docs(
    scored: pd.DataFrame, *, source: str, scored_at: dt.datetime
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``predictions`` documents of every row and ``anomalies`` documents of the flagged
    ones, with plain Python values for BSON."""
    errs = scored[[f"err_{c}" for c in CHANNELS]].to_numpy(np.float64)
    n = len(scored)
    kafka_ts = scored["kafka_ts_ms"].tolist() if "kafka_ts_ms" in scored else [None] * n
    offsets = scored["kafka_offset"].tolist() if "kafka_offset" in scored else [None] * n
    preds: list[dict[str, Any]] = []
    anomalies: list[dict[str, Any]] = []
    columns = [scored[c].tolist() for c in VERDICT_COLUMNS[:9]]
    for i, (m, e, t, s, thr, f, r, lab, v) in enumerate(zip(*columns, strict=True)):
        score, threshold, reason = _finite(s), _finite(thr), _text(r)
        doc = {
            "moteid": int(m),
            "ts": _utc(t),
            "epoch": int(e),
            "score": score,
            "threshold": threshold,
            "is_anomaly": bool(f),
            "model_version": int(v),
            "label": _text(lab),
            "channel_errors": [_finite(x) for x in errs[i]],
            "reason": reason,
            "created_at": scored_at,
            "scored_at": scored_at,
            "source": source,
            "kafka_ts": None if kafka_ts[i] is None else _utc(kafka_ts[i]),
            "kafka_offset": offsets[i],
        }
        preds.append(doc)
        if doc["is_anomaly"]:
            anomalies.append(
                {
                    "moteid": doc["moteid"],
                    "ts": doc["ts"],
                    "epoch": doc["epoch"],
                    "score": score,
                    "threshold": threshold,
                    "ratio": None if score is None or not threshold else score / threshold,
                    "channels": channels_responsible(errs[i], reason),
                    "reason": reason,
                    "model_version": doc["model_version"],
                    "kafka_ts": doc["kafka_ts"],
                    "flagged_at": scored_at,
                    "source": source,
                }
            )
    return preds, anomalies
