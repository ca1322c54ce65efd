"""The reporting refresh on real MongoDB and PostgreSQL: exact, idempotent, incremental."""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg
import pytest
from pymongo.database import Database

from iot_fed.reporting.refresh import (
    ReportingError,
    refresh,
    refresh_until_caught_up,
    reset,
    runs,
)
from iot_fed.reporting.schema import VIEW_NAMES
from iot_fed.store.collections import ANOMALIES, DEAD_LETTERS, PREDICTIONS
from iot_fed.store.incidents import upsert_incidents
from iot_fed.store.reports import save_evaluation_report
from iot_fed.store.repository import (
    insert_readings,
    promote,
    save_global_model,
    save_local_model,
)
from iot_fed_tests.reporting.helpers import T0, reading

TABLES = (
    "device_minute",
    "fleet_minute",
    "devices",
    "anomalies",
    "gaps",
    "dead_letters_minute",
    "local_losses",
    "model_versions",
    "incidents",
)


def verdict(r: dict[str, Any], score: float, flag: bool, **kw: Any) -> dict[str, Any]:
    """A prediction in the live scorer's shape (flag, channel_errors)."""
    doc = {
        "moteid": r["moteid"],
        "epoch": r["epoch"],
        "ts": r["ts"],
        "score": score,
        "flag": flag,
        "threshold": 1.0,
        "model_version": 1,
        "channel_errors": [0.1, score, 0.0, 0.0],
    }
    return {**doc, **kw}


def snapshot(pg: psycopg.Connection) -> dict[str, list[tuple]]:
    out = {}
    for t in TABLES:
        cols = [
            r[0]
            for r in pg.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = "
                "'reporting' AND table_name = %s AND column_name NOT IN "
                "('updated_at', 'created_at') ORDER BY ordinal_position",
                (t,),
            )
        ]
        out[t] = pg.execute(f"SELECT {', '.join(cols)} FROM reporting.{t} ORDER BY 1, 2").fetchall()
    return out


def one(pg: psycopg.Connection, query: str, *params: Any) -> Any:
    return pg.execute(query, params).fetchone()


def test_runs_merge_close_minutes() -> None:
    m = [T0, T0 + dt.timedelta(minutes=1), T0 + dt.timedelta(minutes=3), T0 + dt.timedelta(hours=1)]
    assert runs(m) == [
        (T0, T0 + dt.timedelta(minutes=4)),
        (T0 + dt.timedelta(hours=1), T0 + dt.timedelta(hours=1, minutes=1)),
    ]


def test_aggregates_exact_and_idempotent(mongo_db: Database, pg: psycopg.Connection) -> None:
    docs = [reading(m, e) for m in (1, 2, 3) for e in range(20)]  # 2 readings a minute
    insert_readings(mongo_db, docs)
    preds = [verdict(r, 2.0 if r["epoch"] == 5 else 0.5, r["epoch"] == 5) for r in docs]
    mongo_db[PREDICTIONS].insert_many(preds)
    mongo_db[ANOMALIES].insert_one(
        {"moteid": 2, "ts": docs[25]["ts"], "channels": ["humidity", "light"], "score": 2.0}
    )
    res = refresh(mongo_db, pg, positions=lambda: {1: (1.5, 2.5), 2: (3.0, 4.0)})
    assert (res.readings_seen, res.buckets, res.anomalies, res.positions) == (60, 30, 3, 2)
    # minute 2 of mote 1: epochs 4 and 5 -> temperature mean 24.5, one anomaly (score 2)
    row = one(
        pg,
        "SELECT readings, scored, anomalies, temperature, score_max, score_mean, x, y "
        "FROM reporting.v_device_minute WHERE moteid = 1 AND minute = %s",
        T0 + dt.timedelta(minutes=2),
    )
    assert row == (2, 2, 1, 24.5, 2.0, 1.25, 1.5, 2.5)
    assert one(
        pg, "SELECT sum(readings), sum(anomalies), count(*) FROM reporting.v_fleet_minute"
    ) == (60, 3, 10)
    assert one(pg, "SELECT devices, readings_per_s FROM reporting.v_fleet_minute LIMIT 1") == (
        3,
        0.1,
    )
    rates = pg.execute(
        "SELECT moteid, readings, scored, anomalies, anomaly_rate, x "
        "FROM reporting.v_mote_anomaly_rate ORDER BY 1"
    ).fetchall()
    assert rates == [
        (1, 20, 20, 1, 0.05, 1.5),
        (2, 20, 20, 1, 0.05, 3.0),
        (3, 20, 20, 1, 0.05, None),
    ]
    channels = dict(pg.execute("SELECT moteid, channels FROM reporting.v_anomalies").fetchall())
    assert channels == {1: "humidity", 2: "humidity,light", 3: "humidity"}  # marked, else top error
    before = snapshot(pg)
    again = refresh(mongo_db, pg)  # the 30 s overlap re-reads everything: same tables
    assert again.readings_seen == 60
    assert snapshot(pg) == before
    for view in VIEW_NAMES:
        pg.execute(f"SELECT * FROM reporting.{view} LIMIT 1")


def test_late_verdicts_readings_and_gaps(mongo_db: Database, pg: psycopg.Connection) -> None:
    docs = [reading(7, e) for e in (0, 1, 2, 6, 7, 8)]  # epochs 3..5 missing
    insert_readings(mongo_db, docs)
    refresh(mongo_db, pg)
    assert one(pg, "SELECT readings, scored, anomalies FROM reporting.devices") == (6, 0, 0)
    assert pg.execute("SELECT after_epoch, missing_epochs FROM reporting.gaps").fetchall() == [
        (2, 3)
    ]
    # verdicts arrive later (the scorer lags): the unscored buckets are redone
    mongo_db[PREDICTIONS].insert_many([verdict(r, 3.0, True) for r in docs])
    refresh(mongo_db, pg)
    assert one(pg, "SELECT readings, scored, anomalies FROM reporting.devices") == (6, 6, 6)
    assert one(pg, "SELECT count(*) FROM reporting.anomalies") == (6,)
    # a late reading fills part of the gap: the gap shrinks, totals stay exact
    insert_readings(mongo_db, [reading(7, 4)])
    refresh(mongo_db, pg)
    assert one(pg, "SELECT readings, scored, first_epoch, last_epoch FROM reporting.devices") == (
        7,
        6,
        0,
        8,
    )
    gaps = pg.execute(
        "SELECT after_epoch, missing_epochs FROM reporting.gaps ORDER BY 1"
    ).fetchall()
    assert gaps == [(2, 1), (4, 1)]
    assert one(
        pg, "SELECT missing_epochs, gaps, longest_gap_epochs FROM reporting.v_gaps_device"
    ) == (2, 2, 1)
    # a newer model clears a verdict; the bucket is redone when it changes: the anomaly goes
    mongo_db[PREDICTIONS].update_one(
        {"moteid": 7, "epoch": 0}, {"$set": {"flag": False, "model_version": 2}}
    )
    insert_readings(mongo_db, [reading(7, 100, ts=T0 + dt.timedelta(seconds=10))])
    refresh(mongo_db, pg)
    assert one(pg, "SELECT count(*) FROM reporting.anomalies") == (5,)
    assert one(pg, "SELECT readings, scored, anomalies FROM reporting.devices") == (8, 6, 5)
    # a rebuild from scratch gives the same tables
    before = snapshot(pg)
    reset(pg)
    assert one(pg, "SELECT count(*) FROM reporting.device_minute") == (0,)
    refresh(mongo_db, pg)
    assert snapshot(pg) == before


def test_small_batches_catch_up_to_the_same_tables(
    mongo_db: Database, pg: psycopg.Connection, pg_uri: str
) -> None:
    insert_readings(mongo_db, [reading(m, e) for m in (1, 2) for e in range(25)])
    rounds = refresh_until_caught_up(mongo_db, pg, batch=7)
    assert len(rounds) >= 8 and not rounds[0].caught_up and rounds[-1].caught_up
    assert rounds[0].behind_s >= 0
    assert one(pg, "SELECT sum(readings) FROM reporting.device_minute") == (50,)
    assert one(pg, "SELECT readings FROM reporting.devices WHERE moteid = 2") == (25,)


def test_dead_letters_per_minute_by_reason(mongo_db: Database, pg: psycopg.Connection) -> None:
    now = dt.datetime.now(dt.UTC).replace(second=10, microsecond=0)
    letters = [
        {"ts": now, "reason": "bad humidity: non-finite"},
        {"ts": now + dt.timedelta(seconds=5), "reason": "bad humidity: expected a number"},
        {"ts": now + dt.timedelta(seconds=6), "reason": "invalid json"},
        {"ts": now + dt.timedelta(minutes=1), "reason": "invalid json: x"},
    ]
    mongo_db[DEAD_LETTERS].insert_many([dict(d) for d in letters])
    refresh(mongo_db, pg)
    rows = pg.execute(
        "SELECT minute - %s, reason, letters FROM reporting.v_dead_letters_minute ORDER BY 1, 2",
        (now.replace(second=0),),
    ).fetchall()
    one_min = dt.timedelta(minutes=1)
    expected = [
        (dt.timedelta(0), "bad humidity", 2),
        (dt.timedelta(0), "invalid json", 1),
        (one_min, "invalid json", 1),
    ]
    assert rows == expected
    mongo_db[DEAD_LETTERS].insert_one(
        {"ts": now + dt.timedelta(seconds=45), "reason": "invalid json"}  # late, within 30 s
    )
    refresh(mongo_db, pg)
    assert one(pg, "SELECT sum(letters) FROM reporting.dead_letters_minute") == (5,)


def test_model_versions_and_local_losses(mongo_db: Database, pg: psycopg.Connection) -> None:
    for dev in ("1", "2"):
        save_local_model(
            mongo_db, dev, b"p", n_samples=40, metrics={"loss_before": 2.0, "loss_after": 0.5}
        )
    lineage = [
        {"device": "1", "version": 1, "n_samples": 40, "weight": 0.5},
        {"device": "2", "version": 1, "n_samples": 40, "weight": 0.5},
    ]
    save_global_model(mongo_db, b"g", lineage=lineage, metrics={"val_loss": 0.4}, promoted=True)
    refused = {  # passed the round's verdict, refused by the promotion replay
        "val_loss": 0.9,
        "parent_val_loss": 0.4,
        "verdict": {"ok": True, "reason": "ok"},
        "replay": {
            "ok": False,
            "reason": "alarm rate 9.5",
            "alarm_rate": 9.5,
            "f1": 0.3,
            "promoted_f1": 0.8,
        },
    }
    save_global_model(mongo_db, b"g", lineage=lineage[:1], metrics=refused)
    save_global_model(
        mongo_db, b"g", lineage=lineage, metrics={"val_loss": 0.3, "parent_val_loss": 0.4}
    )
    save_evaluation_report(
        mongo_db,
        {
            "report_id": "r1",
            "created_at": dt.datetime.now(dt.UTC),
            "global_version": 1,
            "summary": {"global_f1": 0.8, "global_precision": 0.9, "global_recall": 0.72},
        },
    )
    refresh(mongo_db, pg)
    rows = pg.execute(
        "SELECT version, devices, val_loss, status, is_current, f1 "
        "FROM reporting.v_global_versions ORDER BY 1"
    ).fetchall()
    assert rows == [
        (1, 2, 0.4, "promoted", True, 0.8),
        (2, 1, 0.9, "rejected", False, None),
        (3, 2, 0.3, "pending", False, None),
    ]
    replay = pg.execute(
        "SELECT version, refusal_reason, replay_alarm_rate, replay_f1, replay_promoted_f1 "
        "FROM reporting.v_global_versions WHERE version = 2"
    ).fetchall()
    assert replay == [(2, "replay: alarm rate 9.5", 9.5, 0.3, 0.8)]
    losses = pg.execute(
        "SELECT moteid, version, improvement FROM reporting.v_local_losses ORDER BY 1"
    ).fetchall()
    assert losses == [(1, 1, 1.5), (2, 1, 1.5)]
    promote(mongo_db, 3)
    save_local_model(
        mongo_db, "1", b"p", n_samples=40, metrics={"loss_before": 0.5, "loss_after": 0.25}
    )
    refresh(mongo_db, pg)
    assert one(pg, "SELECT version, val_loss FROM reporting.v_promoted_version") == (3, 0.3)
    assert one(pg, "SELECT count(*) FROM reporting.local_losses") == (3,)


def test_failed_write_commits_nothing_and_the_retry_catches_up(
    mongo_db: Database, pg_uri: str
) -> None:
    insert_readings(mongo_db, [reading(1, e) for e in range(10)])
    doomed = psycopg.connect(pg_uri)
    refresh(mongo_db, doomed)  # schema in place
    insert_readings(mongo_db, [reading(1, e) for e in range(10, 20)])
    with psycopg.connect(pg_uri, autocommit=True) as killer:
        killer.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    with pytest.raises(ReportingError, match="IOT_FED_POSTGRES_URI"):
        refresh(mongo_db, doomed)
    with psycopg.connect(pg_uri) as fresh:
        refresh(mongo_db, fresh)
        assert one(fresh, "SELECT readings FROM reporting.devices") == (20,)


def incident(moteid: int, start_min: int, last_min: int, state: str = "open") -> dict[str, Any]:
    """A pure incident document (:func:`iot_fed.analytics.incidents.advance`'s shape)."""
    start = int(T0.timestamp() * 1000) + start_min * 60_000
    last = int(T0.timestamp() * 1000) + last_min * 60_000
    return {
        "_id": f"{moteid}:{start}",
        "moteid": moteid,
        "start_ms": start,
        "last_seen_ms": last,
        "end_ms": None if state == "open" else last,
        "last_reading_ms": last,
        "state": state,
        "channels": ["temperature", "light"],
        "peak_ratio": 2.5,
        "peak_ms": start,
        "fault_type": "spike",
        "n_flagged": 1 + last_min - start_min,
        "n_readings": 1 + last_min - start_min,
        "model_version": 3,
        "rev": 2 * last + (state != "open"),
    }


def test_incidents_upserted_as_they_change_state(
    mongo_db: Database, pg: psycopg.Connection
) -> None:
    at = dt.datetime.now(dt.UTC).replace(microsecond=0)
    upsert_incidents(mongo_db, [incident(1, 0, 2), incident(2, 5, 5)], source="t", at=at)
    res = refresh(mongo_db, pg)
    assert res.incidents_seen == 2 and res.changed
    rows = pg.execute(
        "SELECT moteid, state, end_ts, channels, fault_type, model_version, n_flagged "
        "FROM reporting.v_incidents ORDER BY moteid"
    ).fetchall()
    assert rows == [
        (1, "open", None, "temperature,light", "spike", 3, 3),
        (2, "open", None, "temperature,light", "spike", 3, 1),
    ]
    # mote 1's incident grows, then resolves: the same row changes, none is added
    later = at + dt.timedelta(seconds=40)
    upsert_incidents(mongo_db, [incident(1, 0, 4, "resolved")], source="t", at=later)
    refresh(mongo_db, pg)
    assert pg.execute(
        "SELECT moteid, state, end_ts - start_ts, n_flagged FROM reporting.v_incidents "
        "ORDER BY moteid"
    ).fetchall() == [(1, "resolved", dt.timedelta(minutes=4), 5), (2, "open", None, 1)]
    before = pg.execute("SELECT * FROM reporting.incidents ORDER BY id").fetchall()
    refresh(mongo_db, pg)  # the overlap re-reads: nothing changes
    assert pg.execute("SELECT * FROM reporting.incidents ORDER BY id").fetchall() == before
    # a copy of a newer revision is never taken back by an older one
    pg.execute("UPDATE reporting.incidents SET rev = rev + 10, state = 'stale' WHERE moteid = 2")
    refresh(mongo_db, pg)
    assert one(pg, "SELECT state FROM reporting.incidents WHERE moteid = 2") == ("stale",)


def test_incidents_of_one_write_time_copied_in_small_batches(
    mongo_db: Database, pg: psycopg.Connection
) -> None:
    at = dt.datetime.now(dt.UTC).replace(microsecond=0)
    docs = [incident(m, m, m + 1) for m in range(1, 6)]  # one micro-batch: one updated_at
    upsert_incidents(mongo_db, docs, source="t", at=at)
    rounds = refresh_until_caught_up(mongo_db, pg, batch=2)
    assert [r.incidents_seen for r in rounds][:3] == [2, 2, 1]
    assert one(pg, "SELECT count(*) FROM reporting.incidents") == (5,)
    reset(pg)
    refresh(mongo_db, pg)
    assert one(pg, "SELECT count(*) FROM reporting.v_incidents") == (5,)
