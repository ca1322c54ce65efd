"""A round's database calls are batched (counted with pymongo's command monitoring against
the real server), a global version keeps its per-device params apart (100,000 devices),
and a device the served version has no params for is scored learning."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from pymongo import MongoClient, monitoring
from pymongo.database import Database

from iot_fed.federation.bundles import ModelLoadError, load_promoted
from iot_fed.federation.calibration import awaiting_calibration
from iot_fed.federation.device_params import LINEAGE_CAP, split
from iot_fed.federation.global_round import aggregate_global_model, calibrated_span
from iot_fed.federation.windows import NEW_DEVICE_SPAN, training_windows
from iot_fed.fl.normalization import Normalizer
from iot_fed.fl.rounds import feature_stats
from iot_fed.fl.stream_scoring import LEARNING_NO_PARAMS, DeviceHistory, score_device
from iot_fed.readings import CHANNELS, epoch_ms
from iot_fed.store import (
    init_database,
    promote,
    readings_to_docs,
    save_global_model,
    upsert_readings,
)
from iot_fed.store.collections import BATCH, GLOBAL_DEVICE_PARAMS, GLOBAL_MODELS
from iot_fed.store.ingest_progress import record_landed
from iot_fed.store.repository import local_model_doc, local_versions, save_local_models
from iot_fed_tests.analytics.helpers import SPEC, features, make_bundle, make_readings

HANDSHAKE = {"hello", "ismaster", "isMaster", "endSessions", "ping", "buildInfo"}


class Commands(monitoring.CommandListener):
    """Counts the commands a client sends, by name (handshakes left out)."""

    def __init__(self) -> None:
        self.seen: Counter[str] = Counter()
        self.collections: set[str] = set()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name not in HANDSHAKE:
            self.seen[event.command_name] += 1
            self.collections.add(str(event.command.get(event.command_name)))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass

    @property
    def total(self) -> int:
        return sum(self.seen.values())


@contextmanager
def counted(db: Database) -> Iterator[tuple[Database, Commands]]:
    """``db`` through a client of its own whose commands are counted."""
    commands = Commands()
    host, port = db.client.address
    client: MongoClient = MongoClient(host, port, event_listeners=[commands])
    try:
        yield client[db.name], commands
    finally:
        client.close()


@pytest.fixture(scope="module")
def fleet_parts():
    """A small local bundle, its training statistics and held-out features."""
    df = make_readings(2, 120)
    bundle = make_bundle(df, seed=3)
    feats = features(df)[1]
    feats = feats[np.isfinite(feats).all(axis=1)]
    return bundle, feature_stats(feats).to_dict(), feats[:40]


def seed_fleet(db: Database, n: int, version: int, parts) -> None:
    """``n`` devices with local model ``version`` and a kept held-out sample, in batches."""
    bundle, stats, held = parts
    blob = bundle.to_bytes()
    docs = [
        local_model_doc(
            str(m),
            blob,
            version=version,
            n_samples=100,
            last_epoch=1000 * version,
            threshold=1.0,
            metrics={"loss_before": 1.0, "loss_after": 0.5, "stats": stats},
        )
        for m in range(1, n + 1)
    ]
    ep = np.arange(len(held), dtype="<i8") * 10
    sample = {"holdout_epochs": ep.tobytes(), "holdout_features": held.astype("<f8").tobytes()}
    save_local_models(db, docs, {m: sample for m in range(1, n + 1)})


def round_calls(db: Database, settings, n: int, parts) -> Counter[str]:
    """Commands of a second aggregation round over ``n`` devices (the first one promoted)."""
    init_database(db)
    seed_fleet(db, n, 1, parts)
    first = aggregate_global_model(db, settings)
    promote(db, first.version)
    seed_fleet(db, n, 2, parts)
    with counted(db) as (cdb, commands):
        out = aggregate_global_model(cdb, settings)
    assert out.version == first.version + 1 and out.n_devices == n
    return commands.seen


def test_an_aggregation_rounds_calls_grow_with_batches_not_devices(
    mongo_client: MongoClient, settings, fleet_parts
) -> None:
    small = round_calls(mongo_client["batched_small"], settings, 54, fleet_parts)
    large = round_calls(mongo_client["batched_large"], settings, BATCH + 500, fleet_parts)
    for name in ("batched_small", "batched_large"):
        mongo_client.drop_database(name)
    extra_batches = math.ceil((BATCH + 500) / BATCH) - 1
    print("calls per round: 54 devices", dict(small), "1,500 devices", dict(large))
    # every read and write is one call per batch of devices: 2 extra batches add at most
    # a few calls per batched step, never one per device
    assert sum(large.values()) <= sum(small.values()) + 8 * extra_batches
    assert sum(small.values()) <= 20


def test_a_local_rounds_store_calls_are_batched(mongo_db: Database, fleet_parts) -> None:
    init_database(mongo_db)
    seed_fleet(mongo_db, 54, 1, fleet_parts)
    calls = {}
    for n in (54, BATCH + 500):
        seed_fleet(mongo_db, n, 1, fleet_parts)  # a replay stores nothing twice
        with counted(mongo_db) as (cdb, commands):
            versions = local_versions(cdb, range(1, n + 1))
            seed_fleet(cdb, n, 2, fleet_parts)
        assert versions == {m: (1, 1000) for m in range(1, n + 1)}
        calls[n] = commands.seen
        mongo_db["local_models"].delete_many({"version": 2})
    # states read once, models inserted and states written per batch of 1,000
    assert calls[54] == Counter({"find": 1, "insert": 1, "update": 1})
    assert calls[BATCH + 500] == Counter({"find": 2, "insert": 2, "update": 2})
    assert mongo_db["local_models"].count_documents({}) == BATCH + 500


def big_bundle(n: int):
    """A bundle serving ``n`` devices, each with its own normaliser and threshold."""
    bundle = make_bundle(make_readings(2, 60), seed=1)
    base = bundle.norm
    rng = np.random.default_rng(0)
    shift = rng.normal(size=(n, base.mean.size))
    bundle.device_norms = {m + 1: Normalizer(base.mean + shift[m], base.std) for m in range(n)}
    bundle.device_thresholds = {m + 1: float(1.0 + m / n) for m in range(n)}
    return bundle


@pytest.mark.slow
def test_a_100k_device_version_is_written_and_read_back(mongo_db: Database) -> None:
    init_database(mongo_db)
    n = 100_000
    bundle = big_bundle(n)
    lineage = {m: {"version": 1, "n_samples": 10, "weight": 1 / n} for m in range(1, n + 1)}
    shared, rows = split(bundle, lineage)
    capped = [{"device": str(m), **lineage[m]} for m in range(1, LINEAGE_CAP + 1)]
    doc = save_global_model(
        mongo_db,
        shared.to_bytes(),
        lineage=capped,
        threshold=bundle.threshold,
        device_params=rows,
        devices_aggregated=n,
        promoted=True,
    )
    raw = mongo_db.get_collection(
        GLOBAL_MODELS, codec_options=CodecOptions(document_class=RawBSONDocument)
    ).find_one({"version": doc["version"]})
    size = len(raw.raw)
    print(f"version document at {n} devices: {size} bytes")
    assert size < 1 << 20
    assert doc["device_params"]["count"] == n and doc["device_params"]["calibrated"] == n
    assert mongo_db[GLOBAL_DEVICE_PARAMS].count_documents({"version": doc["version"]}) == n

    _, loaded = load_promoted(mongo_db)
    assert loaded.known_devices == frozenset(range(1, n + 1))
    for m in (1, 777, n):
        assert loaded.threshold_for(m) == (bundle.device_thresholds[m], False)
        np.testing.assert_array_equal(loaded.norm_for(m).mean, bundle.device_norms[m].mean)
    assert load_promoted(mongo_db)[1] is loaded  # cached per process


def test_a_crashed_save_leaves_nothing_a_reader_sees_and_a_retry_does_not_duplicate(
    mongo_db: Database,
) -> None:
    init_database(mongo_db)
    bundle = big_bundle(30)
    shared, rows = split(bundle, {})
    # a save that stopped after its params: version 1 has params and no document
    stale = [{**r, "version": 1, "token": "crashed", "threshold": 99.0} for r in rows[:20]]
    mongo_db[GLOBAL_DEVICE_PARAMS].insert_many(stale)
    assert load_promoted(mongo_db, 1) is None
    doc = save_global_model(mongo_db, shared.to_bytes(), threshold=1.0, device_params=rows)
    assert doc["version"] == 1
    assert mongo_db[GLOBAL_DEVICE_PARAMS].count_documents({"version": 1}) == 30
    _, loaded = load_promoted(mongo_db, 1)
    assert loaded.device_thresholds == bundle.device_thresholds


def test_a_device_without_params_is_learning_never_scored_with_anothers(
    mongo_db: Database,
) -> None:
    init_database(mongo_db)
    bundle = big_bundle(3)
    shared, rows = split(bundle, {})
    version = save_global_model(
        mongo_db, shared.to_bytes(), threshold=bundle.threshold, device_params=rows[:2]
    )["version"]
    _, served = load_promoted(mongo_db, version)
    assert served.known_devices == {1, 2}
    df = make_readings(3, 40)
    part = df[df["moteid"] == 3]
    vals = part[list(CHANNELS)].to_numpy(np.float64)
    vals[:, 0] += 30.0  # far off every device's normal level: still never flagged
    scored, _ = score_device(
        served,
        DeviceHistory.empty(),
        moteid=3,
        epochs=part["epoch"].to_numpy(),
        ts_ms=epoch_ms(part["ts"]),
        values=vals,
    )
    assert set(scored.reason) == {LEARNING_NO_PARAMS} and not scored.flag.any()
    assert (scored.threshold == served.threshold).all()  # the global one, not a device's
    assert served.norm_for(3) is served.norm  # the fleet's normaliser


def test_a_damaged_or_lost_params_row_makes_the_version_unreadable(mongo_db: Database) -> None:
    init_database(mongo_db)
    shared, rows = split(big_bundle(2), {})
    damaged = save_global_model(mongo_db, shared.to_bytes(), threshold=1.0, device_params=rows)
    mongo_db[GLOBAL_DEVICE_PARAMS].update_one(
        {"version": damaged["version"], "moteid": 2}, {"$set": {"norm_mean": b"\x00" * 8}}
    )
    with pytest.raises(ModelLoadError, match="mote 2"):
        load_promoted(mongo_db, damaged["version"])
    lost = save_global_model(mongo_db, shared.to_bytes(), threshold=1.0, device_params=rows)
    mongo_db[GLOBAL_DEVICE_PARAMS].delete_one({"version": lost["version"], "moteid": 1})
    with pytest.raises(ModelLoadError, match="1 of its 2 per-device params"):
        load_promoted(mongo_db, lost["version"])


def test_a_new_devices_first_training_read_is_bounded_by_its_newest_epoch(
    mongo_db: Database,
) -> None:
    """A device never trained has a long history: its first window reads the newest
    epochs only (a faulty reading long before them is never even read)."""
    init_database(mongo_db)
    df = make_readings(1, 3000)
    df.loc[df["epoch"] == 5, "temperature"] = 500.0  # physically impossible: a fault
    upsert_readings(mongo_db, readings_to_docs(df))
    spec = SPEC
    long_ago = training_windows(mongo_db, {1: 0}, 3000, spec)[1]
    assert long_ago.n_faulty == 1  # read from epoch 0 on: the fault is seen
    bound = 2999 - NEW_DEVICE_SPAN * 100 * 10 // 9 - 4 * spec.window
    # landed by an older ingester (no newest epoch recorded): the bound from an aggregation
    with counted(mongo_db) as (cdb, commands):
        w = training_windows(cdb, {1: None}, 100, spec)[1]
    assert w.n == 100 and w.n_faulty == 0 and int(w.epochs.min()) > bound
    assert commands.seen == Counter({"aggregate": 1, "find": 2})
    # the ingesters record each device's newest epoch as they land it: no aggregation
    record_landed(mongo_db, "t", {0: 3000}, {1: 3000}, {1: df["ts"].max()}, "a", {1: 2999})
    with counted(mongo_db) as (cdb, commands):
        again = training_windows(cdb, {1: None}, 100, spec)[1]
    assert np.array_equal(again.epochs, w.epochs) and again.n_faulty == 0
    assert commands.seen == Counter({"find": 2})


def test_a_local_rounds_calls_do_not_grow_with_its_devices(
    mongo_client: MongoClient, settings
) -> None:
    """Training 3 or 12 devices (a second local round, warm-started from a promoted version
    storing its device params apart, which training never reads): the same calls."""
    from iot_fed.federation.local_round import train_local_models

    calls = {}
    for n in (3, 12):
        db = mongo_client[f"batched_local_{n}"]
        mongo_client.drop_database(db.name)
        init_database(db)
        df = make_readings(n, 400)
        upsert_readings(db, readings_to_docs(df[df["epoch"] < 200]))
        devices = [str(m) for m in range(1, n + 1)]
        assert all(o.version == 1 for o in train_local_models(db, devices, settings))
        promote(db, aggregate_global_model(db, settings).version)
        upsert_readings(db, readings_to_docs(df[df["epoch"] >= 200]))
        with counted(db) as (cdb, commands):
            out = train_local_models(cdb, devices, settings)
        assert [o.version for o in out] == [2] * n
        assert GLOBAL_DEVICE_PARAMS not in commands.collections
        calls[n] = commands.seen
        mongo_client.drop_database(db.name)
    print("calls per local round: 3 devices", dict(calls[3]), "12 devices", dict(calls[12]))
    assert calls[3] == calls[12]


def test_devices_whose_sample_spans_less_than_a_day_stay_learning(
    mongo_db: Database, settings, fleet_parts
) -> None:
    """The held-out samples span 390 epochs (about 3.4 h of data): a version calibrates no
    device under the default day, and every one under an hour."""
    init_database(mongo_db)
    seed_fleet(mongo_db, 3, 1, fleet_parts)
    day = settings.model_copy(update={"calibration_min_span_h": 24.0})
    out = aggregate_global_model(mongo_db, day)
    assert (out.metrics["device_thresholds"], out.metrics["learning_short_span"]) == (0, 3)
    assert out.calibration is not None and out.calibration.learning == (1, 2, 3)
    promote(mongo_db, out.version)
    # learning devices make aggregation due at once only when a version could calibrate them
    assert awaiting_calibration(mongo_db, ["1", "2", "3"], 24.0) == []
    assert awaiting_calibration(mongo_db, ["1", "2", "3"], 1.0) == [1, 2, 3]
    seed_fleet(mongo_db, 3, 2, fleet_parts)
    hour = settings.model_copy(update={"calibration_min_span_h": 1.0})
    out = aggregate_global_model(mongo_db, hour)
    assert (out.metrics["device_thresholds"], out.metrics["learning_short_span"]) == (3, 0)
    assert out.calibration is not None and out.calibration.calibrated == (1, 2, 3)


def test_calibrated_span_keeps_only_devices_whose_sample_spans_enough() -> None:
    held = {1: np.array([0, 50, 100]), 2: np.array([0, 99]), 3: np.zeros(0, np.int64)}
    kept, short = calibrated_span({1: 1.0, 2: 2.0, 3: 3.0, 4: 4.0}, held, 100)
    assert (kept, short) == ({1: 1.0}, [2, 3, 4])
