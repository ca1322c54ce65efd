"""The four dashboards as data: charts, layouts, filters (datasets: :mod:`.datasets`).

:mod:`iot_fed.dashboards.bundle` renders this into the Superset import bundle (YAML) that
is committed under ``iot_fed/dashboards/bundle/``. Edit here, then regenerate with
``python -m iot_fed.dashboards.bundle``; a test keeps the two in step.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from iot_fed.readings import CHANNELS as READING_CHANNELS

NAMESPACE = uuid.UUID("6f1f0d5e-7a44-4d0c-9d1e-2b7f3c9a1e00")
DATABASE_NAME = "iot_fed reporting"
REFRESH_S = 10  # every dashboard re-queries this often


def metric(sql: str, label: str) -> dict[str, Any]:
    """An ad-hoc SQL metric."""
    return {
        "expressionType": "SQL",
        "sqlExpression": sql,
        "label": label,
        "hasCustomLabel": True,
        "optionName": f"metric_{label.replace(' ', '_')}",
    }


def _timeseries(x_axis: str, metrics: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "x_axis": x_axis,
        "time_grain_sqla": "PT1M",
        "metrics": metrics,
        "groupby": [],
        "adhoc_filters": [],
        "time_range": "No filter",
        "row_limit": 10000,
        "show_legend": True,
        "rich_tooltip": True,
        "truncateXAxis": True,
        "y_axis_format": "SMART_NUMBER",
        **extra,
    }


@dataclass(frozen=True)
class Chart:
    key: str
    title: str
    viz_type: str
    dataset: str
    params: dict[str, Any]
    width: int = 6  # of 12 grid columns
    height: int = 50


@dataclass(frozen=True)
class Dashboard:
    key: str
    title: str
    rows: list[list[Chart]]
    filters: list[dict[str, Any]] = field(default_factory=list)


# the open-incidents table: mote, since, channels, fault type, peak, model version
INCIDENT_COLUMNS = [
    "moteid",
    "start_ts",
    "channels",
    "fault_type",
    "peak_ratio",
    "model_version",
]
OPEN_ONLY = {
    "expressionType": "SIMPLE",
    "subject": "state",
    "operator": "==",
    "comparator": "open",
    "clause": "WHERE",
}


def _incident_table(columns: list[str], filters: list[dict[str, Any]]) -> dict[str, Any]:
    """Raw rows of ``v_incidents``, newest start first."""
    return {
        "query_mode": "raw",
        "all_columns": columns,
        "order_by_cols": ['["start_ts", false]'],
        "adhoc_filters": filters,
        "time_range": "No filter",
        "row_limit": 200,
        "server_pagination": False,
    }


READINGS_PER_S = metric("SUM(readings_per_s)", "readings per s")
ANOMALIES = metric("SUM(anomalies)", "anomalies")
CHANNELS = [metric(f"AVG({c})", c) for c in READING_CHANNELS]

FLEET = Dashboard(
    "fleet",
    "Fleet",
    [
        [
            Chart(
                "fleet_readings_per_s",
                "Readings per second",
                "big_number",
                "v_fleet_minute",
                _timeseries(
                    "minute",
                    [],
                    metric=READINGS_PER_S,
                    show_trend_line=True,
                    start_y_axis_at_zero=True,
                    compare_lag=None,
                ),
                width=4,
            ),
            Chart(
                "fleet_promoted_version",
                "Promoted global version",
                "big_number_total",
                "v_promoted_version",
                {
                    "metric": metric("MAX(version)", "promoted version"),
                    "adhoc_filters": [],
                    "time_range": "No filter",
                    "header_font_size": 0.4,
                    "subheader": "latest promoted",
                },
                width=2,
            ),
            Chart(
                "fleet_anomalies_per_minute",
                "Anomalies per minute",
                "echarts_timeseries_bar",
                "v_fleet_minute",
                _timeseries("minute", [ANOMALIES]),
            ),
        ],
        [
            Chart(
                "fleet_floor_plan",
                "Anomaly rate per mote on the lab floor plan (bubble size)",
                "bubble_v2",
                "v_mote_anomaly_rate",
                {
                    "entity": "moteid",
                    "x": metric("MAX(x)", "x"),
                    "y": metric("MAX(y)", "y"),
                    "size": metric("COALESCE(MAX(anomaly_rate), 0) + 0.001", "anomaly rate"),
                    "adhoc_filters": [],
                    "row_limit": 1000,
                    "max_bubble_size": "25",
                    "color_scheme": "supersetColors",
                    "show_legend": False,
                    "x_axis_label": "x (m)",
                    "y_axis_label": "y (m)",
                    "x_axis_format": "~g",
                    "y_axis_format": "~g",
                    "opacity": 0.7,
                },
                width=12,
                height=70,
            ),
        ],
        # incidents sit on Fleet, not a dashboard of their own: they are what an operator
        # looks at first, fleet-wide; the Device dashboard lists one mote's
        [
            Chart(
                "fleet_open_incidents",
                "Open incidents",
                "table",
                "v_incidents",
                _incident_table(INCIDENT_COLUMNS, [OPEN_ONLY]),
            ),
            Chart(
                "fleet_incidents_per_hour",
                "Incidents per hour by fault type (by start)",
                "echarts_timeseries_bar",
                "v_incidents",
                {
                    **_timeseries("start_ts", [metric("COUNT(*)", "incidents")]),
                    "time_grain_sqla": "PT1H",
                    "groupby": ["fault_type"],
                    "stack": "Stack",
                },
            ),
        ],
    ],
)

DEVICE = Dashboard(
    "device",
    "Device",
    [
        [
            # two standard charts, one query each, rather than a mixed chart with a second
            # query (its anomalies) that the browser test must also see narrowed to the mote
            Chart(
                "device_channels",
                "Channels over time",
                "echarts_timeseries_line",
                "v_device_minute",
                _timeseries("minute", CHANNELS),
                width=12,
                height=60,
            ),
        ],
        [
            Chart(
                "device_anomalies",
                "Anomalies per minute",
                "echarts_timeseries_bar",
                "v_device_minute",
                _timeseries("minute", [ANOMALIES], show_legend=False),
                width=12,
                height=40,
            ),
        ],
        [
            Chart(
                "device_score",
                "Anomaly score (mean and max per minute)",
                "echarts_timeseries_line",
                "v_device_minute",
                _timeseries(
                    "minute",
                    [
                        metric("AVG(score_mean)", "mean score"),
                        metric("MAX(score_max)", "max score"),
                    ],
                ),
                width=12,
            ),
        ],
        [
            Chart(
                "device_incidents",
                "Incidents of this mote",
                "table",
                "v_incidents",
                _incident_table(
                    ["moteid", "start_ts", "last_seen", "state", *INCIDENT_COLUMNS[2:]], []
                ),
                width=12,
            ),
        ],
    ],
    # a native filter narrows every chart in scope whose dataset has the column (moteid)
    filters=[{"key": "mote", "name": "Mote", "dataset": "v_device_minute", "column": "moteid"}],
)

FEDERATION = Dashboard(
    "federation",
    "Federation",
    [
        [
            Chart(
                "federation_validation_loss",
                "Global versions: validation loss (promoted / rejected)",
                "echarts_timeseries_scatter",
                "v_global_versions",
                {
                    **_timeseries("created_at", [metric("MAX(val_loss)", "validation loss")]),
                    "time_grain_sqla": None,
                    "groupby": ["status"],
                    "markerSize": 10,
                },
            ),
            Chart(
                "federation_devices",
                "Devices per global version",
                "echarts_timeseries_line",
                "v_global_versions",
                {
                    **_timeseries("created_at", [metric("MAX(devices)", "devices")]),
                    "time_grain_sqla": None,
                    "markerEnabled": True,
                },
            ),
        ],
        [
            Chart(
                "federation_versions",
                "Global versions",
                "table",
                "v_global_versions",
                {
                    "query_mode": "raw",
                    "all_columns": [
                        "version",
                        "created_at",
                        "strategy",
                        "devices",
                        "val_loss",
                        "status",
                        "f1",
                    ],
                    "order_by_cols": ['["version", false]'],
                    "adhoc_filters": [],
                    "time_range": "No filter",
                    "row_limit": 100,
                    "server_pagination": False,
                },
            ),
            Chart(
                "federation_local_losses",
                "Local training loss per device",
                "echarts_timeseries_line",
                "v_local_losses",
                {
                    **_timeseries("created_at", [metric("AVG(loss_after)", "loss")]),
                    "groupby": ["moteid"],
                    "show_legend": False,
                    "series_limit": 60,
                },
            ),
        ],
    ],
)

DATA_QUALITY = Dashboard(
    "data_quality",
    "Data quality",
    [
        [
            Chart(
                "dq_dead_letters",
                "Dead letters per minute by reason",
                "echarts_timeseries_bar",
                "v_dead_letters_minute",
                {
                    **_timeseries("minute", [metric("SUM(letters)", "dead letters")]),
                    "groupby": ["reason"],
                    "stack": "Stack",
                },
                width=12,
            ),
        ],
        [
            Chart(
                "dq_gaps",
                "Missing epochs (gaps) per device",
                "echarts_timeseries_bar",
                "v_gaps_device",
                {
                    "x_axis": "moteid",
                    "metrics": [metric("SUM(missing_epochs)", "missing epochs")],
                    "groupby": [],
                    "adhoc_filters": [],
                    "time_range": "No filter",
                    "row_limit": 1000,
                    "x_axis_sort_asc": True,
                    "show_legend": False,
                    "xAxisLabelRotation": 45,
                },
                width=12,
            ),
        ],
    ],
)

DASHBOARDS = [FLEET, DEVICE, FEDERATION, DATA_QUALITY]


def uid(kind: str, key: str) -> str:
    """A stable UUID per object, so re-imports overwrite instead of duplicating."""
    return str(uuid.uuid5(NAMESPACE, f"{kind}:{key}"))
