"""The types of conftest.py's factory fixtures, for the tests' annotations (a conftest is never imported)."""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Callable

from tests.integration.operator_process import OperatorProcess

ClaimFactory = Callable[..., pathlib.Path]  # claim(name, *, access_modes=..., prepare=...) -> its directory, Bound
OperatorFactory = Callable[..., OperatorProcess]  # operator(*flags, namespaces=...) -> the operator, started
WorkerFactory = Callable[..., object]  # worker_pod(name, *, claim=..., node=..., labels=...): a pod holding the claim
ValidSlotFactory = Callable[..., OperatorProcess]  # valid_slot(*flags, **spec) -> the operator; Slot s created


@dataclasses.dataclass(frozen=True)
class Tenant:
    """A namespace and a `claim` factory for it (the `other_tenant` fixture: another tenant's)."""

    namespace: str
    claim: ClaimFactory
