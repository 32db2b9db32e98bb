# syntax=docker/dockerfile:1
#
# slot-operator container image. `make image` builds it (docker, else buildah) and
# writes localhost/slot-operator:dev plus an OCI archive under dist/; by hand:
#
#   docker build -t slot-operator:dev \
#     --build-arg VERSION=0.1.0 --build-arg REVISION="$(git rev-parse HEAD)" .
#
# The base image is pinned to a Python patch release. Release pipelines should
# additionally pin its digest (python:3.11.14-slim-bookworm@sha256:...) and let a
# bot (Renovate/Dependabot) bump both. BASE_IMAGE exists for builds that cannot
# reach that registry: `make image` then passes a stand-in of the same Debian
# release and Python minor, bootstrapped from Debian's packages, and says so.
# Runtime dependencies come from requirements.lock, the wheel-building backend
# from requirements-build.lock: exact pins with hashes (hack/lock-requirements.py).

ARG BASE_IMAGE=python:3.11.14-slim-bookworm

FROM ${BASE_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# --- builder: the runtime venv (no installer in it), filled by a throwaway pip ---
FROM base AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_NO_INPUT=1
WORKDIR /src

# /opt/build holds pip and the build backend; it is never copied into the final image.
# The optional ca-bundle secret is the build host's CA bundle, for networks whose TLS
# proxy the base's own bundle does not trust (`make image` passes the host's; secrets
# never reach a layer).
COPY requirements-build.lock /tmp/requirements-build.lock
RUN --mount=type=secret,id=ca-bundle,required=false \
    if [ -s /run/secrets/ca-bundle ]; then export PIP_CERT=/run/secrets/ca-bundle; fi \
 && python -m venv /opt/build \
 && /opt/build/bin/pip install --require-hashes --no-deps --only-binary=:all: -r /tmp/requirements-build.lock

# /opt/venv gets no pip of its own: the build venv's pip installs into it (--python).
# Dependencies first (they change rarely: a cached layer). --require-hashes: only the
# locked files; --only-binary: no sdist is ever compiled, so no compiler is needed in
# any stage; --no-deps: the lock is the complete closure (pip check below proves it).
RUN python -m venv --without-pip /opt/venv
COPY requirements.lock /tmp/requirements.lock
RUN --mount=type=secret,id=ca-bundle,required=false \
    if [ -s /run/secrets/ca-bundle ]; then export PIP_CERT=/run/secrets/ca-bundle; fi \
 && /opt/build/bin/pip --python /opt/venv/bin/python install \
      --require-hashes --no-deps --only-binary=:all: -r /tmp/requirements.lock

# The package itself (README.md is deliberately not copied: the wheel does not need it).
# Bytecode is compiled here with unchecked hashes: valid whatever the files' mtimes,
# never rewritten, so a read-only root filesystem costs no start-up time.
COPY pyproject.toml ./
COPY operator ./operator
RUN /opt/build/bin/pip wheel --no-build-isolation --no-deps --wheel-dir /tmp/wheels . \
 && /opt/build/bin/pip --python /opt/venv/bin/python install --no-deps /tmp/wheels/slot_operator-*.whl \
 && /opt/build/bin/pip --python /opt/venv/bin/python check \
 && /opt/venv/bin/python -m compileall -q -j 0 --invalidation-mode unchecked-hash /opt/venv/lib

# --- runtime ------------------------------------------------------------------
FROM base AS runtime
# The final image holds only what runs: the installers the base ships (pip,
# setuptools, wheel, ensurepip and its bundled wheels; Debian's python-wheels in a
# stand-in base) go, and the standard library gets its bytecode where the base
# left none (the python images strip it), so nothing is compiled at start-up.
#
# uid/gid 10001 is an invariant, do not change it. The agent images pin uid/gid
# 10001 and the Slot API defaults probes to it; the operator runs as the same ids
# so that PodSecurity/admission policies written for "10001" cover both, and the
# chart's runAsUser/runAsGroup, any file or volume it may ever touch and this
# image agree. A numeric USER also lets kubelet verify runAsNonRoot. The passwd
# entry exists because getpass/pwd lookups (kopf's peer identity) need one.
RUN site="$(python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')" \
 && stdlib="$(python -c 'import sysconfig; print(sysconfig.get_path("stdlib"))')" \
 && rm -rf "${site}"/pip "${site}"/pip-* "${site}"/setuptools "${site}"/setuptools-* "${site}"/pkg_resources \
      "${site}"/_distutils_hack "${site}"/distutils-precedence.pth "${site}"/wheel "${site}"/wheel-* \
      "${stdlib}"/ensurepip /usr/share/python-wheels /usr/local/bin/pip /usr/local/bin/pip3* /usr/local/bin/wheel \
 && python -m compileall -q -j 0 "${stdlib}" \
 && groupadd --gid 10001 slot-operator \
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

# Labels last: a new commit changes only this metadata step, every layer stays cached.
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=1970-01-01T00:00:00Z
ARG SOURCE=""
ARG BASE_IMAGE
LABEL org.opencontainers.image.title="slot-operator" \
      org.opencontainers.image.description="Kubernetes operator that smoke-tests coding-agent slot volumes against their image and records a verdict per Slot." \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.base.name="${BASE_IMAGE}"
