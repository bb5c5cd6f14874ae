# Quartier: `make demo` runs the platform with simulated sensors; `make test` runs the tests.
# Both set up everything they need: system packages (scripts/install-deps.sh: PostgreSQL/PostGIS,
# Mosquitto, and for the tests Node.js and poppler-utils), the virtualenv, and local servers.
# Python packages come from requirements.lock (exact versions with hashes, for Python 3.11 on
# Linux x86_64); `make lock` regenerates it from pyproject.toml.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
LOCK   := requirements.lock
UV_VERSION := 0.13.9
# uv's wheel for Linux x86_64 (the lock's platform): `make venv` installs it hash-checked
UV_SHA256 := d7f459fe4fd247d830351c75686d3996ace3c6f3f728eb0e85a30b7ada0cef19
LOCK_ARGS ?=
DEMO_ARGS ?=
# pytest-xdist workers for `make test` (auto: one per core; each worker starts its own PostgreSQL
# and Mosquitto); TEST_WORKERS=0 runs the suite in one process.
TEST_WORKERS ?= auto

.PHONY: help deps deps-demo venv lock services-up services-down services-status migrate demo test check lint typecheck audit bench clean

help:
	@echo "make demo     run the whole platform with simulated sensors (Ctrl-C stops it)"
	@echo "make test     run the test suite (starts its own PostgreSQL and Mosquitto)"
	@echo "make check    lint, type-check, test and audit the locked packages (pip-audit)"
	@echo "make lock     update requirements.lock after editing pyproject.toml's dependencies"
	@echo "              (keeps the other pins; LOCK_ARGS=--upgrade takes the newest allowed)"
	@echo "make services-up | services-down | services-status"

# The locked packages (hash-checked), then Quartier itself, editable, without resolving anything;
# pip check catches a lock that lacks a dependency added to pyproject.toml since.
# The lock is for Python 3.11 (Debian 12); another Python installs from pyproject.toml's ranges.
# uv (the lock's own tool, `make lock`; pinned by hash here) installs them: it fetches in
# parallel and compiles the bytecode on every core, where pip parses each package's index page,
# downloads and compiles one after the other (docs/benchmarks.md "CI", session 9: pip was most
# of CI's time outside pytest). The bytecode is compiled at install, as pip does: CI runs with
# PYTHONDONTWRITEBYTECODE, so a module not compiled then is compiled in every process again.
$(STAMP): $(LOCK) pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@if $(BIN)/python -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then \
	  echo 'uv==$(UV_VERSION) --hash=sha256:$(UV_SHA256)' > $(VENV)/uv-requirement.txt && \
	  $(BIN)/python -m pip install -q --require-hashes -r $(VENV)/uv-requirement.txt && \
	  $(BIN)/uv pip install -q --python $(BIN)/python --no-deps --require-hashes \
	    --compile-bytecode -r $(LOCK) && \
	  $(BIN)/uv pip install -q --python $(BIN)/python --no-deps -e . ; \
	else \
	  echo "$(LOCK) is for Python 3.11; this is $$($(BIN)/python -V): installing from" \
	    "pyproject.toml's version ranges instead (not reproducible)"; \
	  $(BIN)/python -m pip install -q -e '.[dev]' ; \
	fi
	@$(BIN)/python -m pip check || { echo "$(LOCK) does not cover pyproject.toml's" \
	  "dependencies: run make lock" >&2; exit 1; }
	@touch $(STAMP)

venv: $(STAMP)

# Runtime, pdf and dev dependencies for Python 3.11 on Linux x86_64, every file's hash. uv does the
# resolving (installed into the venv for this, not a dependency of Quartier).
lock:
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q 'uv==$(UV_VERSION)'
	$(BIN)/uv pip compile pyproject.toml --extra dev --generate-hashes $(LOCK_ARGS) \
	  --python-version 3.11 --python-platform x86_64-unknown-linux-gnu \
	  --custom-compile-command 'make lock' -o $(LOCK)

deps:
	scripts/install-deps.sh
	$(PYTHON) bench/mqtt_pub.py --install  # libmosquitto-dev: bench/ingest.py's C publisher

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

# Quartier's own modules compiled first (the editable install leaves them as sources): with
# PYTHONDONTWRITEBYTECODE set, as in CI, every `quartier` process a test starts would compile
# them again (about 0.5 s of CPU each).
test: deps venv
	@$(BIN)/python -m compileall -q quartier bench
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadscope $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check quartier tests bench
	$(BIN)/ruff format --check quartier tests bench

typecheck: venv
	$(BIN)/mypy quartier

# The locked versions against the vulnerability data PyPI serves with each release (its JSON API,
# pypi.org/pypi/NAME/VERSION/json). --strict: a package that cannot be looked up fails the audit;
# without it, an unreachable database would read "No known vulnerabilities found". A machine that
# reaches PyPI's package index but not that API (or OSV: PIP_AUDIT_ARGS='-s osv') fails here.
audit: venv
	@$(BIN)/pip-audit --strict --disable-pip --progress-spinner off -r $(LOCK) $(PIP_AUDIT_ARGS) \
	  || { echo "make audit: FAILED: vulnerable packages (listed above), or pip-audit could not" \
	    "look every locked package up in the vulnerability database (\"not found on PyPI\":" \
	    "pypi.org's JSON API, or OSV with PIP_AUDIT_ARGS='-s osv', is not reachable from here)" >&2; \
	    exit 1; }

check: lint typecheck test audit

bench: venv
	$(BIN)/python bench/ingest.py

clean:
	-$(BIN)/quartier services down
	rm -rf $(VENV) .quartier
