"""The cache-hit check of a fresh process in O(sources): commit fingerprints instead of a re-count.

A fresh ``export`` (the CLI) has no warm snapshot; taking one reads every ``games`` row. The
cache entry also keeps each source's :mod:`~daemon.data.fingerprint`, taken **before** the
exported snapshot: when every source's fingerprint is still the same, no transaction
committed since, so a snapshot now would equal the recorded one, and so would the tier and
the parameters derived from its counts. Anything else (a missing fingerprint, a commit, a
checkpoint, other parameters, a touched output) falls through to the full check.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from daemon.data.fingerprint import Fingerprint, unchanged
from daemon.export.cache import ExportCache
from daemon.export.tiers import ExportSettings, settings_for_count


def quick_hit(
    cache: ExportCache,
    key: str,
    output: Path,
    board: str,
    num_players: int,
    current: dict[str, Fingerprint | None],
    params_for: Callable[[ExportSettings], dict[str, Any]],
) -> tuple[dict[str, Any], ExportSettings] | None:
    """``(entry, settings)`` when the recorded export is provably current, else None."""
    try:
        entry = cache.entry(key, output)
        if entry is None or not unchanged(entry.get("fingerprints"), current):
            return None
        usable = sum(int(s["usable"]) for s in entry["sources"].values())
        es = settings_for_count(board, num_players, usable)
        if params_for(es) != entry["params"]:
            return None
        out = entry["output"]
        st = output.stat()
        if (st.st_size, st.st_mtime_ns, st.st_ino) != (out["size"], out["mtime_ns"], out["inode"]):
            return None
        return entry, es
    except (OSError, KeyError, TypeError, ValueError, AttributeError):  # a foreign or torn entry
        return None
