"""The stateful step of the streaming scorer (runs in Spark's Python workers).

``applyInPandasWithState`` keyed by a bucket of motes (:func:`bucket_key`: a hash of the
mote modulo ``IOT_FED_SCORER_BUCKETS``): each call receives its bucket's new Kafka records
of a micro-batch, decodes them (:func:`iot_fed.stream.messages.decode_value`), and scores
the valid ones of ALL its motes in one :func:`iot_fed.fl.stream_scoring.score_batch` call
(columns for the whole bucket, no Python object per reading), threading each device's
history. It emits one
output row per record: ``kind`` ``prediction`` or ``skipped`` (malformed: ingestion
dead-letters it; the scorer only counts it), plus one ``incident`` row (its document as
JSON) per incident the readings opened, extended or closed
(:func:`iot_fed.analytics.incidents.advance`, whose per-device state rides in the same
state as the history).

Why buckets: a group per mote was one Python call per device per micro-batch (its
frame, its state, its own small ``score_device``), which does not scale to 10,000 devices
(``bench/bench_scorer.py --python-cost``). The state stays exact per mote: a bucket's
state (:class:`~iot_fed.analytics.bucket_state.BucketState`, one pickled value) keeps its
motes' histories and incident states as arrays. A mote silent for the state timeout loses
its state at its bucket's next call; a bucket silent that long loses its whole state
(``GroupStateTimeout.ProcessingTimeTimeout``); an open incident is then closed by the
fleet's data time. The bucket count is part of the checkpoint's layout
(:mod:`iot_fed.analytics.checkpoint`).

Why ``applyInPandasWithState`` and not ``transformWithStateInPandas``: in pyspark 4.0 the
latter only runs on the RocksDB state store provider and is still marked experimental;
the former runs on the default HDFS-backed store in local mode with nothing extra. Nor is
it cheaper here. A probe with the same query shape (a value state with a 1 h TTL, read and
written per mote, 10 rec/s) took 1.17 s per micro-batch against 0.79-1.13 s. Its TTL needs
no Python timeout pass, which saves ~60 ms, but the RocksDB commit cost 60-100 ms more and
the planning was slower. The state store provider is a setting
(``IOT_FED_SCORER_STATE_STORE``, RocksDB by default: its state lives off the JVM heap,
which a cluster's executors need at 10,000 devices; figures in docs/performance.md).

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
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import Column
from pyspark.sql import functions as F
from pyspark.sql import types as T

from iot_fed.analytics.bucket_state import BucketState, load_state, state_bytes
from iot_fed.analytics.incidents import IncidentState, advance
from iot_fed.analytics.models import ModelNotAvailableError, load_scoring_bundle
from iot_fed.analytics.readings import MongoTarget
from iot_fed.fl.device_history import NO_EPOCH, HistoryColumns
from iot_fed.fl.sanity import SANITY_PREFIX
from iot_fed.fl.serialization import ModelBlobError, ModelBundle
from iot_fed.fl.stream_scoring import DeviceHistory, ReadingsBatch, ScoredReadings, score_batch
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
    key: np.ndarray  # int64: the mote its record is keyed by (``gkey``; -1: none)
    skipped: list[dict[str, Any]]

    def __len__(self) -> int:
        return len(self.epoch)

    def take(self, idx: np.ndarray) -> Decoded:
        """The valid records at ``idx`` (no skipped ones)."""
        arrays = {name: getattr(self, name)[idx] for name in _ROWS}
        return replace(self, **arrays, skipped=[])


_ROWS = (
    "epoch",
    "ts_ms",
    "values",
    "kafka_ts_ms",
    "kafka_offset",
    "order",
    "label",
    "moteid",
    "key",
)


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
    mote = np.asarray(moteid, np.int64)
    if "gkey" in raw:  # the stateful step's input; else (tests) each record is its own mote's
        g = raw["gkey"].to_numpy(np.float64, na_value=np.nan)[idx]
        key = np.where(np.isnan(g), -1, g).astype(np.int64)
    else:
        key = mote
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
        moteid=mote,
        key=key,
        skipped=skipped,
    )


def _late_reasons(reasons: np.ndarray, late: np.ndarray) -> np.ndarray:
    """The scorer's reasons, with :data:`OUT_OF_ORDER` for the ``late`` readings except a
    data fault or a sanity rule (the only verdicts that flag a late reading)."""
    for i in np.flatnonzero(late).tolist():
        r = reasons[i]
        if not (r and r.startswith(("data_fault:", SANITY_PREFIX))):
            reasons[i] = OUT_OF_ORDER
    return reasons


def _in_time_order(valid: Decoded) -> Decoded:
    """Several motes' valid readings by mote, then time (a repeated epoch of a mote keeps
    its first record in Kafka order)."""
    if len(valid) < 2:
        return valid
    by = np.lexsort((valid.order[:, 1], valid.order[:, 0], valid.epoch, valid.moteid))
    m, e = valid.moteid[by], valid.epoch[by]
    first = np.ones(len(by), bool)
    first[1:] = (m[1:] != m[:-1]) | (e[1:] != e[:-1])
    return valid.take(by[first])


def _columns(rows: Decoded, scored: ScoredReadings, late: np.ndarray, version: int) -> Columns:
    """The output columns of scored readings (``late``: scored with no history)."""
    n = len(rows)
    return {
        "kind": np.full(n, "prediction", dtype=object),
        "moteid": rows.moteid,
        "epoch": rows.epoch,
        "ts_ms": rows.ts_ms,
        "kafka_ts_ms": rows.kafka_ts_ms,
        "kafka_offset": rows.kafka_offset,
        "score": np.asarray(scored.score, np.float64),
        **{f"err_{c}": scored.channel_errors[:, i] for i, c in enumerate(CHANNELS)},
        "flag": np.asarray(scored.flag, bool),
        "threshold": np.asarray(scored.threshold, np.float64),
        "reason": _late_reasons(np.array(scored.reason, dtype=object), late),
        "model_version": np.full(n, version, np.int64),
        "label": rows.label,
        **{c: rows.values[:, i] for i, c in enumerate(CHANNELS)},
        "incident": np.full(n, None, dtype=object),
    }


Columns = dict[str, np.ndarray]


def _frame(parts: Sequence[Columns]) -> pd.DataFrame:
    """One output frame of several column sets (our own fresh arrays: no copy; a dict in
    the schema's order, as ``columns=`` costs pandas a Series of the dict)."""
    if len(parts) == 1:
        return pd.DataFrame({c: parts[0][c] for c in OUTPUT_COLUMNS}, copy=False)
    cols = {c: np.concatenate([p[c] for p in parts]) for c in OUTPUT_COLUMNS}
    return pd.DataFrame(cols, copy=False)


@dataclass(frozen=True)
class MotesScored:
    """:func:`score_motes`' result: the output columns of every reading, each reading's
    mote (an index into the motes) and each mote's new history."""

    cols: Columns
    mote: np.ndarray
    histories: HistoryColumns


def score_motes(
    bundle: ModelBundle, version: int, histories: HistoryColumns, valid: Decoded
) -> MotesScored:
    """Score several motes' valid readings (``valid``: every reading of the motes, which are
    ``np.unique(valid.moteid)``, each with its history) in ONE
    :func:`~iot_fed.fl.stream_scoring.score_batch` call: each mote gets exactly what it
    gets scored alone. A mote's readings no newer than its history (late, or sent again)
    are scored as another device with no history (reason :data:`OUT_OF_ORDER`)."""
    rows = _in_time_order(valid)
    motes, mote = np.unique(rows.moteid, return_inverse=True)
    n = len(motes)
    if n != len(histories):
        raise ValueError(f"{len(histories)} histories for {n} motes")
    late = rows.epoch <= histories.last_epochs()[mote]
    # the new readings (by mote), then the late ones (by mote): one device each
    order = np.concatenate([np.flatnonzero(~late), np.flatnonzero(late)])
    rows, mote, late = rows.take(order), mote[order], late[order]
    late_motes, late_counts = np.unique(mote[late], return_counts=True)
    counts = np.concatenate([np.bincount(mote[~late], minlength=n), late_counts])
    batch = ReadingsBatch(
        np.concatenate([motes, motes[late_motes]]),
        histories.take(np.concatenate([np.arange(n), np.full(late_motes.size, -1)])),
        np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        rows.epoch,
        rows.ts_ms,
        rows.values,
    )
    scored, new = score_batch(bundle, batch)
    return MotesScored(_columns(rows, scored, late, version), mote, new.take(np.arange(n)))


def score_mote(
    bundle: ModelBundle, version: int, history: DeviceHistory, valid: Decoded
) -> tuple[pd.DataFrame, DeviceHistory]:
    """:func:`score_motes` of one mote, as a frame."""
    got = score_motes(bundle, version, HistoryColumns.of([history]), valid)
    return _frame([got.cols]), got.histories.histories()[0]


def step_motes(
    bundle: ModelBundle,
    version: int,
    histories: HistoryColumns,
    incidents: Sequence[IncidentState | None],
    valid: Decoded,
    quiet_s: float,
) -> tuple[list[pd.DataFrame], HistoryColumns, list[IncidentState]]:
    """Several motes' stateful step (``valid``: every reading of the motes
    ``np.unique(valid.moteid)``, each with its history and incident state):
    :func:`score_motes`, then each mote's incidents from its readings newer than its
    history (a late or repeated reading never touches an incident). Output frames: every
    mote's predictions, then the ``incident`` rows if any (built as the ``skipped`` ones
    are: all-null columns convert to Arrow as they do); each mote's new history and
    incident state."""
    got = score_motes(bundle, version, histories, valid)
    cols, n = got.cols, len(incidents)
    # with no open incident and nothing flagged, advance only moves last_epoch: no frame
    newest = np.full(n, NO_EPOCH, np.int64)
    np.maximum.at(newest, got.mote, cols["epoch"])
    flagged = (np.bincount(got.mote[cols["flag"]], minlength=n) > 0).tolist()
    motes = np.unique(cols["moteid"]).tolist()
    starts = histories.last_epochs().tolist()
    rows: list[dict[str, Any]] = []
    out = []
    for i, (state, top) in enumerate(zip(incidents, newest.tolist(), strict=True)):
        if state is None:  # a mote new to the state: start from its history's end
            state = IncidentState(None if starts[i] == NO_EPOCH else starts[i])
        if state.open is None and not flagged[i]:
            last = state.last_epoch
            state = IncidentState(top if last is None else max(last, top), None)
        else:
            mine = {k: v[got.mote == i] for k, v in cols.items()}
            state, docs = advance(motes[i], state, pd.DataFrame(mine, copy=False), quiet_s)
            rows += [
                {"kind": "incident", "moteid": motes[i], "incident": json.dumps(d)} for d in docs
            ]
        out.append(state)
    frames = [_frame([cols])] if len(valid) else []
    if rows:
        frames.append(pd.DataFrame(rows, columns=OUTPUT_COLUMNS))
    return frames, got.histories, out


def step_mote(
    bundle: ModelBundle,
    version: int,
    history: DeviceHistory,
    incidents: IncidentState | None,
    valid: Decoded,
    quiet_s: float,
) -> tuple[list[pd.DataFrame], DeviceHistory, IncidentState]:
    """:func:`step_motes` of one mote."""
    frames, new, [state] = step_motes(
        bundle, version, HistoryColumns.of([history]), [incidents], valid, quiet_s
    )
    return frames, new.histories()[0], state


def bucket_key(buckets: int) -> Column:
    """The stateful step's group: the bucket of the record's mote (``gkey``) among
    ``buckets`` (a null key has one bucket too)."""
    return F.pmod(F.xxhash64("gkey"), F.lit(buckets)).cast("int")


def stateful_scorer(
    target: MongoTarget, max_bytes: int, refresh_s: float, timeout_ms: int, quiet_s: float
):
    """The ``applyInPandasWithState`` function, grouped by a bucket of motes
    (:func:`bucket_key`): one call scores every mote of its bucket with data in the
    micro-batch at once (:func:`step_motes`), threading each mote's own state through
    the bucket's state (:class:`~iot_fed.analytics.bucket_state.BucketState`: the motes,
    their states and when each last had a reading). A mote silent for ``timeout_ms``
    (processing time) loses its state at the bucket's next call; a bucket silent that
    long loses its state (the group's timeout).

    A record belongs to the mote of its group key ``gkey`` (the Kafka key, or for an
    unkeyed record the value's ``moteid``; see ``mote_key`` in
    :mod:`iot_fed.analytics.streaming`). Valid readings of another mote than their key (a
    null key, or a value whose fields the two JSON parsers read differently) are scored
    per mote with no history, and touch no state: one series per device, never a mix (nor
    any incident)."""

    def run(
        key: tuple[Any, ...], pdfs: Iterable[pd.DataFrame], state: Any
    ) -> Iterator[pd.DataFrame]:
        if state.hasTimedOut:  # every mote of the bucket was silent for the timeout
            state.remove()
            return
        frames = list(pdfs)  # one frame per Arrow batch of the group: usually one
        raw = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
        decoded = decode_records(raw, max_bytes)
        if decoded.skipped:
            yield pd.DataFrame(decoded.skipped, columns=OUTPUT_COLUMNS)
        now = int(state.getCurrentProcessingTimeMs())
        bucket = load_state(state.get[0]) if state.exists else BucketState.empty()
        bucket = bucket.take(np.flatnonzero(now - bucket.seen_ms < timeout_ms))
        if len(decoded):
            version, bundle = executor_model(target, refresh_s).current()
            own = decoded.moteid == decoded.key
            mine = decoded.take(np.flatnonzero(own))
            motes = np.unique(mine.moteid)
            if motes.size:
                at = bucket.find(motes)
                incidents = [bucket.incidents[i] if i >= 0 else None for i in at.tolist()]
                out, histories, incidents = step_motes(
                    bundle, version, bucket.histories.take(at), incidents, mine, quiet_s
                )
                bucket = bucket.updated(motes, now, histories, incidents)
                yield from out
            foreign = decoded.take(np.flatnonzero(~own))
            if len(foreign):
                empty = HistoryColumns.empty(len(np.unique(foreign.moteid)))
                yield _frame([score_motes(bundle, version, empty, foreign).cols])
        if len(bucket):
            state.update((state_bytes(bucket),))
            state.setTimeoutDuration(timeout_ms)
        elif state.exists:
            state.remove()

    return run
