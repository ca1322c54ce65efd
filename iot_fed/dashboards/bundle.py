"""Render :mod:`iot_fed.dashboards.spec` as a Superset v1 import bundle (YAML) and zip it.

``python -m iot_fed.dashboards.bundle`` rewrites the committed YAML under
``iot_fed/dashboards/bundle/``. :func:`zip_bundle` packs that directory with the real
reporting database URI for ``superset import-dashboards`` / ``/api/v1/dashboard/import``.
"""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from pathlib import Path
from typing import Any

import yaml

from iot_fed.dashboards import spec
from iot_fed.dashboards.datasets import DATASETS, VERBOSE_NAMES
from iot_fed.dashboards.urls import dashboard_slug

BUNDLE_DIR = Path(__file__).with_name("bundle")
URI_PLACEHOLDER = "postgresql+psycopg2://iot_fed:XXXXXXXXXX@127.0.0.1:5432/iot_fed"
VERSION = "1.0.0"


def _database() -> dict[str, Any]:
    return {
        "database_name": spec.DATABASE_NAME,
        "sqlalchemy_uri": URI_PLACEHOLDER,
        "cache_timeout": None,
        "expose_in_sqllab": True,
        "allow_run_async": False,
        "allow_ctas": False,
        "allow_cvas": False,
        "allow_dml": False,
        "allow_file_upload": False,
        "extra": {"allows_virtual_table_explore": True},
        "uuid": spec.uid("database", "reporting"),
        "version": VERSION,
    }


def _dataset(key: str) -> dict[str, Any]:
    dttm, columns = DATASETS[key]
    return {
        "table_name": key,
        "main_dttm_col": dttm or None,
        "schema": "reporting",
        "sql": None,
        "params": None,
        "template_params": None,
        "filter_select_enabled": True,
        "fetch_values_predicate": None,
        "extra": None,
        "cache_timeout": None,
        "normalize_columns": False,
        "columns": [
            {
                "column_name": name,
                "type": typ,
                "is_dttm": name == dttm or typ.startswith("TIMESTAMP"),
                "is_active": True,
                "groupby": True,
                "filterable": True,
                "expression": None,
                "verbose_name": VERBOSE_NAMES.get(key, {}).get(name),
                "description": None,
                "python_date_format": None,
                "extra": None,
            }
            for name, typ in columns
        ],
        "metrics": [
            {
                "metric_name": "count",
                "verbose_name": "COUNT(*)",
                "metric_type": "count",
                "expression": "COUNT(*)",
                "description": None,
                "d3format": None,
                "warning_text": None,
                "extra": None,
            }
        ],
        "uuid": spec.uid("dataset", key),
        "database_uuid": spec.uid("database", "reporting"),
        "version": VERSION,
    }


def _chart(chart: spec.Chart) -> dict[str, Any]:
    params = {"viz_type": chart.viz_type, **chart.params}
    return {
        "slice_name": chart.title,
        "description": None,
        "viz_type": chart.viz_type,
        "params": params,
        "query_context": None,
        "cache_timeout": None,
        "uuid": spec.uid("chart", chart.key),
        "dataset_uuid": spec.uid("dataset", chart.dataset),
        "version": VERSION,
    }


def _position(dash: spec.Dashboard) -> dict[str, Any]:
    pos: dict[str, Any] = {
        "DASHBOARD_VERSION_KEY": "v2",
        "ROOT_ID": {"type": "ROOT", "id": "ROOT_ID", "children": ["GRID_ID"]},
        "HEADER_ID": {"type": "HEADER", "id": "HEADER_ID", "meta": {"text": dash.title}},
        "GRID_ID": {"type": "GRID", "id": "GRID_ID", "children": [], "parents": ["ROOT_ID"]},
    }
    for r, row in enumerate(dash.rows):
        row_id = f"ROW-{dash.key}-{r}"
        pos["GRID_ID"]["children"].append(row_id)
        pos[row_id] = {
            "type": "ROW",
            "id": row_id,
            "children": [],
            "parents": ["ROOT_ID", "GRID_ID"],
            "meta": {"background": "BACKGROUND_TRANSPARENT"},
        }
        for chart in row:
            chart_id = f"CHART-{chart.key}"
            pos[row_id]["children"].append(chart_id)
            pos[chart_id] = {
                "type": "CHART",
                "id": chart_id,
                "children": [],
                "parents": ["ROOT_ID", "GRID_ID", row_id],
                "meta": {
                    "uuid": spec.uid("chart", chart.key),
                    "sliceName": chart.title,
                    "width": chart.width,
                    "height": chart.height,
                    "chartId": 0,
                },
            }
    return pos


def _native_filter(dash: spec.Dashboard, f: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": f"NATIVE_FILTER-{dash.key}-{f['key']}",
        "name": f["name"],
        "filterType": "filter_select",
        "type": "NATIVE_FILTER",
        "targets": [
            {"datasetUuid": spec.uid("dataset", f["dataset"]), "column": {"name": f["column"]}}
        ],
        "defaultDataMask": {"extraFormData": {}, "filterState": {}, "ownState": {}},
        "controlValues": {
            "enableEmptyFilter": True,
            "defaultToFirstItem": True,
            "multiSelect": False,
            "searchAllOptions": False,
            "inverseSelection": False,
        },
        # what Superset's filter editor saves with "select first value by default": without
        # it the bar shows the first mote but the charts load (and stay) unfiltered
        "requiredFirst": True,
        "cascadeParentIds": [],
        "scope": {"rootPath": ["ROOT_ID"], "excluded": []},
        "description": "",
        "chartsInScope": [],
        "tabsInScope": [],
    }


def _dashboard(dash: spec.Dashboard) -> dict[str, Any]:
    return {
        "dashboard_title": dash.title,
        "description": None,
        "css": "",
        "slug": dashboard_slug(dash),
        "certified_by": None,
        "certification_details": None,
        "published": True,
        "uuid": spec.uid("dashboard", dash.key),
        "position": _position(dash),
        "metadata": {
            "refresh_frequency": spec.REFRESH_S,
            "timed_refresh_immune_slices": [],
            "expanded_slices": {},
            "color_scheme": "supersetColors",
            "label_colors": {},
            "shared_label_colors": [],
            "color_scheme_domain": [],
            "cross_filters_enabled": False,
            "native_filter_configuration": [_native_filter(dash, f) for f in dash.filters],
            "chart_configuration": {},
            "default_filters": "{}",
        },
        "version": VERSION,
    }


def render() -> dict[str, str]:
    """Bundle path (inside the bundle root) -> YAML text."""
    docs: dict[str, Any] = {
        "metadata.yaml": {
            "version": VERSION,
            "type": "Dashboard",
            "timestamp": "2026-01-01T00:00:00+00:00",
        },
        "databases/iot_fed_reporting.yaml": _database(),
    }
    for key in DATASETS:
        docs[f"datasets/iot_fed_reporting/{key}.yaml"] = _dataset(key)
    for dash in spec.DASHBOARDS:
        docs[f"dashboards/{dash.key}.yaml"] = _dashboard(dash)
        for row in dash.rows:
            for chart in row:
                docs[f"charts/{chart.key}.yaml"] = _chart(chart)
    return {path: yaml.safe_dump(doc, sort_keys=False, width=100) for path, doc in docs.items()}


def write(directory: Path = BUNDLE_DIR) -> None:
    """Rewrite the committed YAML tree."""
    if directory.exists():
        shutil.rmtree(directory)
    for path, text in render().items():
        out = directory / path
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)


def read(directory: Path = BUNDLE_DIR) -> dict[str, str]:
    """The committed YAML tree: relative path -> text."""
    return {
        p.relative_to(directory).as_posix(): p.read_text()
        for p in sorted(directory.rglob("*.yaml"))
    }


def contents(reporting_uri: str, directory: Path = BUNDLE_DIR) -> dict[str, str]:
    """The bundle with the real reporting database URI (SQLAlchemy psycopg2 form)."""
    uri = reporting_uri.replace("postgresql://", "postgresql+psycopg2://", 1)
    uri = uri.replace("postgres://", "postgresql+psycopg2://", 1)
    out = read(directory)
    db = "databases/iot_fed_reporting.yaml"
    out[db] = out[db].replace(URI_PLACEHOLDER, json.dumps(uri)[1:-1])
    return out


def zip_bundle(
    reporting_uri: str, metadata_type: str = "Dashboard", directory: Path = BUNDLE_DIR
) -> bytes:
    """A zip as Superset exports it (one root folder) with the real URI.

    ``metadata_type``: the kind the import endpoint expects (``Database``, ``SqlaTable``,
    ``Slice`` or ``Dashboard``); each importer overwrites only objects of its kind.
    """
    files = contents(reporting_uri, directory)
    meta = yaml.safe_load(files["metadata.yaml"])
    files["metadata.yaml"] = yaml.safe_dump({**meta, "type": metadata_type}, sort_keys=False)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for path, text in files.items():
            zf.writestr(f"iot_fed_dashboards/{path}", text)
    return buf.getvalue()


if __name__ == "__main__":
    write()
    print(f"wrote {len(read())} files under {BUNDLE_DIR}")
