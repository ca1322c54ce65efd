"""Synthetic rows for every reporting table the dashboards read (times relative to now)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import psycopg

from iot_fed.reporting.schema import ensure_schema

MOTES = 12
MINUTES = 90
FAULT_TYPES = ("spike", "stuck", "drift", "battery")


def seed(conn: psycopg.Connection) -> None:
    """Schema plus ``MOTES`` devices x ``MINUTES`` minutes of aggregates, incidents,
    versions, letters."""
    ensure_schema(conn)
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    start = now - timedelta(minutes=MINUTES)
    with conn.transaction():
        for m in range(1, MOTES + 1):
            x, y = 3.0 * (m % 6), 4.0 * (m // 6)
            anomalies = readings = 0
            for i in range(MINUTES):
                if (i + m) % 17 == 0:
                    continue  # a gap
                minute = start + timedelta(minutes=i)
                n, a = 6, 1 if (i * m) % 11 == 0 else 0
                readings, anomalies = readings + n, anomalies + a
                conn.execute(
                    "INSERT INTO reporting.device_minute VALUES (%s, %s, %s, 0, %s, %s, %s, %s,"
                    " %s, %s, %s, %s, %s, %s, %s, %s, DEFAULT, DEFAULT) ON CONFLICT DO NOTHING",
                    (
                        m,
                        minute,
                        n,
                        n,
                        a,
                        0.5 + a,
                        1.0 + 2 * a,
                        20 + math.sin(i / 9 + m),
                        40 + 5 * math.cos(i / 7),
                        300 + 10 * (i % 5),
                        2.6 - i / 1000,
                        i * 6,
                        i * 6 + 5,
                        minute,
                        minute + timedelta(seconds=50),
                    ),
                )
            conn.execute(
                "INSERT INTO reporting.devices (moteid, x, y, first_ts, last_ts, first_epoch,"
                " last_epoch, readings, faults, scored, anomalies) VALUES"
                " (%s, %s, %s, %s, %s, 0, %s, %s, 0, %s, %s) ON CONFLICT DO NOTHING",
                (m, x, y, start, now, MINUTES * 6 - 1, readings, readings, anomalies),
            )
            for k in range(3):  # three incidents per mote, the newest still open
                begin = start + timedelta(minutes=25 * k + m)
                last = begin + timedelta(minutes=4)
                conn.execute(
                    "INSERT INTO reporting.incidents (id, moteid, start_ts, last_seen, end_ts,"
                    " state, channels, peak_ratio, fault_type, model_version, n_flagged, rev,"
                    " updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, 4, 5, 1, now())"
                    " ON CONFLICT DO NOTHING",
                    (
                        f"{m}:{int(begin.timestamp() * 1000)}",
                        m,
                        begin,
                        last,
                        None if k == 2 else last,
                        "open" if k == 2 else "resolved",
                        ["temperature", "humidity"][: 1 + (m + k) % 2],
                        1.5 + m / 10 + k,
                        FAULT_TYPES[(m + k) % len(FAULT_TYPES)],
                    ),
                )
            conn.execute(
                "INSERT INTO reporting.gaps VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                (m, 17 - m % 17, 6, start, start + timedelta(minutes=1)),
            )
        conn.execute(
            "INSERT INTO reporting.fleet_minute (minute, readings, devices, faults, scored,"
            " anomalies, score_mean, score_max) SELECT minute, SUM(readings), COUNT(*), 0,"
            " SUM(scored), SUM(anomalies), AVG(score_mean), MAX(score_max)"
            " FROM reporting.device_minute GROUP BY minute ON CONFLICT DO NOTHING"
        )
        for v in range(1, 7):
            promoted = v in (1, 2, 4)
            status = "promoted" if promoted else ("pending" if v == 6 else "rejected")
            conn.execute(
                "INSERT INTO reporting.model_versions (version, created_at, strategy, devices,"
                " val_loss, promoted, is_current, status, f1) VALUES"
                " (%s, %s, 'fedavg', %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                (
                    v,
                    start + timedelta(minutes=12 * v),
                    6 + v,
                    1.0 / v,
                    promoted,
                    v == 4,
                    status,
                    0.5 + v / 20,
                ),
            )
            for m in range(1, MOTES + 1):
                conn.execute(
                    "INSERT INTO reporting.local_losses (moteid, version, created_at,"
                    " base_version, n_samples, loss_before, loss_after) VALUES"
                    " (%s, %s, %s, %s, 100, %s, %s) ON CONFLICT DO NOTHING",
                    (
                        m,
                        v,
                        start + timedelta(minutes=12 * v, seconds=m),
                        v - 1,
                        1.2 / v,
                        1.0 / v + m / 100,
                    ),
                )
        for i in range(0, MINUTES, 3):
            for reason, letters in (("invalid json", 1 + i % 3), ("bad humidity", 2)):
                conn.execute(
                    "INSERT INTO reporting.dead_letters_minute VALUES (%s, %s, %s)"
                    " ON CONFLICT DO NOTHING",
                    (start + timedelta(minutes=i), reason, letters),
                )
