"""Apache Superset (dashboards) under gunicorn on 127.0.0.1, from its own virtualenv.

Superset's pins conflict with the project's, so it lives in ``<data_dir>/superset-venv``,
installed by ``scripts/bootstrap.sh`` from ``superset_env/uv.lock``. Its metadata is the
``superset`` database of ``IOT_FED_POSTGRES_URI``; the dashboards read the reporting schema
of the same server. Under ``<state_dir>/superset`` it keeps what is generated once: the
``SECRET_KEY`` and, when ``IOT_FED_SUPERSET_USER`` / ``IOT_FED_SUPERSET_PASSWORD`` are unset,
the admin credentials (printed once). Every start runs ``superset_gunicorn.py``: the setup
(schema upgrade and init only when behind, admin, bundle import with overwrite), then
gunicorn serving that same app.

It is required unless ``IOT_FED_REPORTING`` is false (:class:`ReportingService`).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

from iot_fed.dashboards import bundle
from iot_fed.dashboards.urls import superset_url
from iot_fed.services.base import LOCAL_HOST, ReportingService
from iot_fed.services.process import ServiceError

log = logging.getLogger(__name__)

DASHBOARD_DIR = Path(bundle.__file__).parent
METADATA_DATABASE = "superset"


class SupersetService(ReportingService):
    name = "superset"
    setting = "IOT_FED_SUPERSET_PORT"
    # the process first upgrades the schema (first start) and imports the dashboards
    start_timeout = 420.0

    @property
    def is_local(self) -> bool:
        return True

    @property
    def endpoint(self) -> str:
        return superset_url(self.settings)

    def ports(self) -> list[int]:
        return [self.settings.superset_port]

    @property
    def venv(self) -> Path:
        return Path(self.settings.data_dir).resolve() / "superset-venv"

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    # --- install -----------------------------------------------------------------
    def installed(self) -> bool:
        return (self.venv / "bin" / "superset").is_file() and (
            self.venv / "bin" / "gunicorn"
        ).is_file()

    def install(self) -> None:
        """Nothing to fetch here: ``scripts/bootstrap.sh`` syncs the venv from its lock."""
        if not self.installed():
            raise ServiceError(
                f"superset: no Superset virtualenv at {self.venv} (run scripts/bootstrap.sh: "
                f"uv sync --locked --project superset_env); log {self.log_path}"
            )

    # --- generated once --------------------------------------------------------------
    def _keep(self, name: str, make) -> str:
        """The value stored in ``<home>/<name>`` (0600), created by ``make()`` the first time."""
        path = self.home / name
        if path.exists():
            return path.read_text().strip()
        path.parent.mkdir(parents=True, exist_ok=True)
        value = make()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(value + "\n")
        return value

    def secret_file(self) -> Path:
        self._keep("secret_key", lambda: secrets.token_urlsafe(48))
        return self.home / "secret_key"

    def credentials(self) -> tuple[str, str]:
        """Admin (user, password): the settings, else generated once and printed once."""
        s = self.settings
        if s.superset_user and s.superset_password:
            return s.superset_user, s.superset_password.get_secret_value()
        fresh = not (self.home / "admin.json").exists()
        raw = self._keep(
            "admin.json",
            lambda: json.dumps(
                {"user": s.superset_user or "admin", "password": secrets.token_urlsafe(12)}
            ),
        )
        stored = json.loads(raw)
        user = s.superset_user or stored["user"]
        password = (
            s.superset_password.get_secret_value() if s.superset_password else stored["password"]
        )
        if fresh:
            print(
                f"superset: admin user {user!r} password {password!r} "
                f"(generated once, kept in {self.home / 'admin.json'})",
                flush=True,
            )
        return user, password

    def metadata_uri(self) -> str:
        u = urlparse(self.settings.postgres_uri)
        return u._replace(scheme="postgresql+psycopg2", path=f"/{METADATA_DATABASE}").geturl()

    def env_file(self) -> Path:
        user, password = self.credentials()
        env = {
            "SUPERSET_CONFIG_PATH": str(DASHBOARD_DIR / "superset_config.py"),
            "IOT_FED_SUPERSET_SECRET_FILE": str(self.secret_file()),
            "IOT_FED_SUPERSET_DB_URI": self.metadata_uri(),
            "IOT_FED_SUPERSET_USER": user,
            "IOT_FED_SUPERSET_PASSWORD": password,
            "SUPERSET_HOME": str(self.home / "home"),
            "FLASK_APP": "superset",
        }
        path = self.home / "env.json"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(env, fh)
        return path

    # --- prepare / run -----------------------------------------------------------------
    def prepare(self) -> None:
        """The environment file and the bundle zip; the process itself sets Superset up."""
        self.install()
        self.home.mkdir(parents=True, exist_ok=True)
        self.zip_path.write_bytes(bundle.zip_bundle(self.settings.postgres_uri))
        self.env_file()

    @property
    def zip_path(self) -> Path:
        return self.home / "dashboards.zip"

    def command(self) -> list[str]:
        return [
            str(self.python),
            str(DASHBOARD_DIR / "superset_gunicorn.py"),
            str(self.home / "env.json"),
            str(self.zip_path),
            "--bind",
            f"{LOCAL_HOST}:{self.settings.superset_port}",
            "--workers",
            "1",
            "--worker-class",
            "gthread",
            "--threads",
            "8",
            "--timeout",
            "120",
            "--limit-request-line",
            "0",
            "--limit-request-field_size",
            "0",
        ]

    def probe(self, timeout: float) -> str | None:
        try:
            with urllib.request.urlopen(f"{self.endpoint}/health", timeout=timeout) as resp:
                body = resp.read().decode(errors="replace").strip()
        except (urllib.error.URLError, OSError) as exc:
            return f"no answer at {self.endpoint}/health: {exc}"
        return None if body == "OK" else f"/health said {body[:60]!r}"
