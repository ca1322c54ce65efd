"""The per-device stateful step of the streaming scorer (runs in Spark's Python workers).

``applyInPandasWithState`` keyed by mote: each call receives one mote's new Kafka records
of a micro-batch, decodes them (:func:`iot_fed.stream.messages.decode_value`), scores the
valid ones with :func:`iot_fed.fl.stream_scoring.score_device` threading the device's
:class:`~iot_fed.fl.stream_scoring.DeviceHistory` (the group state, checkpointed by Spark),
and emits one output row per record: ``kind`` ``prediction`` or ``skipped`` (malformed:
ingestion dead-letters it; the scorer only counts it), plus one ``incident`` row (its
document as JSON) per incident the readings opened, extended or closed
(:func:`iot_fed.analytics.incidents.advance`, whose per-device state rides in the same
state string as the history). A mote silent for the state timeout loses its state
(``GroupStateTimeout.ProcessingTimeTimeout``); its open incident is then closed by the
fleet's data time.

Why ``applyInPandasWithState`` and not ``transformWithStateInPandas``: in pyspark 4.0 the
latter only runs on the RocksDB state store provider and is still marked experimental;
the former runs on the default HDFS-backed store in local mode with nothing extra. Nor is
it cheaper here. A probe with the same query shape (a value state with a 1 h TTL, read and
written per mote, 10 rec/s) took 1.17 s per micro-batch against 0.79-1.13 s. Its TTL needs
no Python timeout pass, which saves ~60 ms, but the RocksDB commit cost 60-100 ms more and
the planning was slower. The RocksDB provider under ``applyInPandasWithState`` did no better
either, with or without changelog checkpointing (``bench/bench_scorer.py`` variants
``rocksdb``/``rocksdb-changelog``): the state is one small row per mote.

The model comes from :class:`ExecutorModel`: the promoted global version, re-checked at
most every ``refresh_s`` per worker process, so a promotion reaches the next micro-batch
without a restart; an unreadable bundle keeps the previous version (logged).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import types as T

from iot_fed.analytics.incidents import IncidentState, advance
from iot_fed.analytics.models import ModelNotAvailableError, load_scoring_bundle
from iot_fed.analytics.readings import MongoTarget
from iot_fed.fl.sanity import SANITY_PREFIX
from iot_fed.fl.serialization import ModelBlobError, ModelBundle
from iot_fed.fl.stream_scoring import DeviceHistory, score_device
from iot_fed.readings import CHANNELS
from iot_fed.store import promoted_version
from iot_fed.store.live import promoted_history
from iot_fed.stream.messages import decode_value

log = logging.getLogger(__name__)

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
# pyspark's applyInPandasWithState serializer concatenates frames with all-NA columns, and
# pandas 2 warns about it on every micro-batch (in the workers, which import this module)
warnings.filterwarnings(
    "ignore",
    message="The behavior of DataFrame concatenation with empty or all-NA entries",
    category=FutureWarning,
    module="pyspark.sql.pandas.serializers",
)

OUTPUT_SCHEMA = T.StructType(
    [
        T.StructField("kind", T.StringType(), False),
        T.StructField("moteid", T.IntegerType(), True),
        T.StructField("epoch", T.LongType(), True),
        T.StructField("ts_ms", T.LongType(), True),
        T.StructField("kafka_ts_ms", T.LongType(), True),
        T.StructField("kafka_offset", T.StringType(), True),
        T.StructField("score", T.DoubleType(), True),
        *[T.StructField(f"err_{c}", T.DoubleType(), True) for c in CHANNELS],
        T.StructField("flag", T.BooleanType(), True),
        T.StructField("threshold", T.DoubleType(), True),
        T.StructField("reason", T.StringType(), True),
        T.StructField("model_version", T.IntegerType(), True),
        T.StructField("label", T.StringType(), True),
        # the reading's values (the incidents' fault-type guess) and an incident's document
        *[T.StructField(c, T.DoubleType(), True) for c in CHANNELS],
        T.StructField("incident", T.StringType(), True),
    ]
)
OUTPUT_COLUMNS = [f.name for f in OUTPUT_SCHEMA.fields]
OUT_OF_ORDER = "fallback:out_of_order"
"""Reason of a reading no newer than its device's history (late, or sent again), scored
with no context (so never flagged by the model, only by a data fault or the sanity rule):
its verdict never replaces a stored one (see ``store_batch``)."""
STATE_SCHEMA = T.StructType([T.StructField("history", T.StringType(), False)])
"""One JSON string: the :class:`DeviceHistory`, plus the device's incident state under
``"incidents"`` (added later: a checkpoint written before has no such key, and keeps this
schema, so it still loads; see :func:`load_state`)."""
INCIDENTS_KEY = "incidents"


def load_state(text: str) -> tuple[DeviceHistory, IncidentState | None]:
    """A mote's state string: its history and incident state (None when not kept yet)."""
    return DeviceHistory.from_json(text), IncidentState.from_json(
        json.loads(text).get(INCIDENTS_KEY)
    )


def state_text(history: DeviceHistory, incidents: IncidentState) -> str:
    """The state string of :func:`load_state`."""
    return json.dumps({**json.loads(history.to_json()), INCIDENTS_KEY: incidents.to_json()})


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

    def current(self) -> tuple[int, ModelBundle]:
        now = time.monotonic()
        if self.bundle is None or now - self.checked >= self.refresh_s:
            self._refresh()
            self.checked = now
        if self.bundle is None or self.version is None:
            raise NoModelError("no readable promoted global model yet")
        return self.version, self.bundle

    def _refresh(self) -> None:
        """Load a newly promoted version through the one loader
        (:func:`~iot_fed.analytics.models.load_scoring_bundle`); an unreadable one is
        rejected for good and the current version kept, or, with none yet, the newest
        readable version promoted before it."""
        db = self.target.shared()
        version = promoted_version(db)
        if version is None or version == self.version or version in self.rejected:
            return
        if self._take(version, lambda: load_scoring_bundle(db, version)[1]):
            return
        if self.bundle is None:  # nothing to keep: fall back to earlier promoted versions
            for doc in promoted_history(db, version):
                old = int(doc["version"])
                if old not in self.rejected and self._take(
                    old, lambda old=old: load_scoring_bundle(db, old)[1]
                ):
                    return

    def _take(self, version: int, load: Callable[[], ModelBundle]) -> bool:
        try:
            bundle = load()
        except (ModelNotAvailableError, ModelBlobError, KeyError, TypeError, ValueError) as exc:
            self.rejected.add(version)
            log.error(
                "global model v%s is unreadable (%s); keeping v%s", version, exc, self.version
            )
            return False
        self.version, self.bundle = version, bundle
        log.warning("streaming scorer now uses global model v%d", self.version)
        return True


_MODELS: dict[tuple[MongoTarget, float], ExecutorModel] = {}


def executor_model(target: MongoTarget, refresh_s: float) -> ExecutorModel:
    key = (target, refresh_s)
    if key not in _MODELS:
        _MODELS[key] = ExecutorModel(target, refresh_s)
    return _MODELS[key]


@dataclass(frozen=True)
class Decoded:
    """One mote's records of a micro-batch: the valid readings as columns, in Kafka order,
    and the malformed ones as ``skipped`` output rows."""

    epoch: np.ndarray  # int64
    ts_ms: np.ndarray  # int64
    values: np.ndarray  # (n, channels) float64
    kafka_ts_ms: np.ndarray  # int64 ms since the epoch (the Kafka record timestamp)
    kafka_offset: np.ndarray  # str ids "topic:partition:offset"
    order: np.ndarray  # (partition, offset) sort key of each valid record
    label: np.ndarray  # object
    moteid: np.ndarray  # int64: the reading's own mote (the group key unless unkeyed)
    skipped: list[dict[str, Any]]

    def __len__(self) -> int:
        return len(self.epoch)

    def take(self, idx: np.ndarray) -> Decoded:
        """The valid records at ``idx`` (no skipped ones)."""
        arrays = {f.name: getattr(self, f.name)[idx] for f in fields(self) if f.name in _ROWS}
        return replace(self, **arrays, skipped=[])


_ROWS = ("epoch", "ts_ms", "values", "kafka_ts_ms", "kafka_offset", "order", "label", "moteid")


def decode_records(raw: pd.DataFrame, max_bytes: int) -> Decoded:
    """Split one mote's Kafka records into valid readings and skipped (malformed) ones.

    Plain lists and numpy arrays: this runs once per mote per micro-batch, where pandas'
    per-call overhead used to be most of the stateful step's time."""
    oids = raw["kafka_offset"].tolist()  # "topic:partition:offset", built by Spark
    kafka_ts_ms = raw["kafka_ts_ms"].to_numpy(np.int64)
    keep: list[int] = []
    epoch: list[int] = []
    ts_ms: list[int] = []
    values: list[list[float]] = []
    labels: list[Any] = []
    skipped: list[dict[str, Any]] = []
    moteid: list[int] = []
    for i, (key, value) in enumerate(zip(raw["key"].tolist(), raw["value"].tolist(), strict=True)):
        reading, reason = decode_value(
            None if value is None else bytes(value), max_bytes, None if key is None else bytes(key)
        )
        if reading is None:
            skipped.append(
                {"kind": "skipped", "kafka_offset": oids[i], "reason": reason or "invalid"}
            )
            continue
        keep.append(i)
        moteid.append(int(reading["moteid"]))
        epoch.append(int(reading["epoch"]))
        ts_ms.append((reading["ts"] - _EPOCH) // dt.timedelta(milliseconds=1))
        values.append([float(reading[c]) for c in CHANNELS])
        labels.append(reading.get("label"))
    idx = np.asarray(keep, np.int64)
    return Decoded(
        epoch=np.asarray(epoch, np.int64),
        ts_ms=np.asarray(ts_ms, np.int64),
        values=np.asarray(values, np.float64).reshape(len(keep), len(CHANNELS)),
        kafka_ts_ms=kafka_ts_ms[idx],
        kafka_offset=np.array(oids, dtype=object)[idx],
        order=np.array(
            [[int(v) for v in oids[i].rsplit(":", 2)[1:]] for i in keep], np.int64
        ).reshape(-1, 2),
        label=np.array(labels, dtype=object),
        moteid=np.asarray(moteid, np.int64),
        skipped=skipped,
    )


def _reasons(reasons: Iterable[str | None], late: str | None) -> list[str | None]:
    """The scorer's reasons; for late readings (``late`` given) that reason instead,
    except a data fault or a sanity rule (the only verdicts that flag a late reading)."""
    if late is None:
        return list(reasons)
    return [r if r and r.startswith(("data_fault:", SANITY_PREFIX)) else late for r in reasons]


def score_mote(
    bundle: ModelBundle, version: int, history: DeviceHistory, valid: Decoded
) -> tuple[pd.DataFrame, DeviceHistory]:
    """Score one mote's valid readings (all of ``valid.moteid[0]``); out-of-order or
    repeated epochs (older than the history) are scored with an empty history and do not
    enter it."""
    # time order; a repeated epoch keeps its first record in Kafka order
    by = np.lexsort((valid.order[:, 1], valid.order[:, 0], valid.epoch))
    first = np.ones(len(by), bool)
    first[1:] = valid.epoch[by][1:] != valid.epoch[by][:-1]
    valid = valid.take(by[first])
    last = history.last_epoch
    is_new = np.ones(len(valid), bool) if last is None else valid.epoch > last
    moteid = int(valid.moteid[0]) if len(valid) else 0
    columns: dict[str, list[np.ndarray]] = {c: [] for c in OUTPUT_COLUMNS}
    for mask, hist, fallback in ((is_new, history, None), (~is_new, None, OUT_OF_ORDER)):
        if not mask.any():
            continue
        part = valid.take(np.flatnonzero(mask))
        scored, new_hist = score_device(
            bundle,
            hist or DeviceHistory.empty(),
            moteid=moteid,
            epochs=part.epoch,
            ts_ms=part.ts_ms,
            values=part.values,
        )
        if hist is not None:
            history = new_hist
        n = len(part)
        got = {
            "kind": np.full(n, "prediction", dtype=object),
            "moteid": np.full(n, moteid, np.int64),
            "epoch": part.epoch,
            "ts_ms": part.ts_ms,
            "kafka_ts_ms": part.kafka_ts_ms,
            "kafka_offset": part.kafka_offset,
            "score": np.asarray(scored.score, np.float64),
            **{f"err_{c}": scored.channel_errors[:, i] for i, c in enumerate(CHANNELS)},
            "flag": np.asarray(scored.flag, bool),
            "threshold": np.asarray(scored.threshold, np.float64),
            "reason": np.array(_reasons(scored.reason, fallback), dtype=object),
            "model_version": np.full(n, version, np.int64),
            "label": part.label,
            **{c: part.values[:, i] for i, c in enumerate(CHANNELS)},
            "incident": np.full(n, None, dtype=object),
        }
        for c in OUTPUT_COLUMNS:
            columns[c].append(got[c])
    out = pd.DataFrame(
        {c: v[0] if len(v) == 1 else np.concatenate(v) for c, v in columns.items()},
        columns=OUTPUT_COLUMNS,
        copy=False,  # our own fresh arrays: a quarter of the frame's cost per mote
    )
    return out, history


def step_mote(
    bundle: ModelBundle,
    version: int,
    history: DeviceHistory,
    incidents: IncidentState | None,
    valid: Decoded,
    quiet_s: float,
) -> tuple[list[pd.DataFrame], DeviceHistory, IncidentState]:
    """One mote's stateful step: :func:`score_mote`, then its incidents
    (:func:`~iot_fed.analytics.incidents.advance`) from the readings newer than the history
    (a late or repeated reading never touches an incident). Output frames: the predictions,
    then the ``incident`` rows if any (built as the ``skipped`` ones are: all-null columns
    convert to Arrow as they do)."""
    if incidents is None:  # a state from before incidents: start from the history's end
        incidents = IncidentState(last_epoch=history.last_epoch)
    out, history = score_mote(bundle, version, history, valid)
    incidents, docs = advance(int(valid.moteid[0]), incidents, out, quiet_s)
    frames = [out]
    if docs:
        moteid = int(valid.moteid[0])
        rows = [{"kind": "incident", "moteid": moteid, "incident": json.dumps(d)} for d in docs]
        frames.append(pd.DataFrame(rows, columns=OUTPUT_COLUMNS))
    return frames, history, incidents


def stateful_scorer(
    target: MongoTarget, max_bytes: int, refresh_s: float, timeout_ms: int, quiet_s: float
):
    """The ``applyInPandasWithState`` function. Its key, ``(moteid,)``, is the Kafka key,
    or for an unkeyed record the value's ``moteid`` (see ``mote_key`` in
    :mod:`iot_fed.analytics.streaming`); null when neither is an integer.

    Valid readings of another mote than the key (a null key, or a value whose fields
    the two JSON parsers read differently) are scored per mote with no history, and do
    not touch the state: one series per device, never a mix (nor any incident)."""

    def run(
        key: tuple[Any, ...], pdfs: Iterable[pd.DataFrame], state: Any
    ) -> Iterator[pd.DataFrame]:
        if state.hasTimedOut:  # the mote was silent for the timeout: forget its window
            state.remove()
            return
        frames = list(pdfs)  # one frame per Arrow batch of the group: usually one
        raw = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
        decoded = decode_records(raw, max_bytes)
        if decoded.skipped:
            yield pd.DataFrame(decoded.skipped, columns=OUTPUT_COLUMNS)
        if not len(decoded):
            return
        version, bundle = executor_model(target, refresh_s).current()
        own = decoded.moteid == key[0] if key[0] is not None else np.zeros(len(decoded), bool)
        if own.any():
            history, incidents = (
                load_state(state.get[0]) if state.exists else (DeviceHistory.empty(), None)
            )
            mine = decoded if own.all() else decoded.take(np.flatnonzero(own))
            frames, history, incidents = step_mote(
                bundle, version, history, incidents, mine, quiet_s
            )
            state.update((state_text(history, incidents),))
            state.setTimeoutDuration(timeout_ms)
            yield from frames
        for mote in np.unique(decoded.moteid[~own]):
            idx = np.flatnonzero(decoded.moteid == mote)
            yield score_mote(bundle, version, DeviceHistory.empty(), decoded.take(idx))[0]

    return run
