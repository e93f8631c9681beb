"""Every log event the package emits is listed in docs/LOG_EVENTS.md (stable names)."""

from __future__ import annotations

import re
from fnmatch import fnmatchcase
from pathlib import Path

from tests.support.log_events import emitted_events

ROOT = Path(__file__).resolve().parents[2]


def documented() -> set[str]:
    names: set[str] = set()
    for line in (ROOT / "docs" / "LOG_EVENTS.md").read_text().splitlines():
        if line.startswith("| `"):
            names.update(re.findall(r"`([a-z][a-z0-9_.]+)`", line.split("|")[1]))
    return names


def test_every_emitted_event_is_documented() -> None:
    docs = documented()
    missing = []
    for name, where in emitted_events(ROOT / "daemon"):
        pattern = re.sub(r"\{[^}]*\}", "*", name)
        if not any(fnmatchcase(d, pattern) for d in docs):
            missing.append(f"{name} ({where})")
    assert not missing, "add to docs/LOG_EVENTS.md: " + ", ".join(sorted(set(missing)))


def test_the_scan_sees_the_main_events() -> None:
    # The test above is only as good as the scan: it must find the events everyone alerts on.
    found = {name for name, _ in emitted_events(ROOT / "daemon")}
    assert {"run.started", "alert.raised", "export.finished", "registry.registered"} <= found
