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
export UV_PYTHON_DOWNLOADS=never
python3 -m uv sync --locked --quiet
.venv/bin/iot-fed services install
.venv/bin/iot-fed spark install
