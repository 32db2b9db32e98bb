"""The SlotImageCheck status contract (docs/design.md §2.5) as code: what must hold in any status the operator writes.

`problems(check)` lists every rule a SlotImageCheck breaks (empty: it keeps the contract). The hand-written
fixtures are held to it (tests/unit/chart/test_argocd_health.py), and so is every status the operator writes
(tests/unit/operator/test_check_reconcile.py, tests/integration/test_image_check.py).
`schema_problems` checks a value against a CRD's structural schema (types, enums, required, unknown fields,
list map keys): what the API server would refuse or prune.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# results[].phase -> its summary key
SUMMARY_KEYS = {
    "Pending": "pending",
    "Ready": "ready",
    "NeedsInit": "needsInit",
    "NeedsReauth": "needsReauth",
    "ImageBroken": "imageBroken",
    "NoVerdict": "noVerdict",
}
# Would need a human, the worst first: Stalled's reason when the check Failed.
HUMAN = ("ImageBroken", "NeedsReauth", "NeedsInit")
FINAL = ("Succeeded", "Failed", "Error")


def _condition(status: Mapping[str, Any], kind: str) -> dict[str, Any]:
    for entry in status.get("conditions") or ():
        if entry.get("type") == kind:
            return dict(entry)
    return {}


def expected_conditions(status: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
    """The (status, reason) of Ready, Stalled and Reconciling that the contract's table gives this status."""
    phase = status.get("phase")
    if phase not in FINAL:
        reason = str(_condition(status, "Reconciling").get("reason"))
        return {"Ready": ("Unknown", reason), "Stalled": ("False", reason), "Reconciling": ("True", reason)}
    if phase == "Succeeded":
        return {"Ready": ("True", "AllReady"), "Stalled": ("False", "AllReady"), "Reconciling": ("False", "Finished")}
    phases = {str(result.get("phase")) for result in status.get("results") or ()}
    if phase == "Failed":
        reason = next((p for p in HUMAN if p in phases), "?")
    else:
        reason = "NoVerdict" if "NoVerdict" in phases else "NoSlotsSelected"
    return {"Ready": ("False", reason), "Stalled": ("True", reason), "Reconciling": ("False", "Finished")}


def problems(check: Mapping[str, Any]) -> list[str]:
    """Every rule of the contract this SlotImageCheck breaks."""
    generation = int((check.get("metadata") or {}).get("generation") or 1)
    status = check.get("status") or {}
    if int(status.get("observedGeneration") or 0) == 0:
        return [] if set(status) <= {"observedGeneration"} else ["an unobserved check has a status beyond the default"]
    found: list[str] = []
    results = list(status.get("results") or ())
    phases = [str(result.get("phase")) for result in results]
    counts = {key: phases.count(phase) for phase, key in SUMMARY_KEYS.items()}
    summary = {"slots": len(results), **counts, "failed": sum(counts[SUMMARY_KEYS[p]] for p in HUMAN)}
    if status.get("summary") != summary:
        found.append(f"summary {status.get('summary')} does not count results: {summary}")
    if len({result.get("slot") for result in results}) != len(results):
        found.append("a Slot has two results")
    phase = status.get("phase")
    answered = "Pending" not in phases
    if phase == "Succeeded":
        wanted = bool(results) and set(phases) == {"Ready"}
    elif phase == "Failed":
        wanted = answered and any(p in HUMAN for p in phases)
    elif phase == "Error":
        wanted = answered and not any(p in HUMAN for p in phases) and (not results or "NoVerdict" in phases)
    elif phase == "Running":
        wanted = "startTime" in status and not (answered and results)
    else:
        wanted = phase == "Pending" and "startTime" not in status and set(phases) <= {"Pending"}
    if not wanted:
        found.append(f"phase {phase} does not follow from the results {phases}")
    if ("completionTime" in status) is not (phase in FINAL):
        found.append(f"completionTime is set exactly when the check finished (phase {phase})")
    for result in results:
        if result.get("phase") in ("Pending", "NoVerdict") and "exitCode" in result and result.get("exitCode") in (
            0, 64, 65, 66
        ):  # fmt: skip
            found.append(f"{result.get('slot')}: a verdict exit code without a verdict")
        ownership = result.get("ownership") or {}
        if ownership.get("migrationWouldFix") and len(ownership.get("found") or ()) != 1:
            found.append(f"{result.get('slot')}: the migration moves exactly one other owner")
        if ownership.get("found") and not ownership.get("fix"):
            found.append(f"{result.get('slot')}: another owner holds the files, and no fix says what to do")
    for kind, (state, reason) in expected_conditions(status).items():
        condition = _condition(status, kind)
        if (condition.get("status"), condition.get("reason")) != (state, reason):
            found.append(f"{kind} is {condition.get('status')}/{condition.get('reason')}, the contract says "
                         f"{state}/{reason}")  # fmt: skip
        if condition and condition.get("observedGeneration") != generation:
            found.append(f"{kind} does not speak for generation {generation}")
    return found


def schema_problems(value: Any, schema: Mapping[str, Any], path: str = "") -> list[str]:
    """Where `value` breaks a structural schema as the API server reads it (what it would refuse or prune)."""
    kind = schema.get("type")
    found: list[str] = []
    types = {"object": dict, "array": list, "string": str, "boolean": bool, "integer": int}
    if kind in types and (not isinstance(value, types[kind]) or (kind == "integer" and isinstance(value, bool))):
        return [f"{path or '.'}: {value!r} is not {kind}"]
    if "enum" in schema and value not in schema["enum"]:
        found.append(f"{path}: {value!r} is not one of {schema['enum']}")
    if kind == "object":
        properties = schema.get("properties") or {}
        for key in schema.get("required") or ():
            if key not in value:
                found.append(f"{path}.{key}: required")
        for key, item in value.items():
            if key in properties:
                found += schema_problems(item, properties[key], f"{path}.{key}")
            elif "additionalProperties" in schema:
                found += schema_problems(item, schema["additionalProperties"], f"{path}.{key}")
            elif not schema.get("x-kubernetes-preserve-unknown-fields"):
                found.append(f"{path}.{key}: not in the schema (the API server would prune it)")
    if kind == "array":
        for index, item in enumerate(value):
            found += schema_problems(item, schema.get("items") or {}, f"{path}[{index}]")
        keys = schema.get("x-kubernetes-list-map-keys")
        if keys:
            seen = [tuple(item.get(key) for key in keys) for item in value]
            if len(seen) != len(set(seen)):
                found.append(f"{path}: two entries share the map key {keys}")
    return found
