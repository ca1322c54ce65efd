# The README's two commands: `make run` (main job) and `make test` (test suite).
# Each does its own setup on a fresh machine (uv, locked venv, service artifacts).
BIN := .venv/bin
PYTEST_ARGS ?=

.PHONY: setup run test test-mongo-server bench bench-quick lint services-up services-down

setup:
	scripts/bootstrap.sh

run: setup
	scripts/run.sh

test: setup test-mongo-server
	$(BIN)/pytest $(PYTEST_ARGS)

# the MongoDB-compatible server's own JUnit tests (its Maven module)
test-mongo-server:
	cd mongo-server && mvn -q -B test

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
