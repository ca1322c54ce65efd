"""Superset under gunicorn with the environment iot_fed wrote (Superset's own Python).

Usage: ``<superset-venv>/bin/python superset_gunicorn.py <env.json> <gunicorn args...>``.
Keeping the environment in a 0600 file keeps the database password out of ``ps``.
"""

import json
import os
import sys
from pathlib import Path

if __name__ == "__main__":
    os.environ.update(json.loads(Path(sys.argv[1]).read_text()))
    from gunicorn.app.wsgiapp import run

    sys.argv = ["gunicorn", *sys.argv[2:], "superset.app:create_app()"]
    run()
