"""Superset setup before it serves: one app load, idempotent, one log line per step.

Usage: ``<superset-venv>/bin/python superset_setup.py <env.json> <bundle.zip>``, or
:func:`setup` from ``superset_gunicorn.py``, which then serves the same app.
``db upgrade`` and ``init`` run only when the metadata schema is behind the installed
Superset (later starts skip them); the admin user is created or its password re-set from the
settings; the dashboard bundle is imported with overwrite.
"""

import json
import os
import sys
import time
from pathlib import Path
from zipfile import ZipFile


def _step(name: str, t0: float) -> None:
    print(f"superset-setup: {name} ({time.monotonic() - t0:.1f}s)", flush=True)


def _schema_current(stamp: Path) -> bool:
    """True when the schema is at Superset's heads and ``init`` ran after reaching them."""
    from alembic.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from flask import current_app
    from superset.extensions import db

    script = ScriptDirectory.from_config(current_app.extensions["migrate"].migrate.get_config())
    with db.engine.connect() as conn:
        current = set(MigrationContext.configure(conn).get_current_heads())
    heads = ",".join(sorted(script.get_heads()))
    return current == set(script.get_heads()) and stamp.exists() and stamp.read_text() == heads


def _write_stamp(stamp: Path) -> None:
    from alembic.script import ScriptDirectory
    from flask import current_app

    script = ScriptDirectory.from_config(current_app.extensions["migrate"].migrate.get_config())
    stamp.write_text(",".join(sorted(script.get_heads())))


def _ensure_admin(username: str, password: str) -> None:
    from superset import security_manager
    from superset.extensions import db
    from werkzeug.security import check_password_hash

    user = security_manager.find_user(username=username)
    if user is None:
        role = security_manager.find_role("Admin")
        added = security_manager.add_user(
            username, "iot_fed", "admin", f"{username}@localhost", role, password=password
        )
        if not added:
            raise SystemExit(f"superset-setup: could not create admin user {username!r}")
    elif not check_password_hash(user.password, password):
        security_manager.reset_password(user.id, password)
    db.session.commit()


# Each importer overwrites only its own kind (a dashboard import keeps existing charts,
# datasets and the database as they were), so the bundle goes through all four in order.
IMPORTERS = (
    ("superset.commands.database.importers.dispatcher", "ImportDatabasesCommand", "Database"),
    ("superset.commands.dataset.importers.dispatcher", "ImportDatasetsCommand", "SqlaTable"),
    ("superset.commands.chart.importers.dispatcher", "ImportChartsCommand", "Slice"),
    ("superset.commands.dashboard.importers.dispatcher", "ImportDashboardsCommand", "Dashboard"),
)


def _import_bundle(path: Path, username: str) -> None:
    import importlib

    import yaml
    from flask import g
    from superset import security_manager
    from superset.commands.importers.v1.utils import get_contents_from_bundle

    g.user = security_manager.find_user(username=username)
    with ZipFile(path) as bundle:
        contents = get_contents_from_bundle(bundle)
    metadata = yaml.safe_load(contents["metadata.yaml"])
    for module, name, model in IMPORTERS:
        command = getattr(importlib.import_module(module), name)
        typed = {**contents, "metadata.yaml": yaml.safe_dump({**metadata, "type": model})}
        command(typed, overwrite=True).run()


def setup(bundle: str):
    """Create the app and bring schema, roles, admin and dashboards up to date; the app."""
    t0 = time.monotonic()
    from superset.app import create_app

    app = create_app()
    _step("app loaded", t0)
    with app.app_context():
        stamp = Path("schema.stamp")  # in the service home (the working directory)
        if not _schema_current(stamp):
            from flask_migrate import upgrade
            from superset import appbuilder, security_manager

            upgrade()
            _step("db upgrade", t0)
            appbuilder.add_permissions(update_perms=True)
            security_manager.sync_role_definitions()
            _write_stamp(stamp)
            _step("init (roles and permissions)", t0)
        user = os.environ["IOT_FED_SUPERSET_USER"]
        _ensure_admin(user, os.environ["IOT_FED_SUPERSET_PASSWORD"])
        _step(f"admin user {user}", t0)
        _import_bundle(Path(bundle), user)
        _step(f"dashboards imported from {bundle}", t0)
    return app


if __name__ == "__main__":
    os.environ.update(json.loads(Path(sys.argv[1]).read_text()))
    setup(sys.argv[2])
