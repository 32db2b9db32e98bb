"""The Slot CRD documents itself: `kubectl explain slot.spec` (and slot.status) describes every field.

The live counterpart (kubectl explain against the API server) is in tests/integration/test_spec_validation.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

CRD = Path(__file__).resolve().parents[2] / "crds" / "slots.woved.dev.yaml"
SCHEMA = yaml.safe_load(CRD.read_text())["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def fields(schema: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, schema
    for name, child in (schema.get("properties") or {}).items():
        yield from fields(child, f"{path}.{name}")
    if "items" in schema:
        yield from fields(schema["items"], f"{path}[]")


SPEC_FIELDS = dict(fields(SCHEMA["properties"]["spec"], "spec"))
STATUS_FIELDS = dict(fields(SCHEMA["properties"]["status"], "status"))


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
        "spec.mountPath": "Default /home/<agent>",
        "spec.interval": "--default-interval",
        "spec.timeout": "--default-timeout",
        "spec.resources": "merged key by key with the defaults",
    }.items():
        assert default in " ".join(SPEC_FIELDS[path]["description"].split()), path
