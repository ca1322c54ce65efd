# The README's two commands: `make run` (main job) and `make test` (test suite).
# Each does its own setup on a fresh machine (uv, locked venv, service artifacts).
BIN := .venv/bin
PYTEST_ARGS ?=

.PHONY: setup run test test-fast test-mongo-server bench bench-quick lint services-up services-down

setup:
	scripts/bootstrap.sh

run: setup
	scripts/run.sh

test: setup test-mongo-server
	$(BIN)/pytest $(PYTEST_ARGS)

# what needs no service and is not slow: numerics, assets and sensors on ephemeral instances,
# parsers, configuration (markers in pyproject.toml; iot_fed_tests/conftest.py marks
# service tests from their fixtures). Under a minute.
FAST := not services and not slow and not spark
test-fast: $(BIN)/pytest
	$(BIN)/pytest -m "$(FAST)" $(PYTEST_ARGS)

# setup once, and again when the lock changes (test-fast skips bootstrap's checks otherwise)
$(BIN)/pytest: uv.lock pyproject.toml
	scripts/bootstrap.sh
	touch $@

# the MongoDB-compatible server's own JUnit tests (its Maven module)
test-mongo-server:
	cd mongo-server && mvn -q -B test

# every benchmark (bench/bench_*.py, one per question): tables, bench/results/<name>.json
bench: setup
	scripts/bench.sh

# each benchmark on a tiny configuration (results in assets_data/bench-quick/): a few minutes
bench-quick: $(BIN)/pytest
	QUICK=1 scripts/bench.sh

lint: setup
	$(BIN)/ruff check iot_fed iot_fed_tests bench
	$(BIN)/ruff format --check iot_fed iot_fed_tests bench

services-up: setup
	$(BIN)/iot-fed services up

services-down:
	$(BIN)/iot-fed services down
