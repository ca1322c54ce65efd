"""The Superset datasets: the reporting views (iot_fed/reporting/README.md), each as
``view -> (main time column, [(column, SQL type)])``. The only place that names them."""

from __future__ import annotations

from iot_fed.readings import CHANNELS

_MINUTE_HEALTH = [
    ("faults", "BIGINT"),
    ("scored", "BIGINT"),
    ("anomalies", "BIGINT"),
    ("anomaly_rate", "DOUBLE PRECISION"),
    ("score_mean", "DOUBLE PRECISION"),
    ("score_max", "DOUBLE PRECISION"),
]
"""The fault and scoring columns of a minute, fleet-wide or per device."""

DATASETS: dict[str, tuple[str, list[tuple[str, str]]]] = {
    "v_fleet_minute": (
        "minute",
        [
            ("minute", "TIMESTAMP WITH TIME ZONE"),
            ("readings", "BIGINT"),
            ("readings_per_s", "DOUBLE PRECISION"),
            ("devices", "BIGINT"),
            *_MINUTE_HEALTH,
        ],
    ),
    "v_device_minute": (
        "minute",
        [
            ("moteid", "INTEGER"),
            ("minute", "TIMESTAMP WITH TIME ZONE"),
            ("readings", "BIGINT"),
            *_MINUTE_HEALTH,
            *((c, "DOUBLE PRECISION") for c in CHANNELS),
            ("x", "DOUBLE PRECISION"),
            ("y", "DOUBLE PRECISION"),
        ],
    ),
    "v_mote_anomaly_rate": (
        "last_ts",
        [
            ("moteid", "INTEGER"),
            ("x", "DOUBLE PRECISION"),
            ("y", "DOUBLE PRECISION"),
            ("readings", "BIGINT"),
            ("scored", "BIGINT"),
            ("anomalies", "BIGINT"),
            ("faults", "BIGINT"),
            ("anomaly_rate", "DOUBLE PRECISION"),
            ("first_ts", "TIMESTAMP WITH TIME ZONE"),
            ("last_ts", "TIMESTAMP WITH TIME ZONE"),
        ],
    ),
    "v_global_versions": (
        "created_at",
        [
            ("version", "INTEGER"),
            ("created_at", "TIMESTAMP WITH TIME ZONE"),
            ("strategy", "TEXT"),
            ("devices", "INTEGER"),
            ("rejected_devices", "INTEGER"),
            ("val_loss", "DOUBLE PRECISION"),
            ("parent_version", "INTEGER"),
            ("parent_val_loss", "DOUBLE PRECISION"),
            ("threshold", "DOUBLE PRECISION"),
            ("promoted", "BOOLEAN"),
            ("promoted_at", "TIMESTAMP WITH TIME ZONE"),
            ("is_current", "BOOLEAN"),
            ("status", "TEXT"),
            ("f1", "DOUBLE PRECISION"),
            ("precision", "DOUBLE PRECISION"),
            ("recall", "DOUBLE PRECISION"),
            ("report_id", "TEXT"),
        ],
    ),
    "v_promoted_version": (
        "created_at",
        [
            ("version", "INTEGER"),
            ("created_at", "TIMESTAMP WITH TIME ZONE"),
            ("promoted_at", "TIMESTAMP WITH TIME ZONE"),
            ("strategy", "TEXT"),
            ("devices", "INTEGER"),
            ("val_loss", "DOUBLE PRECISION"),
            ("f1", "DOUBLE PRECISION"),
        ],
    ),
    "v_local_losses": (
        "created_at",
        [
            ("moteid", "INTEGER"),
            ("version", "INTEGER"),
            ("created_at", "TIMESTAMP WITH TIME ZONE"),
            ("base_version", "INTEGER"),
            ("n_samples", "INTEGER"),
            ("loss_before", "DOUBLE PRECISION"),
            ("loss_after", "DOUBLE PRECISION"),
            ("improvement", "DOUBLE PRECISION"),
            ("threshold", "DOUBLE PRECISION"),
        ],
    ),
    "v_dead_letters_minute": (
        "minute",
        [
            ("minute", "TIMESTAMP WITH TIME ZONE"),
            ("reason", "TEXT"),
            ("letters", "BIGINT"),
        ],
    ),
    "v_gaps_device": (
        "last_gap_ts",
        [
            ("moteid", "INTEGER"),
            ("x", "DOUBLE PRECISION"),
            ("y", "DOUBLE PRECISION"),
            ("first_epoch", "BIGINT"),
            ("last_epoch", "BIGINT"),
            ("readings", "BIGINT"),
            ("missing_epochs", "BIGINT"),
            ("gaps", "BIGINT"),
            ("longest_gap_epochs", "BIGINT"),
            ("last_gap_ts", "TIMESTAMP WITH TIME ZONE"),
            ("missing_ratio", "DOUBLE PRECISION"),
        ],
    ),
    "v_incidents": (
        "start_ts",
        [
            ("id", "TEXT"),
            ("moteid", "INTEGER"),
            ("start_ts", "TIMESTAMP WITH TIME ZONE"),
            ("last_seen", "TIMESTAMP WITH TIME ZONE"),
            ("end_ts", "TIMESTAMP WITH TIME ZONE"),
            ("state", "TEXT"),
            ("channels", "TEXT"),
            ("peak_ratio", "DOUBLE PRECISION"),
            ("fault_type", "TEXT"),
            ("model_version", "INTEGER"),
            ("n_flagged", "INTEGER"),
            ("duration_s", "DOUBLE PRECISION"),
            ("x", "DOUBLE PRECISION"),
            ("y", "DOUBLE PRECISION"),
        ],
    ),
}

VERBOSE_NAMES: dict[str, dict[str, str]] = {
    "v_incidents": {
        "moteid": "mote",
        "start_ts": "since",
        "last_seen": "last flagged",
        "end_ts": "ended",
        "fault_type": "fault type",
        "peak_ratio": "peak (score / threshold)",
        "model_version": "model version",
        "n_flagged": "flagged readings",
    },
}
"""Column headers shown instead of the names (tables), per view."""
