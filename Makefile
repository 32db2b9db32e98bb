# slot-operator: `make demo` runs the operator on a local control plane; `make test` runs every check.
# Each target sets up what it needs (virtualenv, Go-built Kubernetes binaries cached in ~/.cache).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: all venv binaries cluster-up cluster-down cluster-env lint test test-unit test-integration demo dev bench clean

all: test

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

venv: $(STAMP)

binaries: $(STAMP)
	$(PY) -m devcluster.build

cluster-up: binaries
	$(PY) -m devcluster.cluster up

cluster-down: $(STAMP)
	$(PY) -m devcluster.cluster down

# Usage: eval "$$(make -s cluster-env)"
cluster-env: $(STAMP)
	@$(PY) -m devcluster.cluster env

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/hadolint Dockerfile

test-unit: $(STAMP)
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

test-integration: binaries
	$(PY) -m pytest tests/integration $(PYTEST_ARGS)

# Lint, then every test (unit and integration) in one pytest run; the control plane starts inside it.
test: lint binaries
	$(PY) -m pytest tests $(PYTEST_ARGS)

demo: binaries
	$(PY) -m devcluster.demo

dev: binaries
	$(PY) -m devcluster.demo --keep-running

bench: binaries
	$(PY) -m devcluster.bench

clean: cluster-down
	rm -rf .cluster
