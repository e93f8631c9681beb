"""The design document's Python blocks, with only their ``from app...`` import lines mapped.

``IMPORTS`` is the fixed table (the README's "The design document's API" shows the same):
each document module maps to ``daemon.api``, which re-exports the names from where they live.
``PLACEHOLDERS`` holds the one literal the document leaves to its reader that a test cannot
provide at its own path: ``/path/to/model.pt`` ("your checkpoint"); it becomes a file in the
block's directory.
"""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "data" / "TRAINING_PIPELINE_OPTIMIZATIONS.md"

IMPORTS = {
    "app.training.export_cache": "daemon.api",
    "app.training.dynamic_export": "daemon.api",
    "app.training.curriculum_feedback": "daemon.api",
    "app.training.training_triggers": "daemon.api",
    "app.coordination.distributed_lock": "daemon.api",
    "app.training.training_health": "daemon.api",
    "app.training.training_registry": "daemon.api",
    "app.training.model_registry": "daemon.api",
    "app.training.optimized_pipeline": "daemon.api",
}
PLACEHOLDERS = {"/path/to/model.pt": "model.pt"}

_FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
_IMPORT = re.compile(r"^from (app(?:\.\w+)+) import (.+)$")


def blocks(text: str | None = None) -> dict[str, str]:
    """``{"Section/Subsection": code}`` for every Python block, in document order."""
    text = DOC.read_text() if text is None else text
    out: dict[str, str] = {}
    section = sub = ""
    pos = 0
    for m in _FENCE.finditer(text):
        for line in text[pos : m.start()].splitlines():
            if line.startswith("## "):
                section, sub = line[3:].strip(), ""
            elif line.startswith("### "):
                sub = line[4:].strip()
        pos = m.end()
        key = f"{section}/{sub}" if sub else section
        if key in out:
            raise ValueError(f"two Python blocks under {key!r}: name them apart")
        out[key] = m.group(1)
    return out


def translate(code: str) -> str:
    """Map the ``from app...`` lines through ``IMPORTS`` (anything else of ``app`` is an error)."""
    lines = []
    for line in code.splitlines():
        m = _IMPORT.match(line)
        if m is not None:
            if m.group(1) not in IMPORTS:
                raise KeyError(f"no mapping for the document's module {m.group(1)}")
            line = f"from {IMPORTS[m.group(1)]} import {m.group(2)}"
        elif re.match(r"^\s*(import|from)\s+app\b", line):
            raise ValueError(f"an import of app this table cannot map: {line!r}")
        lines.append(line)
    out = "\n".join(lines) + "\n"
    for literal, replacement in PLACEHOLDERS.items():
        out = out.replace(literal, replacement)
    return out
