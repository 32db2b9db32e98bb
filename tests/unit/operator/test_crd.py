"""The CRDs document themselves: `kubectl explain slot.spec`, `kubectl explain sic.spec` (and .status) describe
every field.

The live counterparts (kubectl explain and the CEL rules against the API server) are in
tests/integration/test_spec_validation.py and tests/integration/test_image_check_crd.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests import repo

CRDS = repo.ROOT / "crds"
SCHEMAS = {
    path.name: yaml.safe_load(path.read_text())["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path in sorted(CRDS.glob("*.yaml"))
}


def fields(schema: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, schema
    for name, child in (schema.get("properties") or {}).items():
        yield from fields(child, f"{path}.{name}")
    if "items" in schema:
        yield from fields(schema["items"], f"{path}[]")


def _all(part: str) -> dict[str, dict[str, Any]]:
    """`crd file: field path` -> its schema, for every field of `spec` or `status` of every CRD."""
    return {f"{crd}: {path}": schema for crd, root in SCHEMAS.items()
            for path, schema in fields(root["properties"][part], part)}  # fmt: skip


SPEC_FIELDS = _all("spec")
STATUS_FIELDS = _all("status")


def test_both_crds_are_read() -> None:
    assert set(SCHEMAS) == {"slots.woved.dev.yaml", "slotimagechecks.woved.dev.yaml"}


@pytest.mark.parametrize("path", [p for p, s in {**SPEC_FIELDS, **STATUS_FIELDS}.items() if "type" in s])
def test_every_field_has_a_description(path: str) -> None:
    schema = {**SPEC_FIELDS, **STATUS_FIELDS}[path]
    if path.endswith("[]"):  # an array's items are described by the array
        return
    assert schema.get("description", "").strip(), f"{path} has no description for kubectl explain"


@pytest.mark.parametrize("path", list(SPEC_FIELDS))
def test_defaults_and_bounds_are_in_the_description(path: str) -> None:
    schema = SPEC_FIELDS[path]
    text = " ".join(schema.get("description", "").split())
    if "default" in schema:
        assert f"Default {str(schema['default']).lower()}" in text, path
    if "minimum" in schema:
        assert f"{schema['minimum']} to {schema['maximum']}" in text, path
    for bound in ("maxLength", "maxItems"):
        if bound in schema and not path.endswith("[]") and schema.get("type") != "object":
            assert f"at most {schema[bound]}" in text, (path, bound)
    if "enum" in schema:
        assert all(value in text for value in schema["enum"]), path


def test_optional_fields_with_operator_defaults_say_so() -> None:
    for path, default in {
        "slots.woved.dev.yaml: spec.mountPath": "Default /home/<agent>",
        "slots.woved.dev.yaml: spec.interval": "--default-interval",
        "slots.woved.dev.yaml: spec.timeout": "--default-timeout",
        "slots.woved.dev.yaml: spec.resources": "merged key by key with the defaults",
        "slotimagechecks.woved.dev.yaml: spec.selector": "Absent or empty: every Slot of the namespace",
        "slotimagechecks.woved.dev.yaml: spec.runAsUser": "Absent: each Slot's own spec.runAsUser",
        "slotimagechecks.woved.dev.yaml: spec.runAsGroup": "Absent: each Slot's own spec.runAsGroup",
        "slotimagechecks.woved.dev.yaml: spec.timeout": "Absent: each Slot's own spec.timeout, else the operator's "
        "--default-timeout",
    }.items():
        assert default in " ".join(SPEC_FIELDS[path]["description"].split()), path
