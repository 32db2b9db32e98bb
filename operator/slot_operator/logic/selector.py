"""A metav1.LabelSelector applied to labels, as the API server applies it (a SlotImageCheck's spec.selector).

An absent or empty selector selects everything; each matchLabels entry and each matchExpressions
requirement must hold. The CRD's schema and CEL rules refuse malformed selectors at admission;
`matches` raises ValueError on what they cannot have let through (an unknown operator).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def _holds(requirement: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    key, operator = str(requirement.get("key")), requirement.get("operator")
    values = {str(value) for value in requirement.get("values") or ()}
    if operator == "In":
        return key in labels and labels[key] in values
    if operator == "NotIn":
        return key not in labels or labels[key] not in values
    if operator == "Exists":
        return key in labels
    if operator == "DoesNotExist":
        return key not in labels
    raise ValueError(f"spec.selector: {operator!r} is not a label selector operator")


def matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str] | None) -> bool:
    labels = labels or {}
    selector = selector or {}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(str(key)) != str(value):
            return False
    return all(_holds(requirement, labels) for requirement in selector.get("matchExpressions") or ())
