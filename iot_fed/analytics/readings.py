"""Readings from MongoDB into Spark: a partitioned pymongo read executed by Spark tasks.

The motes are packed into ``n`` balanced groups on the driver (by their stored reading
counts); each Spark task then queries its group's readings with pymongo and yields
Arrow-friendly pandas chunks (``mapInPandas``). This works the same on a real MongoDB
and on FerretDB, where the MongoDB Spark connector cannot partition (no ``$sample`` /
``collStats``).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import pandas as pd
from pyspark.sql import DataFrame, SparkSession

from iot_fed.config import Settings
from iot_fed.readings import CHANNELS, spark_schema
from iot_fed.readings import FIELDS as READING_FIELDS
from iot_fed.store import SENSOR_READINGS, connect, reading_counts

CHUNK_ROWS = 50_000

READINGS_SCHEMA = spark_schema()


@dataclass(frozen=True)
class MongoTarget:
    """Where executors connect (plain strings: cheap to ship to Spark tasks)."""

    uri: str
    database: str
    timeout_s: float = 10.0

    @classmethod
    def from_settings(cls, settings: Settings) -> MongoTarget:
        return cls(
            settings.mongodb_uri, settings.mongodb_database, max(settings.mongodb_timeout_s, 10.0)
        )

    def connect(self):
        """A pinged pymongo ``Database`` (close with ``db.client.close()``)."""
        return connect(self.uri, self.database, self.timeout_s)

    def shared(self):
        """A ``Database`` on a client cached for this process (Spark tasks reuse it across
        micro-batches; do not close it)."""
        key = (self.uri, self.timeout_s)
        client = _CLIENTS.get(key)
        if client is None:
            client = _CLIENTS[key] = self.connect().client
        return client[self.database]


_CLIENTS: dict[tuple[str, float], Any] = {}


def balanced_groups(counts: dict[int, int], n: int) -> list[list[int]]:
    """Pack motes into at most ``n`` groups of similar total size (largest first)."""
    n = max(1, min(n, len(counts)))
    heap = [(0, i) for i in range(n)]
    groups: list[list[int]] = [[] for _ in range(n)]
    for mote, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        total, i = heapq.heappop(heap)
        groups[i].append(int(mote))
        heapq.heappush(heap, (total + int(c), i))
    return [sorted(g) for g in groups if g]


def docs_to_frame(docs: list[dict]) -> pd.DataFrame:
    """MongoDB reading documents -> a pandas frame with :data:`READINGS_SCHEMA` dtypes."""
    df = pd.DataFrame.from_records(docs, columns=list(READING_FIELDS))
    df["ts"] = pd.to_datetime(df["ts"], utc=True)
    df["epoch"] = df["epoch"].astype("int64")
    df["moteid"] = df["moteid"].astype("int32")
    for c in CHANNELS:
        df[c] = df[c].astype("float64")
    df["label"] = df["label"].astype(object).where(df["label"].notna(), None)
    return df


def _fetch_groups(target: MongoTarget, groups: list[list[int]]):
    """mapInPandas body: each input row is a group index; yield its readings in chunks."""
    projection = {f: 1 for f in READING_FIELDS} | {"_id": 0}

    def fetch(batches: Iterable[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        db = target.connect()
        try:
            for batch in batches:
                for gid in batch["id"].tolist():
                    cursor = db[SENSOR_READINGS].find(
                        {"moteid": {"$in": groups[int(gid)]}}, projection, batch_size=10_000
                    )
                    chunk: list[dict] = []
                    for doc in cursor:
                        chunk.append(doc)
                        if len(chunk) >= CHUNK_ROWS:
                            yield docs_to_frame(chunk)
                            chunk = []
                    if chunk:
                        yield docs_to_frame(chunk)
        finally:
            db.client.close()

    return fetch


def read_readings(
    spark: SparkSession,
    settings: Settings,
    moteids: Iterable[int] | None = None,
    num_partitions: int | None = None,
) -> DataFrame:
    """All stored readings (or those of ``moteids``) as a Spark DataFrame.

    Columns follow :data:`READINGS_SCHEMA` (the contract's reading fields, ``ts`` in UTC).
    ``num_partitions`` defaults to twice Spark's default parallelism.
    """
    target = MongoTarget.from_settings(settings)
    db = target.connect()
    try:
        counts = {m: c["count"] for m, c in reading_counts(db).items()}
    finally:
        db.client.close()
    if moteids is not None:
        wanted = {int(m) for m in moteids}
        counts = {m: c for m, c in counts.items() if m in wanted}
    if not counts:
        return spark.createDataFrame([], READINGS_SCHEMA)
    n = num_partitions or 2 * spark.sparkContext.defaultParallelism
    groups = balanced_groups(counts, n)
    ids = spark.range(0, len(groups), numPartitions=len(groups))
    return ids.mapInPandas(_fetch_groups(target, groups), READINGS_SCHEMA)
