"""hack/check-code-shape.py, which `make lint` runs: it finds what it is there to find."""

from __future__ import annotations

import importlib.util
import pathlib
from types import ModuleType

from tests import repo

ROOT = repo.ROOT


def _checker() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_code_shape", ROOT / "hack" / "check-code-shape.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_it_flags_private_access_and_long_functions(tmp_path: pathlib.Path) -> None:
    code = tmp_path / "code.py"
    body = "\n".join(f"    x = {n}" for n in range(61))
    code.write_text(
        "import os\n"
        "class A:\n"
        "    def own(self):\n        return self._mine, self.__class__, os._exit\n"
        "def other(obj):\n    return obj._theirs\n"
        f"def long():\n{body}\n"
    )
    checker = _checker()
    assert checker.main([str(code)]) == 1
    assert checker.main(["--short-functions", str(tmp_path), str(code)]) == 1
    tree = checker.ast.parse(code.read_text())
    assert [line.split(": ", 1)[1] for line in checker.private_access(code, tree)] == [
        "obj._theirs reaches into another object's private attribute"
    ]
    assert [line.split(": ", 1)[1] for line in checker.long_functions(code, tree)] == [
        "long is 62 lines long (at most 60)"
    ]


def test_the_repository_passes() -> None:
    checker = _checker()
    assert checker.main(["--short-functions", str(ROOT / "operator" / "slot_operator"), str(ROOT / "operator")]) == 0
