#!/usr/bin/env bash
# `make bench`: every benchmark, one after another (tables on stdout, JSON/Markdown in
# bench/results/). QUICK=1 runs the small configurations. Services are started if needed.
# The Flower comparison needs the optional `bench` extra (flwr), installed here into
# assets_data/bench-venv so the project's .venv stays lean.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
QUICK_FLAG=""
[ "${QUICK:-0}" = "1" ] && QUICK_FLAG="--quick"
# Flower (and Ray) live in their own environment, built from the same lock.
UV_PROJECT_ENVIRONMENT=assets_data/bench-venv python3 -m uv sync --locked --extra bench --quiet --compile-bytecode
FLOWER_PY=assets_data/bench-venv/bin/python
.venv/bin/iot-fed services up
run() { echo; echo "=== $*"; "$@"; }
run $PY bench/bench_train.py $QUICK_FLAG
run $PY bench/bench_ingest.py $QUICK_FLAG
run $PY bench/bench_id_queries.py
if [ -n "$QUICK_FLAG" ]; then
  run $PY bench/bench_verdict_write.py --n 5000 --repeat 1 --race 1
else
  run $PY bench/bench_verdict_write.py --n 200000 --repeat 5
fi
run $PY bench/bench_mongo_reads.py
run $PY bench/bench_spark.py $QUICK_FLAG
if [ -n "$QUICK_FLAG" ]; then
  run $PY bench/bench_scorer.py --rates 10 --seconds 20 --rounds 1
else
  run $PY bench/bench_scorer.py
fi
if [ -n "$QUICK_FLAG" ]; then
  run $PY bench/bench_report.py --readings 5000 --repeat 1
else
  run $PY bench/bench_report.py
fi
run $PY bench/bench_detection.py $QUICK_FLAG
if [ -n "$QUICK_FLAG" ]; then
  run $FLOWER_PY bench/bench_flower.py --devices 12 --samples 500 --rounds 2
else
  run $FLOWER_PY bench/bench_flower.py
fi
run $PY bench/bench_round.py
run $PY bench/bench_reporting.py $QUICK_FLAG
echo; echo "results in bench/results/"
