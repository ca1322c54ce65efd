"""The MongoDB-compatible server kind the session does not use (``IOT_FED_MONGODB_SERVER``):
start it on a free port in a tmp state dir, check documents, unique indexes, the
duplicate count of an unordered bulk insert, and data surviving down/up.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import get_args

import pytest
from pymongo import ASCENDING, MongoClient
from pymongo.errors import BulkWriteError, DuplicateKeyError

from iot_fed.config import Settings, load_settings
from iot_fed.services import manager
from iot_fed.services.artifacts import artifacts_dir
from iot_fed.services.process import port_open

pytestmark = pytest.mark.services


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _other_kind(settings: Settings) -> str:
    kinds = get_args(Settings.model_fields["mongodb_server"].annotation)
    return next(k for k in kinds if k != settings.mongodb_server)


@pytest.fixture
def other(tmp_path: Path, settings: Settings) -> Iterator[Settings]:
    """Settings for the other server kind: own state dir and port, shared artifact cache."""
    kind = _other_kind(settings)
    install = load_settings(data_dir=settings.data_dir, mongodb_server=kind)
    (svc,) = manager.services_for(install, ["mongodb"])
    if not svc.installed() and os.environ.get("IOT_FED_TEST_OTHER_SERVER") != "1":
        pytest.skip(
            f"{kind} is not installed (building it costs minutes); install it with "
            f"IOT_FED_MONGODB_SERVER={kind} iot-fed services install, or set "
            "IOT_FED_TEST_OTHER_SERVER=1 to build it here"
        )
    manager.install(install, ["mongodb"])
    iso = load_settings(
        data_dir=tmp_path,
        mongodb_uri=f"mongodb://127.0.0.1:{_free_port()}/",
        mongodb_server=kind,
    )
    iso.state_dir.mkdir(parents=True)
    artifacts_dir(iso.state_dir).symlink_to(artifacts_dir(settings.state_dir).resolve())
    try:
        yield iso
    finally:
        manager.down(iso, ["mongodb"])


def _client(s: Settings) -> MongoClient:
    return MongoClient(s.mongodb_uri, serverSelectionTimeoutMS=10_000)


def test_other_server_kind_documents_indexes_and_persistence(other: Settings) -> None:
    assert [st.state for st in manager.up(other, ["mongodb"])] == ["started"]
    with _client(other) as client:
        coll = client.keep.readings
        coll.create_index([("moteid", ASCENDING), ("epoch", ASCENDING)], unique=True)
        coll.insert_many([{"moteid": m, "epoch": e, "v": m * e} for m in (1, 2) for e in range(5)])
        with pytest.raises(DuplicateKeyError):
            coll.insert_one({"moteid": 1, "epoch": 3})
        with pytest.raises(BulkWriteError) as err:
            coll.insert_many(
                [{"moteid": 1, "epoch": 0}, {"moteid": 3, "epoch": 0}, {"moteid": 2, "epoch": 4}],
                ordered=False,
            )
        details = err.value.details
        assert [w["code"] for w in details["writeErrors"]] == [11000, 11000]
        assert details["nInserted"] == 1
        found = list(coll.find({"moteid": 2, "epoch": {"$gt": 2}}, {"_id": 0}).sort("epoch", -1))
        assert found == [{"moteid": 2, "epoch": 4, "v": 8}, {"moteid": 2, "epoch": 3, "v": 6}]

    assert [st.state for st in manager.down(other, ["mongodb"])] == ["stopped"]
    assert not port_open("127.0.0.1", other.mongodb_port)
    assert [st.state for st in manager.up(other, ["mongodb"])] == ["started"]
    with _client(other) as client:
        coll = client.keep.readings
        assert coll.count_documents({}) == 11
        assert sorted(d["v"] for d in coll.find({"moteid": 1})) == [0, 1, 2, 3, 4]
        with pytest.raises(DuplicateKeyError):  # the unique index survived the restart
            coll.insert_one({"moteid": 2, "epoch": 0})
