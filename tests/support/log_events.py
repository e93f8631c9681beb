"""The log event names the package emits, read from its source (``log.<level>("name", ...)``)."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

LEVELS = {"debug", "info", "warning", "error", "exception", "critical", "msg"}
NAME = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_{}*|]+)+$")


def _name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):  # f"run.{state}" -> "run.*"
        parts = [v.value if isinstance(v, ast.Constant) else "*" for v in node.values]
        return "".join(str(p) for p in parts)
    return None


def emitted_events(package: Path) -> Iterator[tuple[str, str]]:
    """``(event name, "file:line")`` for every structlog call with a literal event name."""
    for path in sorted(package.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            # log.info("x", ...) or (log.error if bad else log.warning)("x", ...)
            funcs = [node.func.body, node.func.orelse] if isinstance(node.func, ast.IfExp) else [node.func]
            if not all(isinstance(f, ast.Attribute) and f.attr in LEVELS for f in funcs):
                continue
            targets = [f.value for f in funcs if isinstance(f, ast.Attribute)]
            bases = [t.attr if isinstance(t, ast.Attribute) else getattr(t, "id", "") for t in targets]
            if not all("log" in b for b in bases):
                continue
            name = _name(node.args[0])
            if name is not None and NAME.match(name):
                yield name, f"{path.relative_to(package.parent)}:{node.lineno}"
