"""`devcluster`, `hack` helpers and `tests.*` import from the repository root however pytest is invoked."""

from __future__ import annotations

import pathlib
import sys

_REPO = str(pathlib.Path(__file__).resolve().parents[1])
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)
