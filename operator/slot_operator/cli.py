"""The `slot-operator` console script (also `python -m slot_operator`).

`slot-operator [flags]` runs the operator. `slot-operator audit ...` and `slot-operator
migrate-ownership ...` are the commands its own image runs in pods on a slot's volume
(volume/): they start in a fraction of the operator's import time, since every probe pod
runs the audit.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["audit"]:
        from slot_operator.volume import audit

        return audit.main(args[1:])
    if args[:1] == ["migrate-ownership"]:
        from slot_operator.volume import migrate

        return migrate.main(args[1:])
    from slot_operator import operate

    return operate.main(args)
