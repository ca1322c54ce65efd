"""Superset set up and served by gunicorn in one process (Superset's own Python).

Usage: ``<superset-venv>/bin/python superset_gunicorn.py <env.json> <bundle.zip> <gunicorn args>``.
The master runs :func:`superset_setup.setup` (schema, roles, admin, dashboards) and hands
that app to its worker, so Superset loads once per start. Keeping the environment in a 0600
file keeps the database password out of ``ps``.
"""

import json
import os
import sys
from pathlib import Path

if __name__ == "__main__":
    os.environ.update(json.loads(Path(sys.argv[1]).read_text()))
    sys.path.insert(0, str(Path(__file__).parent))
    import superset_setup
    from gunicorn.app.wsgiapp import WSGIApplication

    app = superset_setup.setup(sys.argv[2])
    with app.app_context():  # no pooled connection may cross the fork into the worker
        from superset.extensions import db

        db.engine.dispose()

    class PreloadedSuperset(WSGIApplication):
        def load(self):
            return app

    sys.argv = ["gunicorn", *sys.argv[3:], "superset.app:create_app()"]
    PreloadedSuperset("%(prog)s [OPTIONS] [APP_MODULE]", prog=None).run()
