"""Superset once per test session (via the manager), on a seeded reporting database.

The reporting data lives in a database of its own on the project's PostgreSQL; the bundle
is re-imported through ``/api/v1/dashboard/import`` (overwrite) pointing at it, and
imported again with the real URI at the end, so a running ``make run`` keeps its data.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest
import requests

from iot_fed.config import Settings
from iot_fed.dashboards import bundle, spec
from iot_fed.dashboards.urls import superset_url
from iot_fed.services import manager
from iot_fed.services.postgres import database_uri
from iot_fed.services.superset import SupersetService

SEED_DATABASE = "iot_fed_dashboards_test"
IMPORTS = (
    ("database", "Database"),
    ("dataset", "SqlaTable"),
    ("chart", "Slice"),
    ("dashboard", "Dashboard"),
)


@dataclass
class Superset:
    """A logged-in REST client for the Superset under test."""

    url: str
    user: str
    password: str
    http: requests.Session

    def _send(self, method: str, path: str, **kw) -> requests.Response:
        """One request; once more after a new login when the access token expired (it
        lives minutes, and a session-scoped client can outlive it on a busy machine)."""
        resp = self.http.request(method, self.url + path, timeout=60, **kw)
        if resp.status_code == 401:
            self.http = _login(self.url, self.user, self.password)
            resp = self.http.request(method, self.url + path, timeout=60, **kw)
        return resp

    def get(self, path: str, **kw) -> dict:
        resp = self._send("GET", path, **kw)
        assert resp.status_code == 200, f"GET {path}: {resp.status_code} {resp.text[:300]}"
        return resp.json()

    def post(self, path: str, **kw) -> requests.Response:
        return self._send("POST", path, **kw)

    def import_bundle(self, reporting_uri: str) -> None:
        """The bundle through the REST import endpoints, each kind with overwrite."""
        for endpoint, kind in IMPORTS:
            resp = self.post(
                f"/api/v1/{endpoint}/import/",
                files={"formData": ("bundle.zip", bundle.zip_bundle(reporting_uri, kind))},
                data={"overwrite": "true"},
            )
            assert resp.status_code == 200, (
                f"{endpoint} import: {resp.status_code} {resp.text[:500]}"
            )


def _login(url: str, user: str, password: str) -> requests.Session:
    http = requests.Session()
    resp = http.post(
        f"{url}/api/v1/security/login",
        json={"username": user, "password": password, "provider": "db", "refresh": False},
        timeout=60,
    )
    assert resp.status_code == 200, f"login: {resp.status_code} {resp.text[:300]}"
    http.headers["Authorization"] = f"Bearer {resp.json()['access_token']}"
    csrf = http.get(f"{url}/api/v1/security/csrf_token/", timeout=60)
    http.headers["X-CSRFToken"] = csrf.json()["result"]
    http.headers["Referer"] = url
    return http


@pytest.fixture(scope="session")
def seeded_uri(postgres: str) -> Iterator[str]:
    """A reporting database with synthetic rows in every table the dashboards read."""
    from iot_fed_tests.dashboards.seed import seed

    admin = postgres
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {SEED_DATABASE} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {SEED_DATABASE}")
    uri = database_uri(postgres, SEED_DATABASE)
    with psycopg.connect(uri) as conn:
        seed(conn)
    yield uri
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {SEED_DATABASE} WITH (FORCE)")


@pytest.fixture(scope="session")
def superset(settings: Settings, postgres: str, seeded_uri: str) -> Iterator[Superset]:
    """Superset up (started once per session if not running), dashboards on the seed data."""
    with manager.session(settings, timeout=300, only=("postgres", "superset")) as statuses:
        st = {s.name: s for s in statuses}["superset"]
        if not st.healthy:
            pytest.fail(f"superset did not start: {st.detail}")
        user, password = SupersetService(settings).credentials()
        url = superset_url(settings)
        client = Superset(url, user, password, _login(url, user, password))
        client.import_bundle(seeded_uri)
        try:
            yield client
        finally:
            client.import_bundle(settings.postgres_uri)


@pytest.fixture(scope="session")
def dashboards(superset: Superset) -> dict[str, dict]:
    """Dashboard key -> {id, slug, charts: [{id, name, viz_type, form_data}]}."""
    out = {}
    for dash in spec.DASHBOARDS:
        slug = f"iot-fed-{dash.key.replace('_', '-')}"
        meta = superset.get(f"/api/v1/dashboard/{slug}")["result"]
        charts = superset.get(f"/api/v1/dashboard/{slug}/charts")["result"]
        out[dash.key] = {"id": meta["id"], "slug": slug, "charts": charts}
    return out
