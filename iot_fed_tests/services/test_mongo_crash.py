"""kill -9 right after acknowledged inserts, many times: after each restart the unique index
(moteid, epoch) agrees with the documents.

Writers insert batches (unordered, ``j: true``) concurrently, as ingesters and the scorer
do; the server is killed with SIGKILL as soon as some batches were acknowledged, while
others are in flight. After the restart every unacknowledged batch is re-sent (the
ingester's retry after a connection error), then: every acknowledged and every re-sent key
is stored exactly once, documents == distinct keys == entries of each index, each key is
found through the unique index, and re-inserting an acknowledged reading is refused. No
restart needed the server's index repair (which would hide an inconsistent commit).

``IOT_FED_TEST_MONGO_SERVER_JAR`` runs it against another build of the server (e.g. an
older jar from ``assets_data/services/artifacts/mongo-server/``).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from pymongo import ASCENDING, MongoClient
from pymongo.collection import Collection
from pymongo.errors import BulkWriteError, DuplicateKeyError, PyMongoError
from pymongo.write_concern import WriteConcern

from iot_fed.config import Settings
from iot_fed.services import artifacts, manager
from iot_fed.services.process import port_open

pytestmark = pytest.mark.skipif(shutil.which("java") is None, reason="needs a JDK")

CYCLES = 24
WRITERS = 4
MOTES_PER_WRITER = 10  # 40 motes: one mote's keys are a small share (read by index range)
EPOCHS_PER_BATCH = 10  # a batch: 100 readings of one writer's motes
ACKS_BEFORE_KILL = 4  # acknowledged batches in a cycle before the kill
DUPLICATE_KEY = 11000

Batch = list[dict]


@pytest.fixture(scope="module")
def server_jar(settings: Settings) -> Path:
    override = os.environ.get("IOT_FED_TEST_MONGO_SERVER_JAR")
    if override:
        return Path(override)
    if settings.mongodb_server != "mongo-java-server":
        pytest.skip("the session uses another MongoDB-compatible server")
    manager.install(settings, ["mongodb"])
    return artifacts.mongo_java_server_jar(settings.state_dir)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SERVER_HEAP_MB = Settings.model_fields["mongodb_server_heap_mb"].default
"""The product's heap: the stop cycles keep up to ~400 MB of documents, and with 512 MB the
final commit at a stop ran out of heap (``OutOfMemoryError`` in the shutdown hook)."""


@contextmanager
def _server(jar: Path, store: Path, log: Path) -> Iterator[tuple[subprocess.Popen, str]]:
    """One server on ``store`` (a free port); killed with SIGKILL at the end if still up."""
    port = _free_port()
    cmd = ["java", f"-Xmx{SERVER_HEAP_MB}m", "-cp", str(jar), artifacts.MONGO_JAVA_SERVER_MAIN]
    with log.open("a") as out:
        proc = subprocess.Popen(
            [*cmd, "127.0.0.1", str(port), str(store)], stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 60
        while not port_open("127.0.0.1", port):
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "server did not listen within 60 s"
            time.sleep(0.05)
        yield proc, f"mongodb://127.0.0.1:{port}/"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)


def _readings(client: MongoClient) -> Collection:
    db = client.get_database("crash", write_concern=WriteConcern(w=1, j=True))
    return db.sensor_readings


def _insert_tolerating_duplicates(coll: Collection, batch: Batch) -> None:
    """Unordered insert where a key already stored is fine (the ingester's retry)."""
    try:
        coll.insert_many([{k: v for k, v in d.items() if k != "_id"} for d in batch], ordered=False)
    except BulkWriteError as err:
        others = [e for e in err.details["writeErrors"] if e["code"] != DUPLICATE_KEY]
        assert not others, others


class Writers:
    """``WRITERS`` threads inserting fresh batches until stopped or the server is gone."""

    def __init__(self, uri: str, next_epoch: list[int]) -> None:
        self.client: MongoClient = MongoClient(
            uri, serverSelectionTimeoutMS=2000, socketTimeoutMS=10_000, retryWrites=False
        )
        self.next_epoch = next_epoch  # per writer, carried over cycles
        self.acked: list[Batch] = []
        self.pending: list[Batch] = []  # sent, answer lost: re-sent after the restart
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(w,)) for w in range(WRITERS)]

    def _batch(self, w: int) -> Batch:
        e0 = self.next_epoch[w]
        self.next_epoch[w] += EPOCHS_PER_BATCH
        motes = range(w * MOTES_PER_WRITER, (w + 1) * MOTES_PER_WRITER)
        epochs = range(e0, e0 + EPOCHS_PER_BATCH)
        return [
            {"moteid": m, "epoch": e, "temperature": 20.0 + e % 7} for m in motes for e in epochs
        ]

    def _run(self, w: int) -> None:
        coll = _readings(self.client)
        while not self.stop.is_set():
            batch = self._batch(w)
            try:
                coll.insert_many(batch, ordered=False)
            except PyMongoError:
                with self.lock:
                    self.pending.append(batch)
                return
            with self.lock:
                self.acked.append(batch)

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def join(self) -> None:
        for t in self.threads:
            t.join(60)
            assert not t.is_alive(), "a writer did not stop"
        self.client.close()


def _check(coll: Collection, sent: set[tuple[int, int]], acked: Batch) -> None:
    """The unique index against the documents (see the module docstring)."""
    docs = list(coll.find({}, {"moteid": 1, "epoch": 1}))
    keys = [(d["moteid"], d["epoch"]) for d in docs]
    assert len(keys) == len(set(keys)), f"{len(keys) - len(set(keys))} duplicate readings"
    assert set(keys) == sent, (
        f"{len(sent - set(keys))} sent readings missing, {len(set(keys) - sent)} unknown"
    )
    stats = coll.database.command("validate", coll.name)
    assert stats["nrecords"] == len(docs)
    assert stats["keysPerIndex"] == {"_id_": len(docs), "moteid_1_epoch_1": len(docs)}
    ids_by_mote: dict[int, set] = {}
    for d in docs:
        ids_by_mote.setdefault(d["moteid"], set()).add(d["_id"])
    for mote, ids in ids_by_mote.items():  # a key range of the unique index per mote
        found = {d["_id"] for d in coll.find({"moteid": mote, "epoch": {"$gte": 0}}, {"_id": 1})}
        assert found == ids, f"mote {mote}: the unique index and the documents disagree"
    for doc in acked[:: max(1, len(acked) // 5)] + acked[-1:]:
        with pytest.raises(DuplicateKeyError):
            coll.insert_one({"moteid": doc["moteid"], "epoch": doc["epoch"]})


def test_unique_index_agrees_with_documents_after_kill_9(server_jar: Path, tmp_path: Path) -> None:
    store, log = tmp_path / "data.mv", tmp_path / "server.log"
    next_epoch = [0] * WRITERS
    acked: Batch = []
    sent: set[tuple[int, int]] = set()
    pending: list[Batch] = []
    for cycle in range(CYCLES):
        with _server(server_jar, store, log) as (proc, uri):
            with MongoClient(uri, serverSelectionTimeoutMS=10_000) as client:
                coll = _readings(client)
                if cycle == 0:
                    coll.create_index([("moteid", ASCENDING), ("epoch", ASCENDING)], unique=True)
                for batch in pending:  # drain: what the last cycle left unanswered
                    _insert_tolerating_duplicates(coll, batch)
                _check(coll, sent, acked)
            writers = Writers(uri, next_epoch)
            writers.start()
            while len(writers.acked) < ACKS_BEFORE_KILL and any(
                t.is_alive() for t in writers.threads
            ):
                time.sleep(0.001)
            writers.stop.set()
            proc.send_signal(signal.SIGKILL)  # right after the acknowledged inserts
            proc.wait(30)
            writers.join()
        assert len(writers.acked) >= ACKS_BEFORE_KILL, log.read_text()[-3000:]
        acked += [d for b in writers.acked for d in b]
        pending = writers.pending
        sent |= {(d["moteid"], d["epoch"]) for b in writers.acked + pending for d in b}
    with _server(server_jar, store, log) as (_, uri), MongoClient(uri) as client:
        coll = _readings(client)
        for batch in pending:
            _insert_tolerating_duplicates(coll, batch)
        _check(coll, sent, acked)
    # every restart found the store consistent: no index needed the repair on open
    assert "rebuilt from the documents" not in log.read_text()


STOP_CYCLES = 20  # the old server lost writes within 3-17 cycles of 30 (two runs)


def _fill_until_stopped(uri: str, first_id: int, acked: list[int]) -> None:
    """Insert batches of fat documents (``w: 1``, no journal) until the server goes away;
    ``acked`` gets each acknowledged batch's first _id. Fat batches keep the server's
    once-a-second save busy writing, the moment a stop used to break."""
    pad = "x" * 4000
    with MongoClient(uri, serverSelectionTimeoutMS=2000, retryWrites=False) as client:
        coll = client.crash.fat
        n = first_id
        while True:
            try:
                coll.insert_many([{"_id": n + i, "pad": pad} for i in range(500)])
            except PyMongoError:
                return
            acked.append(n)
            n += 500


def test_a_clean_stop_keeps_every_acknowledged_write(server_jar: Path, tmp_path: Path) -> None:
    """SIGTERM (``iot-fed services down``) while writes and the background save run: every
    acknowledged write is in the store after the restart. Stopping the saver used to
    interrupt a save, which closed H2's file channel and failed the final commit."""
    store, log = tmp_path / "data.mv", tmp_path / "server.log"
    expected = 0
    for cycle in range(STOP_CYCLES + 1):
        with _server(server_jar, store, log) as (proc, uri):
            with MongoClient(uri, serverSelectionTimeoutMS=10_000) as client:
                stored = client.crash.fat.count_documents({})
            assert stored >= expected, f"cycle {cycle}: {stored} stored of {expected} acknowledged"
            assert "failed" not in log.read_text(), log.read_text()[-3000:]
            if cycle == STOP_CYCLES:
                break
            acked: list[int] = []
            writer = threading.Thread(target=_fill_until_stopped, args=(uri, stored, acked))
            writer.start()
            deadline = time.monotonic() + 60
            while len(acked) < 2 + cycle % 3 and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(0.1 * (cycle % 7))  # at different points of the save's period
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
            writer.join(60)
        expected = stored + 500 * len(acked)
