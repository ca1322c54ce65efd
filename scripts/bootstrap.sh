#!/usr/bin/env bash
# Fresh-machine setup from the package registries alone: uv, the locked virtualenv,
# and the local service artifacts (Kafka jars from Maven Central, FerretDB from the Go proxy).
set -euo pipefail
cd "$(dirname "$0")/.."
UV_VERSION="0.13.9"
if ! python3 -m uv --version >/dev/null 2>&1; then
  echo "bootstrap: installing uv ${UV_VERSION} from PyPI"
  python3 -m pip install --quiet --disable-pip-version-check "uv==${UV_VERSION}"
fi
if [ ! -x /usr/lib/postgresql/15/bin/postgres ] && command -v apt-get >/dev/null 2>&1; then
  echo "bootstrap: installing PostgreSQL 15 (apt package postgresql)"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  # iot-fed runs its own cluster: keep the package from creating and starting one on :5432.
  $SUDO mkdir -p /etc/postgresql-common
  grep -qs '^create_main_cluster' /etc/postgresql-common/createcluster.conf \
    || echo "create_main_cluster = false" | $SUDO tee -a /etc/postgresql-common/createcluster.conf >/dev/null
  APT=(env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends
       -o Dpkg::Options::=--force-confold postgresql)
  { $SUDO "${APT[@]}" || { $SUDO apt-get update -q && $SUDO "${APT[@]}"; }; } \
    || echo "bootstrap: PostgreSQL not installed: the reporting store and dashboards need it (or set IOT_FED_REPORTING=false)"
fi
export UV_PYTHON_DOWNLOADS=never
# --compile-bytecode: this machine sets PYTHONDONTWRITEBYTECODE, so without installed .pyc
# files every process (run workers, Spark's Python workers, the daemon, tests) recompiled
# jax, pandas and dagster from source on import: ~5.7 s of a training run's 22 s.
python3 -m uv sync --locked --quiet --compile-bytecode
.venv/bin/python -m compileall -q -j 0 iot_fed >/dev/null
# Dashboards: Apache Superset in its own virtualenv from its own lock (its pins conflict with
# ours), and Debian's Chromium for the browser test (Playwright's own download is unreachable).
UV_PROJECT_ENVIRONMENT="$PWD/assets_data/superset-venv" python3 -m uv sync --locked --quiet \
  --compile-bytecode --project superset_env || echo "bootstrap: Superset not installed: the dashboards need it (or set IOT_FED_REPORTING=false)"
# after Superset's environment: `services install` checks it is there
.venv/bin/iot-fed services install
.venv/bin/iot-fed spark install
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  echo "bootstrap: installing Chromium (apt package chromium) for the dashboard browser test"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  CHR=(env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium)
  { $SUDO "${CHR[@]}" || { $SUDO apt-get update -q && $SUDO "${CHR[@]}"; }; } \
    || echo "bootstrap: Chromium not installed (the dashboard browser test will be skipped)"
fi
