# slot-operator: `make demo` runs the operator on a local control plane; `make test` runs every check.
# Each target sets up what it needs (virtualenv, Go-built Kubernetes binaries cached in ~/.cache).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# The local cluster's containers switch uid and mount volumes, and claims hold files of other uids: as root
# this runs the command directly, otherwise as root of a user namespace on the invoking user's subordinate
# ids (devcluster/isolation.py). `isolation` is the preflight: it stops at once, before anything is built,
# naming what is missing. Standard library only, so the system Python runs both. A cluster already running in
# .cluster/ is joined in its namespace, so tests may look at its containers' processes.
ISOLATED := $(PYTHON) -m devcluster.isolation run --join-cluster .cluster --

.PHONY: all venv binaries image image-if-buildable isolation cluster-up cluster-down cluster-env lint test test-unit test-integration demo dev bench clean

all: test

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

venv: $(STAMP)

binaries: $(STAMP)
	$(PY) -m devcluster.build

# The operator image: localhost/slot-operator:dev in the local store and dist/slot-operator_dev.oci.tar
# (docker build with a Docker engine, else buildah; see tools/image.py).
image: $(STAMP)
	$(PY) -m tools.image

# As `image`, but an ordinary user with neither buildah nor a Docker engine gets a warning, not a failure
# (the tests that need the image then skip and say why); root installs what is missing.
image-if-buildable: $(STAMP)
	$(PY) -m tools.image --if-buildable

# As root, the suite also needs what its rootless test uses (a temporary account's user namespace).
isolation:
	@$(PYTHON) -m devcluster.isolation check $(if $(filter all test test-integration,$(or $(MAKECMDGOALS),all)),--for-tests)

cluster-up: isolation binaries
	$(ISOLATED) $(PY) -m devcluster.cluster up

cluster-down: $(STAMP)
	$(PY) -m devcluster.cluster down

# Usage: eval "$$(make -s cluster-env)"
cluster-env: $(STAMP)
	@$(PY) -m devcluster.cluster env

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(PY) hack/check-code-shape.py --short-functions operator/slot_operator operator/slot_operator tests bench tools devcluster hack
	$(VENV)/bin/hadolint Dockerfile

test-unit: $(STAMP)
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

test-integration: isolation binaries image-if-buildable
	$(ISOLATED) $(PY) -m pytest tests/integration $(PYTEST_ARGS)

# Lint, build the image, then every test (unit and integration) in one pytest run; the control plane starts inside it.
test: isolation lint binaries image-if-buildable
	$(ISOLATED) $(PY) -m pytest tests $(PYTEST_ARGS)

# OPERATOR=pod runs the operator as the chart's Deployment from the built image (default: a host process).
OPERATOR ?= process
DEMO_IMAGE := $(if $(filter pod,$(OPERATOR)),image)

demo: isolation binaries $(DEMO_IMAGE)
	$(ISOLATED) $(PY) -m tools.demo --operator=$(OPERATOR)

dev: isolation binaries $(DEMO_IMAGE)
	$(ISOLATED) $(PY) -m tools.demo --keep-running --operator=$(OPERATOR)

# BENCH_ARGS: e.g. --slots 200 --cap 20 --idle-slots 0 --json (see python -m bench --help)
BENCH_ARGS ?=
bench: isolation binaries
	$(ISOLATED) $(PY) -m bench $(BENCH_ARGS)

# Claims may hold files of subordinate ids, which only the user namespace can remove.
clean: cluster-down
	$(ISOLATED) rm -rf .cluster dist
