"""The reading contract, in one place: fields, dtypes, Spark schema, dead-letter documents.

A reading is one sample of one mote: ``ts`` (UTC), ``epoch``, ``moteid``, the four
:data:`CHANNELS` and an optional ``label``. The Kafka message (:mod:`iot_fed.stream.messages`),
the MongoDB document (:mod:`iot_fed.store`), the clean table (:mod:`iot_fed.data`) and the
Spark readers (:mod:`iot_fed.analytics`) all take their field list from here.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from pyspark.sql.types import StructType

CHANNELS: tuple[str, ...] = ("temperature", "humidity", "light", "voltage")
FAIL_VOLTAGE = 2.3
"""Battery voltage below which a mote fails (the generator drains to it; the scorers'
sanity rule alarms below it)."""
FIELDS: tuple[str, ...] = ("ts", "epoch", "moteid", *CHANNELS, "label")
"""Every field of a reading, in wire / storage order."""

DTYPES: dict[str, str] = {
    "ts": "datetime64[ns, UTC]",
    "epoch": "int64",
    "moteid": "int64",
    **{c: "float64" for c in CHANNELS},
    "label": "object",
}
"""pandas dtypes of a readings frame (``label`` is a string or None)."""

_SPARK_TYPES = {"ts": "timestamp", "epoch": "long", "moteid": "integer", "label": "string"}
_NULLABLE = {"label"}

VALIDATE_REASONS = ("missing", "unknown schema", "bad ", "key ")
"""Reason prefixes of a well-formed message with a bad reading (``stage`` 'validate')."""


def spark_schema() -> StructType:
    """The Spark ``StructType`` of a reading (imports PySpark only when called)."""
    from pyspark.sql import types as T

    by_name = {
        "timestamp": T.TimestampType(),
        "long": T.LongType(),
        "integer": T.IntegerType(),
        "string": T.StringType(),
        "double": T.DoubleType(),
    }
    return T.StructType(
        [T.StructField(f, by_name[_SPARK_TYPES.get(f, "double")], f in _NULLABLE) for f in FIELDS]
    )


UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def datetime_ms(ts: datetime) -> int:
    """Milliseconds since the Unix epoch; a naive datetime is UTC (as pymongo returns it)."""
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return (ts - UNIX_EPOCH) // timedelta(milliseconds=1)


def ms_datetime(ms: int) -> datetime:
    """The UTC datetime of ``ms`` milliseconds since the Unix epoch."""
    return UNIX_EPOCH + timedelta(milliseconds=int(ms))


def epoch_ms(ts: pd.Series) -> np.ndarray:
    """A readings frame's ``ts`` column as int64 ms since the Unix epoch (UTC): the time
    axis of the window features (imports pandas only when called)."""
    import numpy as np
    import pandas as pd

    naive = pd.to_datetime(ts, utc=True).dt.tz_localize(None).to_numpy()
    return naive.astype("datetime64[ms]").astype(np.int64)


DEAD_LETTER_RAW_BYTES = 256 * 1024
"""The most of a rejected value (and of its key) a dead letter keeps, in MongoDB and in the
DLQ topic. A producer's compression lets the source topic hold a value far over the
broker's 1 MB uncompressed record limit, which the DLQ producer then cannot send (and over
16 MB, no document could hold it): the dead letter keeps the value's first bytes, its
``raw_size`` and its source position, where the whole value stays for the topic's
retention."""


def dead_letter_raw(raw: bytes | None) -> bytes | None:
    """``raw`` cut to :data:`DEAD_LETTER_RAW_BYTES`."""
    return raw if raw is None or len(raw) <= DEAD_LETTER_RAW_BYTES else raw[:DEAD_LETTER_RAW_BYTES]


def dead_letter_doc(
    *,
    doc_id: str,
    reason: str,
    raw: bytes | None,
    key: bytes | None,
    topic: str,
    partition: int,
    offset: int,
    stage: str | None = None,
) -> dict[str, Any]:
    """A ``dead_letters`` document: the reason, the original bytes (their first
    :data:`DEAD_LETTER_RAW_BYTES`; ``raw_size`` is the whole length) and where they came
    from.

    ``doc_id`` is derived from the source position so re-consuming a message is a no-op;
    ``stage`` defaults to 'validate' or 'decode' from the reason.
    """
    if stage is None:
        stage = "validate" if reason.startswith(VALIDATE_REASONS) else "decode"
    key = dead_letter_raw(key)
    return {
        "_id": doc_id,
        "ts": datetime.now(UTC),
        "reason": reason,
        "stage": stage,
        "raw": dead_letter_raw(raw),
        "raw_size": None if raw is None else len(raw),
        "key": None if key is None else key.decode("utf-8", "backslashreplace"),
        "topic": topic,
        "partition": partition,
        "offset": offset,
    }
