"""API-level checks: every chart of every dashboard answers ``/api/v1/chart/data`` with rows."""

from __future__ import annotations

import time
from typing import Any

import pytest

from iot_fed.dashboards import spec
from iot_fed_tests.dashboards.conftest import Superset

pytestmark = pytest.mark.timeout(900)

CHARTS = {c.key: c for d in spec.DASHBOARDS for row in d.rows for c in row}


def _query(params: dict[str, Any]) -> dict[str, Any]:
    """The query the chart's frontend builds, in its simplest form (metrics by x axis/groups)."""
    metrics = [params[k] for k in ("metric", "x", "y", "size") if isinstance(params.get(k), dict)]
    metrics += params.get("metrics", []) + params.get("metrics_b", [])
    columns = list(params.get("groupby", []))
    if params.get("all_columns"):
        return {"columns": params["all_columns"], "metrics": [], "row_limit": 100}
    if params.get("entity"):
        columns.append(params["entity"])
    if params.get("x_axis"):
        axis = params["x_axis"]
        grain = params.get("time_grain_sqla")
        columns.insert(
            0,
            {
                "columnType": "BASE_AXIS",
                "sqlExpression": axis,
                "label": axis,
                "expressionType": "SQL",
                **({"timeGrain": grain} if grain else {}),
            },
        )
    return {"columns": columns, "metrics": metrics, "row_limit": 10000, "filters": []}


def test_every_chart_returns_rows_fast(superset: Superset, dashboards: dict[str, dict]) -> None:
    timings = {}
    for dash in spec.DASHBOARDS:
        by_title = {c["slice_name"]: c for c in dashboards[dash.key]["charts"]}
        for key in (c.key for row in dash.rows for c in row):
            chart = by_title.get(CHARTS[key].title)
            assert chart is not None, f"{dash.title}: chart {CHARTS[key].title!r} missing"
            form = chart["form_data"]
            ds_id = int(str(form["datasource"]).split("__")[0])
            body = {
                "datasource": {"id": ds_id, "type": "table"},
                "queries": [_query(CHARTS[key].params)],
                "form_data": form,
                "result_format": "json",
                "result_type": "full",
            }
            t0 = time.perf_counter()
            resp = superset.post("/api/v1/chart/data", json=body)
            timings[key] = time.perf_counter() - t0
            assert resp.status_code == 200, f"{key}: {resp.status_code} {resp.text[:400]}"
            (result,) = resp.json()["result"]
            assert result.get("error") is None, f"{key}: {result['error']}"
            assert result["rowcount"] > 0, f"{key}: no rows"
    print({k: round(v * 1000) for k, v in timings.items()})  # timed in bench/bench_reporting.py


def test_native_filter_and_refresh(dashboards: dict[str, dict], superset: Superset) -> None:
    for dash in spec.DASHBOARDS:
        meta = superset.get(f"/api/v1/dashboard/{dashboards[dash.key]['slug']}")["result"]
        import json

        md = json.loads(meta["json_metadata"])
        assert 10 <= md["refresh_frequency"] <= 30
        filters = md.get("native_filter_configuration", [])
        assert [f["name"] for f in filters] == [f["name"] for f in dash.filters]
        for f in filters:
            assert f["targets"][0]["datasetId"], "native filter lost its dataset on import"


def test_reimport_is_idempotent(
    superset: Superset, dashboards: dict[str, dict], seeded_uri: str
) -> None:
    before = superset.get("/api/v1/chart/?q=(page_size:100)")["count"]
    superset.import_bundle(seeded_uri)
    after = superset.get("/api/v1/chart/?q=(page_size:100)")["count"]
    assert after == before
    again = superset.get(f"/api/v1/dashboard/{dashboards['fleet']['slug']}")["result"]
    assert again["id"] == dashboards["fleet"]["id"]
