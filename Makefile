# The README's two commands: `make run` (main job) and `make test` (test suite).
# Each does its own setup on a fresh machine (uv, locked venv, service artifacts).
BIN := .venv/bin
PYTEST_ARGS ?=

.PHONY: setup run test bench bench-quick lint services-up services-down

setup:
	scripts/bootstrap.sh

run: setup
	scripts/run.sh

test: setup
	$(BIN)/pytest $(PYTEST_ARGS)

bench: setup
	scripts/bench.sh

bench-quick: setup
	QUICK=1 scripts/bench.sh

lint: setup
	$(BIN)/ruff check iot_fed iot_fed_tests bench
	$(BIN)/ruff format --check iot_fed iot_fed_tests bench

services-up: setup
	$(BIN)/iot-fed services up

services-down:
	$(BIN)/iot-fed services down
