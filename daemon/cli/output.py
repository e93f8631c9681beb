"""The one place the CLI prints: results as text or one JSON object, errors as one line.

Every command prints errors the same way: ``error: <message>`` on stderr and, with
``--json``, ``{"error": "<message>", ...}`` on stdout, so scripts read one object.
"""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO


def print_json(obj: Any, stream: TextIO | None = None) -> None:
    print(json.dumps(obj, default=str), file=stream or sys.stdout)


def print_error(message: str, as_json: bool, stream: TextIO | None = None, **extra: Any) -> None:
    """One line on stderr; with ``--json`` also ``{"error": message, **extra}`` on stdout."""
    one_line = " ".join(message.split())
    print(f"error: {one_line}", file=sys.stderr)
    if as_json:
        print_json({"error": one_line, **extra}, stream)


def not_enabled(config: str, enabled: tuple[str, ...]) -> str | None:
    """The error for a command asked about a config the settings do not enable, or None."""
    if config in enabled:
        return None
    shown = ", ".join(enabled) or "none"
    return f"{config} is not enabled in the settings (enabled: {shown}); add it to configs:"
