#!/usr/bin/env bash
# `make bench`: every benchmark, one per question, one after another: a table on stdout and
# one canonical JSON file each in bench/results/. QUICK=1 (`make bench-quick`) runs each on a
# tiny configuration and writes to assets_data/bench-quick/ (the canonical figures stay).
# Services are started if needed. Flower (the `bench` extra: flwr, Ray, River, PyOD) lives
# in its own environment, assets_data/bench-venv, built from the same lock.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
Q=()
[ "${QUICK:-0}" = "1" ] && Q=(--quick)
UV_PROJECT_ENVIRONMENT=assets_data/bench-venv python3 -m uv sync --locked --extra bench --quiet --compile-bytecode
BENCH_PY=assets_data/bench-venv/bin/python
.venv/bin/iot-fed services up
run() { echo; echo "=== $*"; local t0=$SECONDS; "$@"; echo "=== ${2##*/}: $((SECONDS - t0)) s"; }
t_all=$SECONDS
run $BENCH_PY bench/bench_train.py "${Q[@]}"      # vmapped round vs loop, aggregation, Flower
run $PY bench/bench_ingest.py "${Q[@]}"           # Kafka -> MongoDB, the store's query shapes
if [ "${QUICK:-0}" = "1" ]; then VW=(--n 5000 --repeat 1 --race 1); else VW=(); fi
run $PY bench/bench_verdict_write.py "${VW[@]}"   # the verdict write: standard vs replaced
run $PY bench/bench_store_calls.py "${Q[@]}"      # a round's database calls, a 100k-device version
run $PY bench/bench_round.py "${Q[@]}"            # one daemon-driven round, burst -> promoted
run $PY bench/bench_partitions.py "${Q[@]}"       # devices partitions at 1k/10k/100k keys: daemon, UI
run $PY bench/bench_fed_scale.py "${Q[@]}"        # a daemon round at 1k/10k/100k devices: stages, RSS, calls
run $PY bench/bench_shard_run.py "${Q[@]}"        # one training shard run, stage by stage (--baseline DIR)
run $PY bench/bench_scorer.py "${Q[@]}"           # the streaming scorer alone
run $PY bench/bench_scorer.py --against-running "${Q[@]}"  # the live pipeline, if one runs
run $PY bench/bench_stream_scale.py "${Q[@]}"     # many devices end to end: ingesters + scorer
run $PY bench/bench_live_quality.py "${Q[@]}"     # cold start: clean readings flagged per minute
run $PY bench/bench_spark.py "${Q[@]}"            # batch scoring, the evaluation report
run $BENCH_PY bench/bench_detection.py "${Q[@]}"  # detection quality vs baselines
run $BENCH_PY bench/bench_sensitivity.py "${Q[@]}"  # recall vs fault magnitude at one budget
run $PY bench/bench_reporting.py "${Q[@]}"        # the dashboards' queries
run $PY bench/bench_durability.py "${Q[@]}"       # kill -9: MongoDB writes, a broker outage
echo; echo "all benchmarks: $((SECONDS - t_all)) s; results in" \
  "$([ ${#Q[@]} -gt 0 ] && echo assets_data/bench-quick/ || echo bench/results/)"
