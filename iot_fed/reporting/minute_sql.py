"""The SQL that folds one batch of staged buckets (``_stage``) into ``device_minute`` and
the tables derived from it, and the per-range deletes before their re-insert."""

from iot_fed.readings import CHANNELS

STAGE_COLUMNS = (
    "moteid, minute, readings, faults, scored, anomalies, score_mean, score_max, "
    f"{', '.join(CHANNELS)}, min_epoch, max_epoch, first_ts, last_ts"
)

DEVICES_DELTA = """
INSERT INTO reporting.devices AS d
    (moteid, first_ts, last_ts, first_epoch, last_epoch, readings, faults, scored, anomalies)
SELECT s.moteid, min(s.first_ts), max(s.last_ts), min(s.min_epoch), max(s.max_epoch),
       sum(s.readings - COALESCE(o.readings, 0)), sum(s.faults - COALESCE(o.faults, 0)),
       sum(s.scored - COALESCE(o.scored, 0)), sum(s.anomalies - COALESCE(o.anomalies, 0))
FROM _stage s LEFT JOIN reporting.device_minute o ON o.moteid = s.moteid AND o.minute = s.minute
GROUP BY s.moteid
ON CONFLICT (moteid) DO UPDATE SET
    first_ts = LEAST(d.first_ts, EXCLUDED.first_ts),
    last_ts = GREATEST(d.last_ts, EXCLUDED.last_ts),
    first_epoch = LEAST(d.first_epoch, EXCLUDED.first_epoch),
    last_epoch = GREATEST(d.last_epoch, EXCLUDED.last_epoch),
    readings = d.readings + EXCLUDED.readings,
    faults = d.faults + EXCLUDED.faults,
    scored = d.scored + EXCLUDED.scored,
    anomalies = d.anomalies + EXCLUDED.anomalies,
    updated_at = now()
"""

UPSERT_MINUTES = f"""
INSERT INTO reporting.device_minute ({STAGE_COLUMNS})
SELECT {STAGE_COLUMNS} FROM _stage
ON CONFLICT (moteid, minute) DO UPDATE SET
    readings = EXCLUDED.readings, faults = EXCLUDED.faults, scored = EXCLUDED.scored,
    anomalies = EXCLUDED.anomalies, score_mean = EXCLUDED.score_mean,
    score_max = EXCLUDED.score_max, temperature = EXCLUDED.temperature,
    humidity = EXCLUDED.humidity, light = EXCLUDED.light, voltage = EXCLUDED.voltage,
    min_epoch = EXCLUDED.min_epoch, max_epoch = EXCLUDED.max_epoch,
    first_ts = EXCLUDED.first_ts, last_ts = EXCLUDED.last_ts, updated_at = now()
"""

FLEET = """
INSERT INTO reporting.fleet_minute AS f
    (minute, readings, devices, faults, scored, anomalies, score_mean, score_max)
SELECT minute, sum(readings), count(*), sum(faults), sum(scored), sum(anomalies),
       sum(score_mean * scored) / NULLIF(sum(scored) FILTER (WHERE score_mean IS NOT NULL), 0),
       max(score_max)
FROM reporting.device_minute
WHERE minute IN (SELECT DISTINCT minute FROM _stage)
GROUP BY minute
ON CONFLICT (minute) DO UPDATE SET
    readings = EXCLUDED.readings, devices = EXCLUDED.devices, faults = EXCLUDED.faults,
    scored = EXCLUDED.scored, anomalies = EXCLUDED.anomalies,
    score_mean = EXCLUDED.score_mean, score_max = EXCLUDED.score_max, updated_at = now()
"""

RANGES = "unnest(%s::int[], %s::timestamptz[], %s::timestamptz[]) AS r(moteid, lo, hi)"

DELETE_ANOMALIES = f"""
DELETE FROM reporting.anomalies a USING {RANGES}
WHERE a.moteid = r.moteid AND a.ts >= r.lo AND a.ts < r.hi
"""

INSERT_ANOMALY = """
INSERT INTO reporting.anomalies (moteid, ts, epoch, score, threshold, model_version, channels)
VALUES (%s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (moteid, ts) DO UPDATE SET epoch = EXCLUDED.epoch, score = EXCLUDED.score,
    threshold = EXCLUDED.threshold, model_version = EXCLUDED.model_version,
    channels = EXCLUDED.channels
"""

DELETE_GAPS = f"""
DELETE FROM reporting.gaps g USING {RANGES}
WHERE g.moteid = r.moteid AND g.to_ts >= r.lo AND g.to_ts < r.hi + interval '10 minutes'
"""

INSERT_GAPS = f"""
INSERT INTO reporting.gaps (moteid, after_epoch, missing_epochs, from_ts, to_ts)
SELECT DISTINCT ON (dm.moteid, p.max_epoch)
       dm.moteid, p.max_epoch, dm.min_epoch - p.max_epoch - 1, p.last_ts, dm.first_ts
FROM {RANGES}
JOIN reporting.device_minute dm
  ON dm.moteid = r.moteid AND dm.minute >= r.lo AND dm.minute < r.hi + interval '10 minutes'
CROSS JOIN LATERAL (
    SELECT max_epoch, last_ts FROM reporting.device_minute p
    WHERE p.moteid = dm.moteid AND p.minute < dm.minute ORDER BY p.minute DESC LIMIT 1
) p
WHERE dm.min_epoch - p.max_epoch > 1
ORDER BY dm.moteid, p.max_epoch
ON CONFLICT (moteid, after_epoch) DO UPDATE SET missing_epochs = EXCLUDED.missing_epochs,
    from_ts = EXCLUDED.from_ts, to_ts = EXCLUDED.to_ts
"""
