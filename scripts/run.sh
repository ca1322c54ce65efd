#!/usr/bin/env bash
# The main job (`make run`): `iot-fed run` prepares the services, the database and the dataset
# assets, then supervises the producer, Dagster (webserver + daemon on 127.0.0.1:3000), the
# streaming scorer and the model API (127.0.0.1:${IOT_FED_API_PORT:-8000}); logs in
# assets_data/logs. Ctrl-C stops them all; `iot-fed services down` stops Kafka and MongoDB.
set -euo pipefail
cd "$(dirname "$0")/.."
export DAGSTER_HOME="${DAGSTER_HOME:-$PWD/assets_data/dagster_home}"
exec .venv/bin/iot-fed run --rate "${RATE:-10}"
