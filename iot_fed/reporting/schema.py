"""DDL of the ``reporting`` schema: tables written by :mod:`iot_fed.reporting.refresh` and
the views the Superset dashboards query (names and columns in ``iot_fed/reporting/README.md``).

Everything is idempotent (``IF NOT EXISTS`` / ``CREATE OR REPLACE VIEW``); times are
``timestamptz`` in UTC, ``minute`` is the reading time truncated to the minute.
"""

from __future__ import annotations

import psycopg

SCHEMA = "reporting"

TABLES = """
CREATE SCHEMA IF NOT EXISTS reporting;

CREATE TABLE IF NOT EXISTS reporting.watermarks (
    source     text PRIMARY KEY,
    value      text NOT NULL,
    caught_up  boolean NOT NULL DEFAULT true,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS reporting.devices (
    moteid      integer PRIMARY KEY,
    x           double precision,
    y           double precision,
    first_ts    timestamptz,
    last_ts     timestamptz,
    first_epoch bigint,
    last_epoch  bigint,
    readings    bigint NOT NULL DEFAULT 0,
    faults      bigint NOT NULL DEFAULT 0,
    scored      bigint NOT NULL DEFAULT 0,
    anomalies   bigint NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS reporting.device_minute (
    moteid      integer NOT NULL,
    minute      timestamptz NOT NULL,
    readings    integer NOT NULL,
    faults      integer NOT NULL,
    scored      integer NOT NULL,
    anomalies   integer NOT NULL,
    score_mean  double precision,
    score_max   double precision,
    temperature double precision,
    humidity    double precision,
    light       double precision,
    voltage     double precision,
    min_epoch   bigint NOT NULL,
    max_epoch   bigint NOT NULL,
    first_ts    timestamptz NOT NULL,
    last_ts     timestamptz NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (moteid, minute)
);
CREATE INDEX IF NOT EXISTS device_minute_minute ON reporting.device_minute (minute);
CREATE INDEX IF NOT EXISTS device_minute_unscored ON reporting.device_minute (created_at)
    WHERE scored < readings;

CREATE TABLE IF NOT EXISTS reporting.fleet_minute (
    minute     timestamptz PRIMARY KEY,
    readings   integer NOT NULL,
    devices    integer NOT NULL,
    faults     integer NOT NULL,
    scored     integer NOT NULL,
    anomalies  integer NOT NULL,
    score_mean double precision,
    score_max  double precision,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS reporting.anomalies (
    moteid        integer NOT NULL,
    ts            timestamptz NOT NULL,
    epoch         bigint,
    score         double precision,
    threshold     double precision,
    model_version integer,
    channels      text[] NOT NULL DEFAULT '{}',
    PRIMARY KEY (moteid, ts)
);
CREATE INDEX IF NOT EXISTS anomalies_ts ON reporting.anomalies (ts);

CREATE TABLE IF NOT EXISTS reporting.model_versions (
    version         integer PRIMARY KEY,
    created_at      timestamptz NOT NULL,
    strategy        text,
    devices         integer NOT NULL,
    rejected_devices integer NOT NULL DEFAULT 0,
    val_loss        double precision,
    parent_version  integer,
    parent_val_loss double precision,
    threshold       double precision,
    promoted        boolean NOT NULL,
    promoted_at     timestamptz,
    is_current      boolean NOT NULL,
    status          text NOT NULL,
    f1              double precision,
    precision_      double precision,
    recall          double precision,
    report_id       text,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
-- the promotion check's refusal and its replay figures (added later: older tables get them)
ALTER TABLE reporting.model_versions ADD COLUMN IF NOT EXISTS refusal_reason text;
ALTER TABLE reporting.model_versions ADD COLUMN IF NOT EXISTS replay_alarm_rate double precision;
ALTER TABLE reporting.model_versions ADD COLUMN IF NOT EXISTS replay_f1 double precision;
ALTER TABLE reporting.model_versions ADD COLUMN IF NOT EXISTS replay_promoted_f1 double precision;

CREATE TABLE IF NOT EXISTS reporting.local_losses (
    moteid       integer NOT NULL,
    version      integer NOT NULL,
    created_at   timestamptz NOT NULL,
    base_version integer,
    n_samples    integer,
    loss_before  double precision,
    loss_after   double precision,
    threshold    double precision,
    PRIMARY KEY (moteid, version)
);
CREATE INDEX IF NOT EXISTS local_losses_created ON reporting.local_losses (created_at);

CREATE TABLE IF NOT EXISTS reporting.dead_letters_minute (
    minute  timestamptz NOT NULL,
    reason  text NOT NULL,
    letters integer NOT NULL,
    PRIMARY KEY (minute, reason)
);

CREATE TABLE IF NOT EXISTS reporting.gaps (
    moteid         integer NOT NULL,
    after_epoch    bigint NOT NULL,
    missing_epochs bigint NOT NULL,
    from_ts        timestamptz NOT NULL,
    to_ts          timestamptz NOT NULL,
    PRIMARY KEY (moteid, after_epoch)
);
CREATE INDEX IF NOT EXISTS gaps_to_ts ON reporting.gaps (moteid, to_ts);

CREATE TABLE IF NOT EXISTS reporting.incidents (
    id            text PRIMARY KEY,
    moteid        integer NOT NULL,
    start_ts      timestamptz NOT NULL,
    last_seen     timestamptz NOT NULL,
    end_ts        timestamptz,
    state         text NOT NULL,
    channels      text[] NOT NULL DEFAULT '{}',
    peak_ratio    double precision,
    fault_type    text,
    model_version integer,
    n_flagged     integer,
    rev           bigint NOT NULL,
    updated_at    timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS incidents_moteid_start ON reporting.incidents (moteid, start_ts);
CREATE INDEX IF NOT EXISTS incidents_start ON reporting.incidents (start_ts);
CREATE INDEX IF NOT EXISTS incidents_open ON reporting.incidents (start_ts) WHERE state = 'open';
"""

VIEWS = """
CREATE OR REPLACE VIEW reporting.v_fleet_minute AS
SELECT minute, readings, readings::double precision / 60 AS readings_per_s, devices, faults, scored,
       anomalies, anomalies::double precision / NULLIF(scored, 0) AS anomaly_rate,
       score_mean, score_max
FROM reporting.fleet_minute;

CREATE OR REPLACE VIEW reporting.v_device_minute AS
SELECT m.moteid, m.minute, m.readings, m.faults, m.scored, m.anomalies,
       m.anomalies::double precision / NULLIF(m.scored, 0) AS anomaly_rate,
       m.score_mean, m.score_max, m.temperature, m.humidity, m.light, m.voltage,
       d.x, d.y
FROM reporting.device_minute m LEFT JOIN reporting.devices d USING (moteid);

CREATE OR REPLACE VIEW reporting.v_mote_anomaly_rate AS
SELECT moteid, x, y, readings, scored, anomalies, faults,
       anomalies::double precision / NULLIF(scored, 0) AS anomaly_rate, first_ts, last_ts
FROM reporting.devices;

CREATE OR REPLACE VIEW reporting.v_anomalies AS
SELECT a.moteid, a.ts, date_trunc('minute', a.ts) AS minute, a.epoch, a.score, a.threshold,
       a.model_version, array_to_string(a.channels, ',') AS channels, d.x, d.y
FROM reporting.anomalies a LEFT JOIN reporting.devices d USING (moteid);

CREATE OR REPLACE VIEW reporting.v_global_versions AS
SELECT version, created_at, strategy, devices, rejected_devices, val_loss, parent_version,
       parent_val_loss, threshold, promoted, promoted_at, is_current, status, f1,
       precision_ AS precision, recall, report_id, refusal_reason, replay_alarm_rate,
       replay_f1, replay_promoted_f1
FROM reporting.model_versions;

CREATE OR REPLACE VIEW reporting.v_promoted_version AS
SELECT version, created_at, promoted_at, strategy, devices, val_loss, f1
FROM reporting.model_versions WHERE is_current;

CREATE OR REPLACE VIEW reporting.v_local_losses AS
SELECT moteid, version, created_at, base_version, n_samples, loss_before, loss_after,
       loss_before - loss_after AS improvement, threshold
FROM reporting.local_losses;

CREATE OR REPLACE VIEW reporting.v_dead_letters_minute AS
SELECT minute, reason, letters FROM reporting.dead_letters_minute;

CREATE OR REPLACE VIEW reporting.v_gaps AS
SELECT g.moteid, g.after_epoch, g.missing_epochs, g.from_ts, g.to_ts, d.x, d.y
FROM reporting.gaps g LEFT JOIN reporting.devices d USING (moteid);

CREATE OR REPLACE VIEW reporting.v_gaps_device AS
SELECT d.moteid, d.x, d.y, d.first_epoch, d.last_epoch, d.readings,
       GREATEST(d.last_epoch - d.first_epoch + 1 - d.readings, 0) AS missing_epochs,
       COALESCE(g.gaps, 0) AS gaps, g.longest_gap_epochs, g.last_gap_ts,
       GREATEST(d.last_epoch - d.first_epoch + 1 - d.readings, 0)::double precision
           / NULLIF(d.last_epoch - d.first_epoch + 1, 0) AS missing_ratio
FROM reporting.devices d
LEFT JOIN (SELECT moteid, count(*) AS gaps, max(missing_epochs) AS longest_gap_epochs,
                  max(to_ts) AS last_gap_ts
           FROM reporting.gaps GROUP BY moteid) g USING (moteid);

CREATE OR REPLACE VIEW reporting.v_incidents AS
SELECT i.id, i.moteid, i.start_ts, i.last_seen, i.end_ts, i.state,
       array_to_string(i.channels, ',') AS channels, i.peak_ratio, i.fault_type,
       i.model_version, i.n_flagged,
       EXTRACT(EPOCH FROM COALESCE(i.end_ts, i.last_seen) - i.start_ts) AS duration_s, d.x, d.y
FROM reporting.incidents i LEFT JOIN reporting.devices d USING (moteid);
"""

VIEW_NAMES = (
    "v_fleet_minute",
    "v_device_minute",
    "v_mote_anomaly_rate",
    "v_anomalies",
    "v_global_versions",
    "v_promoted_version",
    "v_local_losses",
    "v_dead_letters_minute",
    "v_gaps",
    "v_gaps_device",
    "v_incidents",
)


def ensure_schema(conn: psycopg.Connection) -> None:
    """Create the schema, tables, indexes and views (idempotent; one transaction)."""
    with conn.transaction():
        # one creator at a time: concurrent CREATE ... IF NOT EXISTS can still collide
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('iot_fed.reporting.schema'))")
        conn.execute(TABLES)
        # dropped first: CREATE OR REPLACE cannot change a column's type
        conn.execute("DROP VIEW IF EXISTS " + ", ".join(f"{SCHEMA}.{v}" for v in VIEW_NAMES))
        conn.execute(VIEWS)
