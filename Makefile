# Quartier: `make demo` runs the platform with simulated sensors; `make test` runs the tests.
# Both set up everything they need: system packages (scripts/install-deps.sh: PostgreSQL/PostGIS,
# Mosquitto, and for the tests Node.js and poppler-utils), the virtualenv, and local servers.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DEMO_ARGS ?=

.PHONY: help deps deps-demo venv services-up services-down services-status migrate demo test check lint typecheck bench clean

help:
	@echo "make demo     run the whole platform with simulated sensors (Ctrl-C stops it)"
	@echo "make test     run the test suite (starts its own PostgreSQL and Mosquitto)"
	@echo "make check    lint, type-check and test"
	@echo "make services-up | services-down | services-status"

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

deps:
	scripts/install-deps.sh

deps-demo:
	scripts/install-deps.sh --demo

services-up: deps-demo venv
	$(BIN)/quartier services up

services-down: venv
	$(BIN)/quartier services down

services-status: venv
	$(BIN)/quartier services status

migrate: venv
	$(BIN)/quartier db migrate

demo: deps-demo venv
	$(BIN)/quartier demo $(DEMO_ARGS)

test: deps venv
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check quartier tests bench
	$(BIN)/ruff format --check quartier tests bench

typecheck: venv
	$(BIN)/mypy quartier

check: lint typecheck test

bench: venv
	$(BIN)/python bench/ingest.py

clean:
	-$(BIN)/quartier services down
	rm -rf $(VENV) .quartier
