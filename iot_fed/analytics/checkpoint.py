"""The streaming scorer's checkpoint: where it lives, what it was made with, and its reset.

A checkpoint lives at ``<root>/<name>``, ``root`` being ``IOT_FED_SCORER_CHECKPOINT`` (a
local path or any Hadoop-compatible URI: ``hdfs://``, ``s3a://``, ...; default
``<data_dir>/checkpoints``). It is read and written through the Spark JVM's Hadoop
``FileSystem``, so every scheme Spark itself can checkpoint to works here too.

Its state is laid out by the settings it was made with (state partitions, mote buckets,
the state's layout): Spark keeps them from the checkpoint, and a different count can only
mean a new checkpoint. :func:`check_checkpoint` refuses such a checkpoint, naming the
difference and the command that resets it; :func:`reset_checkpoint` moves it aside and
starts the new one from the old one's committed offsets (not the topic's earliest):
nothing committed is scored twice, nothing after it is skipped. The reset loses the
devices' scoring context (they are "learning" for a window) and nothing else.

What iot_fed itself records lives in ``<checkpoint>/iot_fed.json``
(:class:`CheckpointMeta`), next to Spark's own ``offsets/``, ``commits/`` and ``state/``.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass
from typing import Any

from iot_fed.config import Settings

META_FILE = "iot_fed.json"
LAYOUT = "buckets-v2"
"""The state's layout: one state row per mote bucket, its motes' states as arrays in one
value (:mod:`iot_fed.analytics.bucket_state`; ``buckets-v1``: a pickled tuple per mote)."""
SHUFFLE_PARTITIONS = "spark.sql.shuffle.partitions"
STATE_STORE_PROVIDER = "spark.sql.streaming.stateStore.providerClass"
STATE_STORES = {
    "rocksdb": "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider",
    "hdfs": "org.apache.spark.sql.execution.streaming.state.HDFSBackedStateStoreProvider",
}


class CheckpointMismatchError(RuntimeError):
    """A checkpoint made with other state settings than the current ones."""


def checkpoint_location(settings: Settings, name: str) -> str:
    """The checkpoint ``name`` under the configured root (a path or a URI)."""
    root = settings.scorer_checkpoint or str(settings.data_dir / "checkpoints")
    return f"{root.rstrip('/')}/{name}"


@dataclass(frozen=True)
class CheckpointMeta:
    """What a checkpoint was made with, and where its query starts."""

    layout: str
    state_partitions: int
    buckets: int
    starting_offsets: dict[str, dict[str, int]] | None = None
    """The Kafka offsets a reset checkpoint starts from (None: the topic's earliest)."""

    @classmethod
    def of(cls, settings: Settings, starting_offsets: Any = None) -> CheckpointMeta:
        return cls(
            LAYOUT, settings.scorer_state_partitions, settings.scorer_buckets, starting_offsets
        )

    def differences(self, want: CheckpointMeta) -> list[str]:
        """What in ``want`` this checkpoint's state cannot follow, one phrase each."""
        out = []
        if self.layout != want.layout:
            out.append(f"its state layout is {self.layout} (this scorer: {want.layout})")
        if self.state_partitions != want.state_partitions:
            out.append(
                f"it was made with {self.state_partitions} state partitions "
                f"(IOT_FED_SCORER_STATE_PARTITIONS={want.state_partitions})"
            )
        if self.layout == want.layout and self.buckets != want.buckets:
            out.append(
                f"it was made with {self.buckets} mote buckets "
                f"(IOT_FED_SCORER_BUCKETS={want.buckets})"
            )
        return out


class CheckpointFiles:
    """A checkpoint's files through the Spark JVM's Hadoop ``FileSystem`` (any scheme)."""

    def __init__(self, spark: Any, location: str) -> None:
        jvm = spark.sparkContext._jvm
        self._jvm = jvm
        self.location = location
        self.root = jvm.org.apache.hadoop.fs.Path(location)
        self.fs = self.root.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())

    def _path(self, rel: str) -> Any:
        return self._jvm.org.apache.hadoop.fs.Path(self.root, rel)

    def exists(self, rel: str = "") -> bool:
        return bool(self.fs.exists(self._path(rel) if rel else self.root))

    def read(self, rel: str) -> str | None:
        path = self._path(rel)
        if not self.fs.exists(path):
            return None
        stream = self.fs.open(path)
        try:
            return str(self._jvm.org.apache.commons.io.IOUtils.toString(stream, "UTF-8"))
        finally:
            stream.close()

    def write(self, rel: str, text: str) -> None:
        stream = self.fs.create(self._path(rel), True)
        try:
            stream.write(bytearray(text.encode()))
        finally:
            stream.close()

    def batch_ids(self, sub: str) -> list[int]:
        """The batch ids of ``offsets/`` or ``commits/`` (files named by their id)."""
        path = self._path(sub)
        if not self.fs.exists(path):
            return []
        names = [s.getPath().getName() for s in self.fs.listStatus(path)]
        return sorted(int(n) for n in names if n.isdigit())

    def move_aside(self) -> str:
        """Rename the checkpoint to ``<name>.reset-<UTC time>``; return its new location."""
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
        target = f"{self.location.rstrip('/')}.reset-{stamp}"
        if not self.fs.rename(self.root, self._jvm.org.apache.hadoop.fs.Path(target)):
            raise OSError(f"could not rename {self.location} to {target}")
        return target


def _offsets_file(files: CheckpointFiles, batch_id: int) -> tuple[dict[str, Any], list[str]]:
    """A batch's ``offsets/<id>``: its metadata (with the SQL confs Spark keeps) and one
    JSON line of end offsets per source."""
    text = files.read(f"offsets/{batch_id}") or ""
    lines = text.splitlines()
    if len(lines) < 2 or not lines[0].startswith("v"):
        raise ValueError(f"{files.location}/offsets/{batch_id} is not a Spark offsets file")
    return json.loads(lines[1]), lines[2:]


def read_meta(files: CheckpointFiles) -> CheckpointMeta | None:
    """What the checkpoint was made with; None for a fresh one (no batch planned yet).

    A checkpoint from before :data:`LAYOUT` has no ``iot_fed.json``: its partition count
    is the one Spark recorded, its layout the old one state row per mote."""
    text = files.read(META_FILE)
    if text is not None:
        return CheckpointMeta(**json.loads(text))
    ids = files.batch_ids("offsets")
    if not ids:
        return None
    conf = _offsets_file(files, ids[-1])[0].get("conf", {})
    return CheckpointMeta("per-mote", int(conf.get(SHUFFLE_PARTITIONS, 0)), 0)


def committed_offsets(files: CheckpointFiles) -> dict[str, dict[str, int]] | None:
    """The Kafka offsets up to which the checkpoint's output is committed (the end offsets
    of its last committed batch); None when nothing is committed."""
    committed = files.batch_ids("commits")
    if not committed:
        return None
    sources = _offsets_file(files, committed[-1])[1]
    if len(sources) != 1:
        raise ValueError(f"{files.location}: expected one source, found {len(sources)}")
    return json.loads(sources[0])


def reset_command(name: str) -> str:
    return f"iot-fed spark-stream --checkpoint {name} --reset-checkpoint"


def check_checkpoint(spark: Any, settings: Settings, name: str) -> CheckpointMeta:
    """The checkpoint's meta, written for a fresh one; raise
    :class:`CheckpointMismatchError` (the reason and the reset command) when its state
    was laid out with other settings."""
    files = CheckpointFiles(spark, checkpoint_location(settings, name))
    want = CheckpointMeta.of(settings)
    have = read_meta(files)
    if have is None or not files.batch_ids("offsets"):  # no state yet: take the settings
        want = CheckpointMeta.of(settings, have and have.starting_offsets)
        files.write(META_FILE, json.dumps(asdict(want)))
        return want
    if differences := have.differences(want):
        raise CheckpointMismatchError(
            f"scorer checkpoint {files.location}: {'; '.join(differences)}. Its state cannot "
            f"be re-laid out: set the settings back, or reset it (the devices' scoring context "
            f"restarts; scoring resumes from its committed offsets): {reset_command(name)}"
        )
    return have


def reset_checkpoint(spark: Any, settings: Settings, name: str) -> dict[str, Any]:
    """Move the checkpoint aside and make a new one with the current settings, starting
    from the old one's committed offsets; return what was done."""
    files = CheckpointFiles(spark, checkpoint_location(settings, name))
    if not files.exists():
        return {"checkpoint": files.location, "reset": False, "reason": "no such checkpoint"}
    old = read_meta(files)
    start = committed_offsets(files)
    if start is None and old is not None:  # a reset one that committed nothing yet
        start = old.starting_offsets
    aside = files.move_aside()
    meta = CheckpointMeta.of(settings, start)
    CheckpointFiles(spark, files.location).write(META_FILE, json.dumps(asdict(meta)))
    return {
        "checkpoint": files.location,
        "reset": True,
        "old_checkpoint": aside,
        "starting_offsets": start,
    }
