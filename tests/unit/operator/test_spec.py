"""Slot spec parsing and defaulting (logic/spec.py)."""

from __future__ import annotations

import dataclasses
import datetime
import re
from typing import Any

import pytest
from slot_operator.logic.spec import (
    SCHEDULE_FIELDS,
    SYSTEM_PATHS,
    VERDICT_FIELDS,
    InvalidSpec,
    SlotSpec,
    parse_spec,
    pull_policy,
    verdict_fingerprint,
)

from tests import repo
from tests.slot_spec_fields import OTHER, SPEC_FIELDS
from tests.spec_cases import ACCEPTED, REJECTED

ROOT = repo.ROOT

INTERVAL = datetime.timedelta(hours=6)
TIMEOUT = datetime.timedelta(minutes=2)
_DROP = object()  # a field left out of the spec


def _parse(**fields: Any) -> SlotSpec:
    spec: dict[str, Any] = {"agent": "codex", "claimName": "codex-1-home", "image": "ghcr.io/example/agent:1"}
    spec.update(fields)
    spec = {key: value for key, value in spec.items() if value is not _DROP}
    return parse_spec(spec, default_interval=INTERVAL, default_timeout=TIMEOUT)


def test_minimal_spec_gets_every_default() -> None:
    spec = _parse()
    assert spec == SlotSpec(
        agent="codex",
        claim_name="codex-1-home",
        image="ghcr.io/example/agent:1",
        mount_path="/home/codex",
        run_as_user=10001,
        run_as_group=10001,
        interval=INTERVAL,
        timeout=TIMEOUT,
        suspend=False,
        image_pull_policy=None,
        image_pull_secrets=(),
        env=(),
        resources={},
        node_selector={},
        tolerations=(),
    )


def test_mount_path_defaults_per_agent() -> None:
    assert _parse(agent="claude").mount_path == "/home/claude"
    assert _parse(agent="codex").mount_path == "/home/codex"


def test_explicit_fields_are_used() -> None:
    spec = _parse(
        agent="claude",
        mountPath="/data/home",
        runAsUser=1000,
        runAsGroup=1001,
        interval="30m",
        timeout="90s",
        suspend=True,
        imagePullPolicy="Always",
        imagePullSecrets=[{"name": "regcred"}],
        env=[{"name": "HTTPS_PROXY", "value": "http://proxy:3128"}],
        resources={"limits": {"memory": "64Mi"}},
        nodeSelector={"pool": "agents"},
        tolerations=[{"key": "agents", "operator": "Exists"}],
    )
    assert spec.mount_path == "/data/home"
    assert (spec.run_as_user, spec.run_as_group) == (1000, 1001)
    assert spec.interval == datetime.timedelta(minutes=30)
    assert spec.timeout == datetime.timedelta(seconds=90)
    assert spec.suspend is True
    assert spec.image_pull_policy == "Always"
    assert spec.image_pull_secrets == ({"name": "regcred"},)
    assert spec.env == ({"name": "HTTPS_PROXY", "value": "http://proxy:3128"},)
    assert spec.resources == {"limits": {"memory": "64Mi"}}
    assert spec.node_selector == {"pool": "agents"}
    assert spec.tolerations == ({"key": "agents", "operator": "Exists"},)


def test_null_optional_lists_are_empty() -> None:
    spec = _parse(env=None, imagePullSecrets=None, tolerations=None, resources=None, nodeSelector=None)
    assert (spec.env, spec.image_pull_secrets, spec.tolerations) == ((), (), ())
    assert (spec.resources, spec.node_selector) == ({}, {})


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"agent": "gemini"}, "spec.agent"),
        ({"agent": _DROP}, "spec.agent"),
        ({"claimName": _DROP}, "spec.claimName"),
        ({"claimName": ""}, "spec.claimName"),
        ({"claimName": 7}, "spec.claimName"),
        ({"image": _DROP}, "spec.image"),
        ({"image": ""}, "spec.image"),
        ({"mountPath": "home/codex"}, "spec.mountPath"),
        ({"mountPath": "/"}, "spec.mountPath"),
        ({"mountPath": 7}, "spec.mountPath"),
        ({"runAsUser": 0}, "spec.runAsUser"),
        ({"runAsUser": -1}, "spec.runAsUser"),
        ({"runAsUser": "10001"}, "spec.runAsUser"),
        ({"runAsUser": True}, "spec.runAsUser"),
        ({"runAsGroup": 0}, "spec.runAsGroup"),
        ({"interval": "6 hours"}, "spec.interval"),
        ({"interval": "30s"}, "spec.interval"),
        ({"interval": "721h"}, "spec.interval"),
        ({"timeout": "4s"}, "spec.timeout"),
        ({"timeout": "2h"}, "spec.timeout"),
        ({"timeout": "soon"}, "spec.timeout"),
        ({"env": [{"name": "HOME", "value": "/tmp"}]}, "spec.env"),
        ({"env": [{"name": "AGENT_MODE", "value": "agent"}]}, "spec.env"),
        ({"env": [{"name": "WOVED_TASK_AGENT", "value": "claude"}]}, "spec.env"),
    ],
)
def test_invalid_spec_names_the_field(fields: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidSpec) as info:
        _parse(**fields)
    assert str(info.value).startswith(f"{field}:")


def test_invalid_spec_is_a_value_error() -> None:
    assert issubclass(InvalidSpec, ValueError)


def test_range_error_shows_bounds() -> None:
    with pytest.raises(InvalidSpec, match=r"spec\.interval: '30s' is outside 1m\.\.720h"):
        _parse(interval="30s")
    with pytest.raises(InvalidSpec, match=r"spec\.timeout: '2h' is outside 5s\.\.1h"):
        _parse(timeout="2h")


def test_reserved_env_clash_lists_names() -> None:
    with pytest.raises(InvalidSpec, match="AGENT_MODE, HOME"):
        _parse(env=[{"name": "HOME", "value": "/x"}, {"name": "AGENT_MODE", "value": "x"}, {"name": "OK"}])


@pytest.mark.parametrize(("text", "expected"), [("1m", 60), ("720h", 720 * 3600)])
def test_interval_bounds_are_inclusive(text: str, expected: int) -> None:
    assert _parse(interval=text).interval.total_seconds() == expected


@pytest.mark.parametrize(("text", "expected"), [("5s", 5), ("1h", 3600)])
def test_timeout_bounds_are_inclusive(text: str, expected: int) -> None:
    assert _parse(timeout=text).timeout.total_seconds() == expected


def test_spec_is_immutable() -> None:
    spec = _parse()
    with pytest.raises(AttributeError):
        spec.image = "other"  # type: ignore[misc]


@pytest.mark.parametrize(("raw", "message"), list(REJECTED.items()))
def test_mount_path_rejected_in_any_spelling(raw: str, message: str) -> None:
    with pytest.raises(InvalidSpec) as info:
        _parse(mountPath=raw)
    assert str(info.value) == f"spec.mountPath: {message}"


@pytest.mark.parametrize(("raw", "normalised"), list(ACCEPTED.items()))
def test_mount_path_is_normalised(raw: str, normalised: str) -> None:
    spec = _parse(mountPath=raw)
    assert spec.mount_path == normalised


def test_system_paths_are_those_of_the_crd() -> None:
    """The CRD's CEL rule names the same directories (a path below each is refused on both sides)."""
    crd = (ROOT / "crds" / "slots.woved.dev.yaml").read_text()
    for system in SYSTEM_PATHS:
        top = system.split("/")[1]
        assert f"'{top}'" in crd, system
        assert f"{system}/agent" not in ACCEPTED


# --- what a verdict depends on ------------------------------------------------------------------------

# The fingerprint of _parse()'s spec, written down once: a change of how fingerprints are computed re-probes
# every Slot once after an upgrade, so it must be a decision, not an accident.
FINGERPRINT_OF_THE_MINIMAL_SPEC = "8d6794603b0c11ef"


def test_every_spec_field_is_a_verdict_field_or_a_schedule_field() -> None:
    """A new CRD spec field fails here until someone decides whether a verdict depends on it."""
    assert not set(VERDICT_FIELDS) & set(SCHEDULE_FIELDS)
    assert set(SPEC_FIELDS) == set(VERDICT_FIELDS) | set(SCHEDULE_FIELDS)
    assert set(OTHER) == set(SPEC_FIELDS)
    assert {f.name for f in dataclasses.fields(SlotSpec)} == {
        "".join(f"_{c.lower()}" if c.isupper() else c for c in field) for field in SPEC_FIELDS
    }


@pytest.mark.parametrize("field", VERDICT_FIELDS)
def test_a_verdict_field_changes_the_fingerprint(field: str) -> None:
    assert verdict_fingerprint(_parse(**{field: OTHER[field]})) != verdict_fingerprint(_parse())


@pytest.mark.parametrize("field", SCHEDULE_FIELDS)
def test_a_schedule_field_leaves_the_fingerprint(field: str) -> None:
    assert verdict_fingerprint(_parse(**{field: OTHER[field]})) == verdict_fingerprint(_parse())


def test_a_default_written_out_leaves_the_fingerprint() -> None:
    written = _parse(
        mountPath="//home/./codex/",
        runAsUser=10001,
        runAsGroup=10001,
        imagePullPolicy="IfNotPresent",
        imagePullSecrets=[],
        env=None,
        resources={"requests": {"cpu": "10m"}, "limits": {"memory": "256Mi"}},
        nodeSelector={},
        tolerations=[],
    )
    assert verdict_fingerprint(written) == verdict_fingerprint(_parse())


def test_the_fingerprint_is_stable_and_ignores_key_order() -> None:
    env = [{"name": "A", "value": "1"}]
    first = _parse(env=env, nodeSelector={"a": "1", "b": "2"})
    assert verdict_fingerprint(first) == verdict_fingerprint(_parse(env=env, nodeSelector={"b": "2", "a": "1"}))
    # Recorded in status and compared by later operator versions: the digest of a spec must not drift.
    assert verdict_fingerprint(_parse()) == FINGERPRINT_OF_THE_MINIMAL_SPEC
    assert re.fullmatch(r"[0-9a-f]{16}", FINGERPRINT_OF_THE_MINIMAL_SPEC)


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ("ghcr.io/example/agent:1", "IfNotPresent"),
        ("ghcr.io/example/agent", "Always"),
        ("ghcr.io/example/agent:latest", "Always"),
        ("registry:5000/agent", "Always"),
        ("registry:5000/agent:2", "IfNotPresent"),
        (f"ghcr.io/example/agent@sha256:{'a' * 64}", "IfNotPresent"),
        (f"ghcr.io/example/agent:latest@sha256:{'a' * 64}", "Always"),
    ],
)
def test_the_pull_policy_is_kubernetes_default_unless_named(image: str, expected: str) -> None:
    assert pull_policy(image, None) == expected
    assert pull_policy(image, "Never") == "Never"
