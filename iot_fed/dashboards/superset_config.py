"""Superset configuration for iot_fed (loaded by Superset's own virtualenv, not the project's).

Everything comes from the environment that ``iot_fed/services/superset.py`` sets:
``IOT_FED_SUPERSET_DB_URI`` (metadata database), ``IOT_FED_SUPERSET_SECRET_FILE`` (the
SECRET_KEY generated once under assets_data). Nothing here reaches the internet: the
content security policy allows this origin only (no Scarf pixel, no web fonts, no map tiles).
"""

import os
from pathlib import Path

SECRET_KEY = Path(os.environ["IOT_FED_SUPERSET_SECRET_FILE"]).read_text().strip()
SQLALCHEMY_DATABASE_URI = os.environ["IOT_FED_SUPERSET_DB_URI"]
SQLALCHEMY_EXAMPLES_URI = SQLALCHEMY_DATABASE_URI

# Local only: fresh data on every dashboard refresh, no Celery, no thumbnails, no reports.
CACHE_CONFIG = {"CACHE_TYPE": "SimpleCache", "CACHE_DEFAULT_TIMEOUT": 300}
DATA_CACHE_CONFIG = {"CACHE_TYPE": "NullCache"}
FILTER_STATE_CACHE_CONFIG = {"CACHE_TYPE": "SimpleCache", "CACHE_DEFAULT_TIMEOUT": 86400}
EXPLORE_FORM_DATA_CACHE_CONFIG = {"CACHE_TYPE": "SimpleCache", "CACHE_DEFAULT_TIMEOUT": 86400}
FEATURE_FLAGS = {
    "THUMBNAILS": False,
    "ALERT_REPORTS": False,
    "DASHBOARD_VIRTUALIZATION": False,  # paint every chart (the browser test checks them all)
}
RATELIMIT_ENABLED = False
RATELIMIT_STORAGE_URI = "memory://"
SUPERSET_WEBSERVER_TIMEOUT = 60
DASHBOARD_AUTO_REFRESH_MODE = "fetch"
SUPERSET_DASHBOARD_PERIODICAL_REFRESH_LIMIT = 0

# No phone-home: no Scarf telemetry, no external fonts, map tiles or avatars.
SCARF_ANALYTICS = False
THEME_FONT_URL_ALLOWED_DOMAINS: list[str] = []
SLACK_ENABLE_AVATARS = False
MAPBOX_API_KEY = ""
TALISMAN_ENABLED = True
_SELF = ["'self'"]
TALISMAN_CONFIG = {
    "content_security_policy": {
        "base-uri": _SELF,
        "default-src": _SELF,
        "img-src": [*_SELF, "blob:", "data:"],
        "worker-src": [*_SELF, "blob:"],
        "connect-src": _SELF,
        "object-src": "'none'",
        "style-src": [*_SELF, "'unsafe-inline'"],
        "font-src": [*_SELF, "data:"],
        "script-src": [*_SELF, "'strict-dynamic'"],
    },
    "content_security_policy_nonce_in": ["script-src"],
    "force_https": False,
    "session_cookie_secure": False,
}
CONTENT_SECURITY_POLICY_WARNING = False
SESSION_COOKIE_SECURE = False
WTF_CSRF_ENABLED = True
