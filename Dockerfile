# syntax=docker/dockerfile:1
#
# slot-operator container image.
#
#   docker build -t slot-operator:dev \
#     --build-arg VERSION=0.1.0 --build-arg REVISION="$(git rev-parse HEAD)" .
#
# The base image is pinned to a Python patch release. Release pipelines should
# additionally pin its digest (python:3.11.14-slim-bookworm@sha256:...) and let a
# bot (Renovate/Dependabot) bump both.
# Runtime dependencies come from requirements.lock (exact pins, regenerate with
# hack/lock-requirements.py); the wheel-building backend from requirements-build.lock.

FROM python:3.11.14-slim-bookworm AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_NO_INPUT=1

# --- builder: the venv with pinned binary wheels, plus our own wheel ----------
FROM base AS builder
WORKDIR /src

# Throwaway venv holding the build backend; it is not copied into the final image.
COPY requirements-build.lock /tmp/requirements-build.lock
RUN python -m venv /opt/build \
 && /opt/build/bin/pip install --no-cache-dir --only-binary=:all: -r /tmp/requirements-build.lock

# Dependencies first (changes rarely, cached layer). --only-binary: no sdist is
# ever compiled, so no compiler is needed in any stage; --no-deps: the lock is
# the complete closure (pip check below proves it).
RUN python -m venv /opt/venv
COPY requirements.lock /tmp/requirements.lock
RUN /opt/venv/bin/pip install --no-cache-dir --no-deps --only-binary=:all: -r /tmp/requirements.lock

# The package itself (README.md is deliberately not copied: the wheel does not need it).
COPY pyproject.toml ./
COPY operator ./operator
RUN /opt/build/bin/pip wheel --no-cache-dir --no-build-isolation --no-deps --wheel-dir /tmp/wheels . \
 && /opt/venv/bin/pip install --no-cache-dir --no-deps /tmp/wheels/slot_operator-*.whl \
 && /opt/venv/bin/pip check \
 && /opt/venv/bin/python -m compileall -q /opt/venv/lib

# --- runtime ------------------------------------------------------------------
FROM base AS runtime
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=1970-01-01T00:00:00Z
ARG SOURCE=""
LABEL org.opencontainers.image.title="slot-operator" \
      org.opencontainers.image.description="Kubernetes operator that smoke-tests coding-agent slot volumes against their image and records a verdict per Slot." \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11.14-slim-bookworm"

# uid/gid 10001 is an invariant, do not change it. The agent images pin uid/gid
# 10001 and the Slot API defaults probes to it; the operator runs as the same ids
# so that PodSecurity/admission policies written for "10001" cover both, and the
# chart's runAsUser/runAsGroup, any file or volume it may ever touch and this
# image agree. A numeric USER also lets kubelet verify runAsNonRoot. The passwd
# entry exists because getpass/pwd lookups (kopf's peer identity) need one.
RUN groupadd --gid 10001 slot-operator \
 && useradd --no-log-init --uid 10001 --gid 10001 --no-create-home \
      --home-dir /nonexistent --shell /usr/sbin/nologin slot-operator

# Root-owned and read-only for uid 10001; together with PYTHONDONTWRITEBYTECODE
# and the precompiled bytecode nothing is written at runtime, so the container
# runs with readOnlyRootFilesystem (the chart mounts an emptyDir at /tmp only).
COPY --from=builder /opt/venv /opt/venv
ENV PATH="/opt/venv/bin:${PATH}" \
    VIRTUAL_ENV=/opt/venv

USER 10001:10001
# 8080: Prometheus metrics, 8081: kopf health endpoint (/healthz).
EXPOSE 8080 8081
ENTRYPOINT ["slot-operator"]
