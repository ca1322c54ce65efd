"""mongo-java-server store format: a store written by an older ``MongoServerMain`` opens
with this one, with counts, lookups and unique-key rejection intact, also after new
writes and another restart (pages of both formats in one map).

The older entry points are kept verbatim in the mongo-server module, under
``src/test/resources/legacy/``:

* ``byte_order``: index keys in H2's serialized-bytes order, everything Java-serialized
  (re-sorted once by ``migrateIndexOrder``);
* ``java_serialized``: index keys in value order, documents/keys Java-serialized
  (read as they are: the BSON format is told apart by its tag byte).

Each server runs on a free port with its own store file under ``tmp_path``. The storage
pieces against mongo-java-server's own on random data: the module's JUnit StoreTypeTest.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import bson
import pytest
from bson import ObjectId
from pymongo import ASCENDING, MongoClient
from pymongo.collection import Collection
from pymongo.errors import BulkWriteError, DuplicateKeyError
from pymongo.write_concern import WriteConcern

from iot_fed.config import Settings
from iot_fed.services import artifacts, manager
from iot_fed.services.process import port_open

pytestmark = pytest.mark.skipif(
    shutil.which("javac") is None or shutil.which("java") is None, reason="needs a JDK"
)

LEGACY = artifacts.MONGO_SERVER_MODULE / "src" / "test" / "resources" / "legacy"
T0 = datetime(2004, 2, 28, tzinfo=UTC)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mjs_jar(settings: Settings) -> Path:
    """The installed mongo-server jar (this checkout's module, with its dependencies)."""
    if settings.mongodb_server != "mongo-java-server":
        pytest.skip("the session uses another MongoDB-compatible server")
    manager.install(settings, ["mongodb"])
    return artifacts.mongo_java_server_jar(settings.state_dir)


def _compile_legacy(version: str, jar: Path, out: Path) -> Path:
    """An older entry point (default package) compiled against the jar's dependencies."""
    out.mkdir(parents=True)
    src = LEGACY / version / "MongoServerMain.java"
    subprocess.run(
        ["javac", "-nowarn", "-d", str(out), "-cp", str(jar), str(src)],
        check=True,
        capture_output=True,
    )
    return out


@contextmanager
def _server(cp: str, main: str, store: Path, log: Path) -> Iterator[Collection]:
    """Run one MongoServerMain on ``store``; yields the readings collection (j=true)."""
    port = _free_port()
    with log.open("a") as out:
        proc = subprocess.Popen(
            ["java", "-Xmx256m", "-cp", cp, main, "127.0.0.1", str(port), str(store)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    client: MongoClient | None = None
    try:
        deadline = time.monotonic() + 60
        while not port_open("127.0.0.1", port):
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "server did not listen within 60 s"
            time.sleep(0.1)
        client = MongoClient(f"mongodb://127.0.0.1:{port}/", serverSelectionTimeoutMS=10_000)
        db = client.get_database("fmt", write_concern=WriteConcern(j=True))
        yield db.readings
    finally:
        if client is not None:
            client.close()
        proc.send_signal(signal.SIGTERM)  # the shutdown hook closes (commits) the store
        assert proc.wait(30) in (0, 128 + signal.SIGTERM), log.read_text()  # JVM: 143


def _readings(motes: range, epochs: range) -> list[dict]:
    """Readings with every value kind the store writes: int, long, double, str, date,
    nested document, array, bool, null."""
    return [
        {
            "moteid": m,
            "epoch": e,
            "ts": T0.replace(second=e % 60),
            "temperature": 19.5 + m + e / 100,
            "big": 2**40 + e,
            "label": f"m{m}e{e}",
            "ok": e % 2 == 0,
            "none": None,
            "pos": {"x": m * 1.5, "y": [m, e]},
        }
        for m in motes
        for e in epochs
    ]


def _check(coll: Collection, expected: list[dict]) -> None:
    """Count, lookups through the unique index and by _id, and duplicate rejection."""
    assert coll.count_documents({}) == len(expected)
    assert coll.estimated_document_count() == len(expected)
    for doc in expected[:: max(1, len(expected) // 25)]:
        got = coll.find_one({"moteid": doc["moteid"], "epoch": doc["epoch"]}, {"_id": 0})
        want = {k: v for k, v in doc.items() if k != "_id"}
        if "ts" in want:
            want["ts"] = want["ts"].replace(tzinfo=None)  # pymongo answers naive UTC
        assert got == want
    first = expected[0]
    assert coll.find_one({"_id": first["_id"]})["label"] == first["label"]
    ordered = [d["epoch"] for d in coll.find({"moteid": 2}).sort("epoch", -1)]
    assert ordered == sorted((d["epoch"] for d in expected if d["moteid"] == 2), reverse=True)
    with pytest.raises(DuplicateKeyError):
        coll.insert_one({"moteid": first["moteid"], "epoch": first["epoch"]})
    with pytest.raises(BulkWriteError) as err:  # unordered: the new one lands, dups don't
        coll.insert_many(
            [dict(d) for d in expected[-3:]] + [{"moteid": 99, "epoch": 0}], ordered=False
        )
    assert err.value.details["nInserted"] == 1
    coll.delete_one({"moteid": 99, "epoch": 0})


@pytest.mark.parametrize("version", ["byte_order", "java_serialized"])
def test_older_store_opens_with_counts_lookups_and_unique_keys(
    version: str, mjs_jar: Path, tmp_path: Path
) -> None:
    legacy = _compile_legacy(version, mjs_jar, tmp_path / "legacy-classes")
    legacy_cp = f"{legacy}:{mjs_jar}"  # the jar's MongoServerMain is in a package: no clash
    current = (str(mjs_jar), artifacts.MONGO_JAVA_SERVER_MAIN)
    store, log = tmp_path / "data.mv", tmp_path / "server.log"

    old = _readings(range(1, 6), range(0, 120))
    old += [  # explicit _ids of other types: ordered by ObjectDataType in the data map
        {"_id": 7, "moteid": 50, "epoch": 1, "label": "int id"},
        {"_id": "seven", "moteid": 50, "epoch": 2, "label": "str id"},
        {"_id": ObjectId(), "moteid": 50, "epoch": 3, "label": "oid id"},
    ]
    with _server(legacy_cp, "MongoServerMain", store, log) as coll:
        coll.create_index([("moteid", ASCENDING), ("epoch", ASCENDING)], unique=True)
        coll.insert_many(old)  # adds the ObjectId _ids to `old`

    with _server(*current, store, log) as coll:
        _check(coll, old)
        new = _readings(range(3, 9), range(120, 200))  # new pages next to old ones
        coll.insert_many(new)
        coll.delete_many({"moteid": 5, "epoch": {"$lt": 10}})  # rewrites old pages
        kept = [d for d in old + new if not (d["moteid"] == 5 and d["epoch"] < 10)]
        _check(coll, kept)

    with _server(*current, store, log) as coll:  # both formats, after a restart
        _check(coll, kept)
        assert coll.find_one({"_id": 7})["label"] == "int id"
        assert coll.find_one({"_id": "seven"})["label"] == "str id"
    if version == "byte_order":
        assert "re-sorted" in log.read_text()


def test_collection_data_size_is_the_documents_bson_size(mjs_jar: Path, tmp_path: Path) -> None:
    """collStats ``size`` (DataCollection's sizes, added once per insert command) is the sum
    of the stored documents' BSON sizes, after inserts (one failing), a delete, an update
    (of the stored copy with shared field names)."""
    main = artifacts.MONGO_JAVA_SERVER_MAIN
    with _server(str(mjs_jar), main, tmp_path / "data.mv", tmp_path / "server.log") as coll:
        coll.create_index([("moteid", ASCENDING), ("epoch", ASCENDING)], unique=True)
        docs = _readings(range(1, 4), range(0, 50))
        coll.insert_many(docs)
        with pytest.raises(BulkWriteError):
            coll.insert_many([{"moteid": 1, "epoch": 0}, {"moteid": 9, "epoch": 0}], ordered=False)
        coll.delete_one({"moteid": 2, "epoch": 7})
        coll.update_one({"moteid": 3, "epoch": 3}, {"$set": {"label": "ü" * 20}})
        stored = list(coll.find({}))
        assert len(stored) == 150
        assert coll.find_one({"moteid": 3, "epoch": 3})["label"] == "ü" * 20
        size = coll.database.command("collStats", coll.name)["size"]
        assert size == sum(len(bson.encode(d)) for d in stored)
