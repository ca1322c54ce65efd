"""Where the Superset UI and the four dashboards answer (for links in Dagster and logs)."""

from __future__ import annotations

from iot_fed.config import Settings
from iot_fed.dashboards import spec

LOCAL_HOST = "127.0.0.1"


def superset_url(settings: Settings) -> str:
    return f"http://{LOCAL_HOST}:{settings.superset_port}"


def dashboard_slug(dash: spec.Dashboard) -> str:
    return f"iot-fed-{dash.key.replace('_', '-')}"


def dashboard_urls(settings: Settings) -> dict[str, str]:
    """Dashboard title -> URL (by slug; stable across re-imports)."""
    base = superset_url(settings)
    return {d.title: f"{base}/superset/dashboard/{dashboard_slug(d)}/" for d in spec.DASHBOARDS}
