# slot-operator: `make demo` runs the operator on a local control plane; `make test` runs every check.
# Each target sets up what it needs (virtualenv, Go-built Kubernetes binaries cached in ~/.cache).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Exact pins with hashes (hack/lock-requirements.py, `make lock`): the runtime closure the image ships, what the
# tests and linters add to it, and the wheel-building backend.
LOCKS := requirements.lock requirements-dev.lock requirements-build.lock
LOCKED := $(VENV)/.locked
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# The Go-built binaries (devcluster/build.py) each target needs, in the order it needs them.
CLUSTER_BINARIES := etcd kube-apiserver kube-controller-manager
TEST_BINARIES := $(CLUSTER_BINARIES) helm promtool gitopscheck
# Standard library only: it needs no virtualenv, so a first `make demo` makes both at once.
BUILD := $(PYTHON) -m devcluster.build
# The first line of `make demo` and `make test`: what a first run costs on a fresh machine, and what this one will
# (devcluster/build.py). Standard library only, so it runs before the virtualenv exists.
NOTICE := $(PYTHON) -m devcluster.build $(if $(wildcard $(STAMP)),,--venv-missing) --notice
# The local cluster's containers switch uid and mount volumes, and claims hold files of other uids: as root
# this runs the command directly, otherwise as root of a user namespace on the invoking user's subordinate
# ids (devcluster/isolation.py). `isolation` is the preflight: it stops at once, before anything is built,
# naming what is missing. Standard library only, so the system Python runs both. A cluster already running in
# .cluster/ is joined in its namespace, so tests may look at its containers' processes.
ISOLATED := $(PYTHON) -m devcluster.isolation run --join-cluster .cluster --

.PHONY: all demo-notice test-notice venv lock binaries built image image-if-buildable isolation cluster-up cluster-down cluster-env lint test test-unit test-integration demo dev bench clean

all: test

# The virtualenv holds exactly the locked files, checked against their hashes (binary wheels only: nothing is
# compiled), so the tests run what the image ships. A changed lock makes it anew: nothing stale survives.
$(LOCKED): $(LOCKS)
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	@echo "$(PY) -m pip install --require-hashes --only-binary=:all: $(addprefix -r ,$(LOCKS))"
	@$(PY) -m pip install --quiet --disable-pip-version-check --require-hashes --only-binary=:all: $(addprefix -r ,$(LOCKS)) || { \
	  echo "make: pip could not install the locks with $$($(PY) -V) on $$(uname -m); they cover" \
	    "$$(sed -n 's/^# Hashes cover //p' requirements.lock)" >&2; exit 1; }
	@touch $@

# The package itself, editable, built by the locked backend: no index, no dependency resolution.
$(STAMP): $(LOCKED) pyproject.toml
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation --no-index -e .
	@touch $@

venv: $(STAMP)

# Re-resolve the locks from pyproject.toml's ranges, keeping locked versions they still allow
# (LOCK_ARGS=--upgrade: the newest allowed); the next target then makes the virtualenv from them.
LOCK_ARGS ?=
lock: $(STAMP)
	$(PY) hack/lock-requirements.py $(LOCK_ARGS)

binaries:
	$(BUILD) $(TEST_BINARIES)

# `make built BINARIES="etcd helm"`: build (or reuse) just those.
BINARIES ?=
built:
	$(BUILD) $(BINARIES)

# The operator image: localhost/slot-operator:dev in the local store and dist/slot-operator_dev.oci.tar
# (docker build with a Docker engine, else buildah; see tools/image.py).
image: $(STAMP)
	$(PY) -m tools.image

# As `image`, but an ordinary user with neither buildah nor a Docker engine gets a warning, not a failure
# (the tests that need the image then skip and say why); root installs what is missing.
image-if-buildable: $(STAMP)
	$(PY) -m tools.image --if-buildable

# As root it installs what is missing (util-linux; for the tests also uidmap and passwd: the suite's rootless
# test runs a cluster as a temporary account in a user namespace); otherwise it names what to install.
isolation:
	@$(PYTHON) -m devcluster.isolation check $(if $(filter all test test-integration,$(or $(MAKECMDGOALS),all)),--for-tests)

cluster-up: isolation $(STAMP)
	$(BUILD) $(CLUSTER_BINARIES)
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
	$(PY) hack/check-code-shape.py --short-functions operator/slot_operator tests bench tools devcluster hack
	$(VENV)/bin/hadolint Dockerfile

# The unit tests render the chart (helm) and check its alert rules (promtool).
test-unit: $(STAMP)
	$(BUILD) helm promtool
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

test-integration: isolation $(STAMP) image-if-buildable
	$(BUILD) $(TEST_BINARIES)
	$(ISOLATED) $(PY) -m pytest tests/integration $(PYTEST_ARGS)

test-notice:
	@$(NOTICE) "make test" --then 720 $(TEST_BINARIES)

# Lint, build the image, then every test (unit and integration) in one pytest run; the control plane starts inside it.
test: test-notice isolation lint image-if-buildable
	$(BUILD) $(TEST_BINARIES)
	$(ISOLATED) $(PY) -m pytest tests $(PYTEST_ARGS)

# OPERATOR=pod runs the operator as the chart's Deployment from the built image (default: a host process).
OPERATOR ?= process
DEMO_IMAGE := $(if $(filter pod,$(OPERATOR)),image)
DEMO_BINARIES := $(CLUSTER_BINARIES) $(if $(filter pod,$(OPERATOR)),helm)

demo-notice:
	@$(NOTICE) "make $(or $(filter dev,$(MAKECMDGOALS)),demo)" --then 45 $(DEMO_BINARIES)

# The virtualenv (mostly downloads) and the Go build (compiles) at once: a first run is shorter by the former.
demo: demo-notice isolation $(DEMO_IMAGE)
	@$(MAKE) --no-print-directory -j2 venv built BINARIES="$(DEMO_BINARIES)"
	$(ISOLATED) $(PY) -m tools.demo --operator=$(OPERATOR)

dev: demo-notice isolation $(DEMO_IMAGE)
	@$(MAKE) --no-print-directory -j2 venv built BINARIES="$(DEMO_BINARIES)"
	$(ISOLATED) $(PY) -m tools.demo --keep-running --operator=$(OPERATOR)

# BENCH_ARGS: e.g. --slots 200 --cap 20 --idle-slots 0 --check-beside --json (see python -m bench --help)
BENCH_ARGS ?=
bench: isolation $(STAMP)
	$(BUILD) $(CLUSTER_BINARIES)
	$(ISOLATED) $(PY) -m bench $(BENCH_ARGS)

# Claims may hold files of subordinate ids, which only the user namespace can remove.
clean: cluster-down
	$(ISOLATED) rm -rf .cluster dist
