#!/usr/bin/env bash
# The main job on local defaults: services, database init, the looping producer, and Dagster
# (webserver on 127.0.0.1:3000 plus the daemon that runs the sensors). Ctrl-C stops the
# producer and Dagster; `iot-fed services down` stops Kafka and the MongoDB-compatible server.
set -euo pipefail
cd "$(dirname "$0")/.."
RATE="${RATE:-10}"
export DAGSTER_HOME="${DAGSTER_HOME:-$PWD/assets_data/dagster_home}"
mkdir -p "$DAGSTER_HOME"
.venv/bin/iot-fed services up
# The instance on the project's PostgreSQL when it answers, else SQLite (scripts/dagster.yaml's
# settings either way); the eval exports the password variable the YAML refers to.
instance_env="$(.venv/bin/iot-fed dagster-instance)"  # fails the script when it fails
eval "$instance_env"
.venv/bin/iot-fed db init
mkdir -p assets_data/logs
.venv/bin/iot-fed stream --loop --rate "$RATE" > assets_data/logs/producer.log 2>&1 &
producer=$!
trap 'kill -TERM $producer 2>/dev/null; wait $producer 2>/dev/null || true' EXIT INT TERM
echo "run: producer pid $producer at ${RATE} rec/s (log: assets_data/logs/producer.log)"
echo "run: Dagster UI on http://127.0.0.1:3000"
echo "run: dashboards (Superset) on http://127.0.0.1:${IOT_FED_SUPERSET_PORT:-8088}/dashboard/list/ (admin: IOT_FED_SUPERSET_USER/_PASSWORD or assets_data/services/superset/admin.json)"
.venv/bin/dagster dev -h 127.0.0.1 -p 3000 -w workspace.yaml
