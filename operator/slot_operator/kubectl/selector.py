"""kubectl's `-l` label selector syntax, read into a metav1.LabelSelector (matchLabels, matchExpressions).

`a=b`, `a==b`, `a!=b`, `a in (x,y)`, `a notin (x)`, `a`, `!a`, joined by commas. What a LabelSelector
cannot say (`a>1`, `a<1`) and what is not a label key or value is refused with one line naming it.
"""

from __future__ import annotations

import re
from typing import Any

# A label key: an optional DNS subdomain prefix and '/', then a name of at most 63 characters; a value: at most 63.
_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_KEY = re.compile(rf"([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?{_NAME}")
_VALUE = re.compile(rf"({_NAME})?")
_SET = re.compile(r"(?P<key>\S+)\s+(?P<op>in|notin)\s*\((?P<values>[^()]*)\)")
_EQUALITY = re.compile(r"(?P<key>[^\s=!<>()]+)\s*(?P<op>==|=|!=)\s*(?P<value>[^\s=!<>()]*)")
_ABSENT = re.compile(r"!\s*(?P<key>\S+)")
_PRESENT = re.compile(r"[^\s=!<>(),]+")


def _requirements(text: str) -> list[str]:
    """Split at the commas outside parentheses (`a in (x,y),b` is two requirements)."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth < 0:
            raise ValueError(f"a ')' without its '(' in {text!r}")
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    if depth:
        raise ValueError(f"a '(' without its ')' in {text!r}")
    return [*parts, current]


def _key(key: str) -> str:
    if len(key) > 317 or not _KEY.fullmatch(key):
        raise ValueError(f"{key!r} is not a label key (an optional DNS subdomain prefix and '/', then a name)")
    return key


def _value(value: str) -> str:
    if not _VALUE.fullmatch(value):
        raise ValueError(f"{value!r} is not a label value (at most 63 letters, digits, '-', '_', '.')")
    return value


def parse(text: str) -> dict[str, Any]:
    """The LabelSelector `text` means ({} for an empty one: everything); ValueError saying what is wrong."""
    labels: dict[str, str] = {}
    expressions: list[dict[str, Any]] = []
    if not text.strip():
        return {}
    for raw in _requirements(text):
        part = raw.strip()
        if not part:
            raise ValueError(f"an empty requirement in {text!r}")
        if any(op in part for op in ("<", ">")) and not _SET.fullmatch(part):
            raise ValueError(f"{part!r}: a LabelSelector has no greater-than or less-than")
        if match := _SET.fullmatch(part):
            values = [_value(v.strip()) for v in match["values"].split(",")]
            operator = "In" if match["op"] == "in" else "NotIn"
            if values == [""]:
                raise ValueError(f"{part!r}: {match['op']} needs at least one value")
            expressions.append({"key": _key(match["key"]), "operator": operator, "values": values})
        elif match := _EQUALITY.fullmatch(part):
            key, value = _key(match["key"]), _value(match["value"])
            if match["op"] == "!=":
                expressions.append({"key": key, "operator": "NotIn", "values": [value]})
            elif labels.get(key, value) == value:
                labels[key] = value
            else:  # a second value for the same key: both must hold, as the API server reads it
                expressions.append({"key": key, "operator": "In", "values": [value]})
        elif match := _ABSENT.fullmatch(part):
            expressions.append({"key": _key(match["key"]), "operator": "DoesNotExist"})
        elif _PRESENT.fullmatch(part):
            expressions.append({"key": _key(part), "operator": "Exists"})
        else:
            raise ValueError(f"cannot read {part!r} (expected key=value, key!=value, key in (a,b), key notin (a), "
                             "key or !key)")  # fmt: skip
    selector: dict[str, Any] = {}
    if labels:
        selector["matchLabels"] = labels
    if expressions:
        selector["matchExpressions"] = expressions
    return selector
