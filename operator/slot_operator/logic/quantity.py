"""Kubernetes resource quantities (`500m`, `256Mi`, `1e3`, `2`), read exactly enough to compare them."""

from __future__ import annotations

import decimal
import re

_SUFFIXES: dict[str, decimal.Decimal | int] = {
    "": 1,
    "m": decimal.Decimal("0.001"),
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}
_QUANTITY = re.compile(r"(?P<number>[+-]?(?:\d+\.?\d*|\.\d+))(?P<suffix>[eE][+-]?\d+|[a-zA-Z]*)")


def parse(text: object) -> decimal.Decimal:
    """The value of a quantity; ValueError naming the text when it is not one."""
    match = _QUANTITY.fullmatch(str(text).strip())
    if match is None:
        raise ValueError(f"{text!r} is not a Kubernetes quantity")
    number, suffix = decimal.Decimal(match.group("number")), match.group("suffix")
    if suffix[:1] in ("e", "E"):
        return number.scaleb(int(suffix[1:]))
    if suffix not in _SUFFIXES:
        raise ValueError(f"{text!r} is not a Kubernetes quantity (unknown suffix {suffix!r})")
    return number * _SUFFIXES[suffix]
