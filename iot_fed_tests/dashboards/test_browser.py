"""A real browser (Debian's Chromium under Playwright) logs in and opens every dashboard.

Every chart's ``/api/v1/chart/data`` request must succeed and every chart must paint
(a non-empty canvas or svg); a screenshot per dashboard goes to
``assets_data/test-artifacts/dashboards/``. On the Device dashboard with the Mote filter
set, every query of every chart must be narrowed to that mote.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import psycopg
import pytest

from iot_fed.config import Settings
from iot_fed.dashboards import spec
from iot_fed_tests.dashboards.conftest import Superset

pytestmark = pytest.mark.timeout(900)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--disable-dev-shm-usage",
]
PAINTED_JS = """
() => [...document.querySelectorAll('.dashboard-component-chart-holder')].map(holder => {
  const title = holder.querySelector('.header-title, [data-test="editable-title"]');
  const painted = [...holder.querySelectorAll('canvas, svg')].some(el => {
    const r = el.getBoundingClientRect();
    return r.width > 20 && r.height > 20;
  });
  const text = holder.querySelector('.big_number .header-line, .header-line, table tbody tr');
  return {title: title ? title.innerText.trim() : '', painted: painted || !!text,
          error: !!holder.querySelector('.alert-danger, [role="alert"]')};
})
"""


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        pytest.skip("Debian's chromium is not installed (scripts/bootstrap.sh installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


def _wait_or_show(page, condition: str, shot: Path) -> None:
    """Wait for ``condition``; on a timeout, fail with the page's address and a screenshot."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function(condition, timeout=180_000)
    except PlaywrightTimeout:
        page.screenshot(path=str(shot), full_page=True)
        raise AssertionError(f"{condition!r} not met at {page.url}; screenshot {shot}") from None


LOGIN_ATTEMPTS = 3


def _logged_in_page(browser, superset: Superset):
    """A new page, logged in to Superset."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    # bypass_csp: the checks below are evaluated JS, which our strict CSP forbids
    page = browser.new_page(viewport={"width": 1600, "height": 1200}, bypass_csp=True)
    page.set_default_timeout(120_000)
    # The login page posts its own event log as the anonymous user (POST /superset/log/);
    # if that response lands after the login's, its session cookie replaces the logged-in
    # one and the page bounces back to /login. A person types for seconds; a test lets the
    # page go quiet first, and logs in again when it stayed on /login anyway (a fresh-clone
    # rehearsal once did, for the whole two-minute wait).
    for attempt in range(1, LOGIN_ATTEMPTS + 1):
        page.goto(f"{superset.url}/login/")
        page.wait_for_load_state("networkidle")
        page.fill("input[name='username'], #username", superset.user)
        page.fill("input[name='password'], #password", superset.password)
        page.keyboard.press("Enter")
        try:
            page.wait_for_url(lambda url: "/login" not in url, timeout=60_000)
            return page
        except PlaywrightTimeout:
            if attempt == LOGIN_ATTEMPTS:
                raise
    raise AssertionError("unreachable")


def test_every_dashboard_paints_every_chart(
    browser, superset: Superset, dashboards: dict[str, dict], settings: Settings
) -> None:
    out = Path(settings.data_dir) / "test-artifacts" / "dashboards"
    out.mkdir(parents=True, exist_ok=True)
    page = _logged_in_page(browser, superset)
    for dash in spec.DASHBOARDS:
        n_charts = sum(len(row) for row in dash.rows)
        data: list[tuple[int, str]] = []

        def on_response(resp, data=data) -> None:
            if "/api/v1/chart/data" in resp.url:
                data.append((resp.status, resp.text()[:300]))

        page.on("response", on_response)
        page.goto(f"{superset.url}/superset/dashboard/{dashboards[dash.key]['slug']}/")
        holders = "document.querySelectorAll('.dashboard-component-chart-holder').length"
        _wait_or_show(page, f"{holders} >= {n_charts}", out / f"{dash.key}-timeout.png")
        _wait_or_show(
            page,
            f"({PAINTED_JS})().filter(c => c.painted).length >= {n_charts}",
            out / f"{dash.key}-timeout.png",
        )
        page.wait_for_timeout(1500)  # let animations settle for the screenshot
        page.screenshot(path=str(out / f"{dash.key}.png"), full_page=True)
        page.remove_listener("response", on_response)
        charts = page.evaluate(PAINTED_JS)
        assert len(data) >= n_charts, f"{dash.title}: {len(data)} data requests for {n_charts}"
        failed = [d for d in data if d[0] != 200]
        assert not failed, f"{dash.title}: chart data requests failed: {failed}"
        assert all(c["painted"] and not c["error"] for c in charts), f"{dash.title}: {charts}"
    page.close()


MOTE = 3  # not the filter's first value: chosen in the filter bar


def _mote_max(conn: psycopg.Connection, mote: int | None) -> int:
    """The most anomalies in one minute: of ``mote``, or of the fleet (None)."""
    where = "" if mote is None else f"WHERE moteid = {int(mote)}"
    query = f"SELECT max(s) FROM (SELECT sum(anomalies) AS s FROM reporting.device_minute {where}"
    return int(conn.execute(query + " GROUP BY minute) t").fetchone()[0])


def _assert_narrowed(
    answers: list[tuple[dict[str, Any], dict[str, Any]]],
    names: dict[int, str],
    mote: int,
    mote_max: int,
) -> None:
    """Every query of every chart answer was narrowed to ``mote``: the filter applied, the
    SQL restricted, no other mote's row and no more anomalies a minute than it had."""
    answered = {names.get(req.get("form_data", {}).get("slice_id")) for req, _ in answers}
    assert answered >= {c.title for row in spec.DEVICE.rows for c in row}, answered
    sql_filter = re.compile(rf"moteid\W*\s+IN\s*\(\s*{mote}\s*\)", re.IGNORECASE)
    for req, body in answers:
        name = names.get(req.get("form_data", {}).get("slice_id"))
        assert body.get("result"), f"{name}: no result: {str(body)[:300]}"
        for i, result in enumerate(body["result"]):
            where = f"mote {mote}, {name} (query {i})"
            applied = [f.get("column") for f in result.get("applied_filters", [])]
            assert "moteid" in applied, f"{where}: Mote filter not applied: {applied}"
            assert sql_filter.search(result["query"]), f"{where}: SQL {result['query']}"
            for row in result["data"]:
                assert row.get("moteid", mote) == mote, f"{where}: another mote's row {row}"
                assert (row.get("anomalies") or 0) <= mote_max, f"{where}: fleet's anomalies {row}"


class _ChartData:
    """The charts' ``/api/v1/chart/data`` answers on a page, counted against their requests
    (the filter's own option query left out): ``settle`` waits by counts, never a pause."""

    def __init__(self, page) -> None:
        self.page = page
        self.asked = self.answered = 0  # never reset: every query asked gets its answer
        self.answers: list[tuple[dict[str, Any], dict[str, Any]]] = []
        page.on("request", self._on_request)
        page.on("response", self._on_response)

    @staticmethod
    def _is_chart_query(request) -> bool:
        if "/api/v1/chart/data" not in request.url or request.method != "POST":
            return False
        # the filter's own query lists every mote to choose from: not a chart's
        req = request.post_data_json or {}
        return req.get("form_data", {}).get("viz_type") != "filter_select"

    def _on_request(self, request) -> None:
        if self._is_chart_query(request):
            self.asked += 1

    def _on_response(self, resp) -> None:
        if self._is_chart_query(resp.request):
            self.answers.append((resp.request.post_data_json or {}, resp.json()))
            self.answered += 1

    def answered_charts(self) -> set[int]:
        return {req.get("form_data", {}).get("slice_id") for req, _ in self.answers}

    def settle(self, charts: set[int], polls: int = 600) -> None:
        """Until every chart in ``charts`` answered since the last ``answers.clear()`` and
        no chart query is still unanswered (a bounded number of 0.5 s polls)."""
        for _ in range(polls):
            answered_all = charts <= self.answered_charts()
            if answered_all and self.asked <= self.answered:
                return
            self.page.wait_for_timeout(500)

    def close(self) -> None:
        self.page.remove_listener("request", self._on_request)
        self.page.remove_listener("response", self._on_response)


def test_mote_filter_narrows_every_device_chart(
    browser, superset: Superset, dashboards: dict[str, dict], seeded_uri: str, settings: Settings
) -> None:
    """Opened, the Device dashboard shows the first mote's data only (the filter's default
    applied, not just displayed); a mote chosen in the filter bar, that mote's only. Every
    query of every chart counts (a chart's second series too)."""
    out = Path(settings.data_dir) / "test-artifacts" / "dashboards"
    out.mkdir(parents=True, exist_ok=True)
    with psycopg.connect(seeded_uri) as conn:
        first = conn.execute("SELECT min(moteid) FROM reporting.device_minute").fetchone()[0]
        fleet_max = _mote_max(conn, None)
        maxima = {m: _mote_max(conn, m) for m in (first, MOTE)}
    assert fleet_max > max(maxima.values()), "seed: a mote must have fewer anomalies than all"
    dash = spec.DEVICE
    n_charts = sum(len(row) for row in dash.rows)
    names = {c["id"]: c["slice_name"] for c in dashboards[dash.key]["charts"]}
    page = _logged_in_page(browser, superset)
    chart_data = _ChartData(page)
    page.goto(f"{superset.url}/superset/dashboard/{dashboards[dash.key]['slug']}/")
    _wait_or_show(
        page,
        f"({PAINTED_JS})().filter(c => c.painted).length >= {n_charts}",
        out / "device-filtered-timeout.png",
    )
    chart_data.settle(set(names))
    page.screenshot(path=str(out / "device-first-mote.png"), full_page=True)
    _assert_narrowed(chart_data.answers, names, first, maxima[first])

    chart_data.answers.clear()  # choose MOTE in the filter bar, as a person does, and apply
    page.locator('[data-test="filter-bar"] .ant-select-selector').first.click()
    page.keyboard.type(str(MOTE))
    page.locator(f'.ant-select-item-option[title="{MOTE}"]').first.click()
    page.get_by_role("button", name="Apply filters").click()
    chart_data.settle(set(names))
    page.screenshot(path=str(out / f"device-mote-{MOTE}.png"), full_page=True)
    chart_data.close()
    page.close()
    answers = chart_data.answers
    _assert_narrowed(answers, names, MOTE, maxima[MOTE])
