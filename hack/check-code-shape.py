#!/usr/bin/env python3
"""Two rules `make lint` holds the code to, beyond ruff and mypy.

- No code reaches into another object's private attributes (`other._name`): `self._x` and `cls._x`
  (an object's own) and dunders are fine; anything else is another object's or module's private
  state, to be named publicly instead.
- In the operator's package (`--short-functions`), no function is longer than 60 lines.

Usage: hack/check-code-shape.py [--short-functions DIR]... PATH...   (directories are searched for *.py)
"""

from __future__ import annotations

import argparse
import ast
import pathlib
import sys

MAX_FUNCTION_LINES = 60
# Public functions of the standard library whose names start with an underscore.
_PUBLIC = frozenset({"os._exit", "sys._getframe"})


def _files(roots: list[str]) -> list[pathlib.Path]:
    paths = [pathlib.Path(root) for root in roots]
    return [file for path in paths for file in (sorted(path.rglob("*.py")) if path.is_dir() else [path])]


def private_access(path: pathlib.Path, tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        name = node.attr
        if not name.startswith("_") or (name.startswith("__") and name.endswith("__")):
            continue
        if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
            continue
        if ast.unparse(node) in _PUBLIC:
            continue
        found.append(f"{path}:{node.lineno}: {ast.unparse(node)} reaches into another object's private attribute")
    return found


def long_functions(path: pathlib.Path, tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            lines = (node.end_lineno or node.lineno) - node.lineno + 1
            if lines > MAX_FUNCTION_LINES:
                found.append(f"{path}:{node.lineno}: {node.name} is {lines} lines long (at most {MAX_FUNCTION_LINES})")
    return found


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--short-functions", action="append", default=[], metavar="DIR")
    parser.add_argument("paths", nargs="+")
    args = parser.parse_args(argv)
    short = {file.resolve() for file in _files(args.short_functions)}
    files = _files(args.paths)
    found = []
    for path in files:
        tree = ast.parse(path.read_text(), filename=str(path))
        found += private_access(path, tree)
        if path.resolve() in short:
            found += long_functions(path, tree)
    print("\n".join(found) or f"{len(files)} files: no private access, no long function")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
