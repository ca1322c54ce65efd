"""The per-device stateful step of the streaming scorer (runs in Spark's Python workers).

``applyInPandasWithState`` keyed by mote: each call receives one mote's new Kafka records
of a micro-batch, decodes them (:func:`iot_fed.stream.messages.decode_value`), scores the
valid ones with :func:`iot_fed.fl.stream_scoring.score_device` threading the device's
:class:`~iot_fed.fl.stream_scoring.DeviceHistory` (the group state, checkpointed by Spark),
and emits one output row per record: ``kind`` ``prediction`` or ``skipped`` (malformed:
ingestion dead-letters it; the scorer only counts it). A mote silent for the state timeout
loses its state (``GroupStateTimeout.ProcessingTimeTimeout``).

Why ``applyInPandasWithState`` and not ``transformWithStateInPandas``: in pyspark 4.0 the
latter only runs on the RocksDB state store provider and is still marked experimental;
the former runs on the default HDFS-backed store in local mode with nothing extra.

The model comes from :class:`ExecutorModel`: the promoted global version, re-checked at
most every ``refresh_s`` per worker process, so a promotion reaches the next micro-batch
without a restart; an unreadable bundle keeps the previous version (logged).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import types as T

from iot_fed.analytics.models import bundle_from_blob
from iot_fed.analytics.readings import MongoTarget
from iot_fed.fl.serialization import ModelBlobError, ModelBundle
from iot_fed.fl.stream_scoring import CHANNELS, DeviceHistory, score_device
from iot_fed.store import get_global_model, promoted_version
from iot_fed.store.live import promoted_history
from iot_fed.stream.messages import decode_value

log = logging.getLogger(__name__)

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

OUTPUT_SCHEMA = T.StructType(
    [
        T.StructField("kind", T.StringType(), False),
        T.StructField("moteid", T.IntegerType(), True),
        T.StructField("epoch", T.LongType(), True),
        T.StructField("ts_ms", T.LongType(), True),
        T.StructField("kafka_ts", T.TimestampType(), True),
        T.StructField("kafka_offset", T.StringType(), True),
        T.StructField("score", T.DoubleType(), True),
        *[T.StructField(f"err_{c}", T.DoubleType(), True) for c in CHANNELS],
        T.StructField("flag", T.BooleanType(), True),
        T.StructField("threshold", T.DoubleType(), True),
        T.StructField("reason", T.StringType(), True),
        T.StructField("model_version", T.IntegerType(), True),
        T.StructField("label", T.StringType(), True),
    ]
)
OUTPUT_COLUMNS = [f.name for f in OUTPUT_SCHEMA.fields]
STATE_SCHEMA = T.StructType([T.StructField("history", T.StringType(), False)])


class NoModelError(RuntimeError):
    """No readable promoted global model: the micro-batch fails and is retried later."""


class ExecutorModel:
    """Per-process cache of the promoted bundle (checked every ``refresh_s``)."""

    def __init__(self, target: MongoTarget, refresh_s: float) -> None:
        self.target = target
        self.refresh_s = refresh_s
        self.version: int | None = None
        self.bundle: ModelBundle | None = None
        self.checked = 0.0
        self.rejected: set[int] = set()

    def _load(self, db: Any, doc: dict[str, Any]) -> ModelBundle:
        bundle = bundle_from_blob(bytes(doc["params"]))
        if doc.get("threshold") is not None:
            bundle.threshold = float(doc["threshold"])
        if bundle.threshold is None:
            raise ModelBlobError("no anomaly threshold in the document or the bundle")
        return bundle

    def current(self) -> tuple[int, ModelBundle]:
        now = time.monotonic()
        if self.bundle is None or now - self.checked >= self.refresh_s:
            self._refresh()
            self.checked = now
        if self.bundle is None or self.version is None:
            raise NoModelError("no readable promoted global model yet")
        return self.version, self.bundle

    def _refresh(self) -> None:
        db = self.target.shared()
        version = promoted_version(db)
        if version is None or version == self.version or version in self.rejected:
            return
        candidates = [get_global_model(db, version)]
        if self.bundle is None:  # nothing to keep: fall back to earlier promoted versions
            candidates += promoted_history(db, version)
        for doc in candidates:
            if doc is None:
                continue
            try:
                bundle = self._load(db, doc)
            except (ModelBlobError, KeyError, TypeError, ValueError) as exc:
                self.rejected.add(int(doc["version"]))
                log.error(
                    "global model v%s is unreadable (%s); keeping v%s",
                    doc["version"],
                    exc,
                    self.version,
                )
                continue
            self.version, self.bundle = int(doc["version"]), bundle
            log.warning("streaming scorer now uses global model v%d", self.version)
            return


_MODELS: dict[tuple[MongoTarget, float], ExecutorModel] = {}


def executor_model(target: MongoTarget, refresh_s: float) -> ExecutorModel:
    key = (target, refresh_s)
    if key not in _MODELS:
        _MODELS[key] = ExecutorModel(target, refresh_s)
    return _MODELS[key]


@dataclass(frozen=True)
class Decoded:
    valid: pd.DataFrame  # moteid, epoch, ts_ms, channels, label, kafka_ts, kafka_offset
    skipped: pd.DataFrame  # OUTPUT_COLUMNS rows of kind "skipped"


def _offset_ids(raw: pd.DataFrame) -> list[str]:
    return [
        f"{t}:{int(p)}:{int(o)}"
        for t, p, o in zip(raw["topic"], raw["partition"], raw["offset"], strict=True)
    ]


def decode_records(raw: pd.DataFrame, max_bytes: int) -> Decoded:
    """Split one mote's Kafka records into valid readings and skipped (malformed) ones."""
    ids = _offset_ids(raw)
    good: list[dict[str, Any]] = []
    bad: list[dict[str, Any]] = []
    for key, value, kts, oid in zip(raw["key"], raw["value"], raw["timestamp"], ids, strict=True):
        reading, reason = decode_value(
            None if value is None else bytes(value), max_bytes, None if key is None else bytes(key)
        )
        if reading is None:
            bad.append({"kind": "skipped", "kafka_offset": oid, "reason": reason or "invalid"})
            continue
        ts: dt.datetime = reading["ts"]
        good.append(
            {
                "moteid": int(reading["moteid"]),
                "epoch": int(reading["epoch"]),
                "ts_ms": (ts - _EPOCH) // dt.timedelta(milliseconds=1),
                **{c: float(reading[c]) for c in CHANNELS},
                "label": reading.get("label"),
                "kafka_ts": kts,
                "kafka_offset": oid,
            }
        )
    return Decoded(pd.DataFrame(good), pd.DataFrame(bad, columns=OUTPUT_COLUMNS))


def score_mote(
    bundle: ModelBundle, version: int, history: DeviceHistory, valid: pd.DataFrame
) -> tuple[pd.DataFrame, DeviceHistory]:
    """Score one mote's valid readings; out-of-order or repeated epochs (older than the
    history) are scored with an empty history and do not enter it."""
    valid = valid.sort_values(["epoch", "kafka_offset"]).drop_duplicates("epoch")
    last = history.last_epoch
    newer = valid if last is None else valid[valid["epoch"] > last]
    older = valid.iloc[0:0] if last is None else valid[valid["epoch"] <= last]
    moteid = int(valid["moteid"].iloc[0])
    frames = []
    for part, hist, fallback in ((newer, history, None), (older, None, "fallback:out_of_order")):
        if part.empty:
            continue
        scored, new_hist = score_device(
            bundle,
            hist or DeviceHistory.empty(),
            moteid=moteid,
            epochs=part["epoch"].to_numpy(np.int64),
            ts_ms=part["ts_ms"].to_numpy(np.int64),
            values=part[list(CHANNELS)].to_numpy(np.float64),
        )
        if hist is not None:
            history = new_hist
        out = pd.DataFrame(
            {
                "kind": "prediction",
                "moteid": moteid,
                "epoch": part["epoch"].to_numpy(),
                "ts_ms": part["ts_ms"].to_numpy(),
                "kafka_ts": part["kafka_ts"].to_numpy(),
                "kafka_offset": part["kafka_offset"].to_numpy(),
                "score": scored.score,
                **{f"err_{c}": scored.channel_errors[:, i] for i, c in enumerate(CHANNELS)},
                "flag": scored.flag,
                "threshold": scored.threshold,
                "reason": [r or fallback for r in scored.reason],
                "model_version": version,
                "label": part["label"].to_numpy(),
            }
        )
        frames.append(out)
    return pd.concat(frames, ignore_index=True)[OUTPUT_COLUMNS], history


def stateful_scorer(target: MongoTarget, max_bytes: int, refresh_s: float, timeout_ms: int):
    """The ``applyInPandasWithState`` function (key: ``(moteid,)`` from the Kafka key)."""

    def run(
        key: tuple[Any, ...], pdfs: Iterable[pd.DataFrame], state: Any
    ) -> Iterator[pd.DataFrame]:
        if state.hasTimedOut:  # the mote was silent for the timeout: forget its window
            state.remove()
            return
        raw = pd.concat(list(pdfs), ignore_index=True)
        decoded = decode_records(raw, max_bytes)
        if not decoded.skipped.empty:
            yield decoded.skipped
        if decoded.valid.empty:
            return
        version, bundle = executor_model(target, refresh_s).current()
        history = DeviceHistory.from_json(state.get[0]) if state.exists else DeviceHistory.empty()
        out, history = score_mote(bundle, version, history, decoded.valid)
        if key[0] is not None:
            state.update((history.to_json(),))
            state.setTimeoutDuration(timeout_ms)
        yield out

    return run
