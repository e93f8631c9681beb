"""Retention of ``{data_dir}/runs/<run_id>/``: the trainer's checkpoint and the warm-start parent.

A registered run's ``model.pt`` is a byte copy of its registry object, so the directory goes as
soon as the registry has it. A run that did not register (failed, interrupted) keeps its
directory for a look, but only the newest ``keep_failed_runs`` of them: without a bound every
failure leaves a model-sized file behind (issue 17 item 13). Only names shaped like a run id are
ever removed; anything else an operator put there stays.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Collection
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

# RunJournal.start: "{config}-{YYYYmmddTHHMMSS}-{8 hex}".
RUN_ID = re.compile(r"^[a-z0-9]+_[0-9]+p-[0-9]{8}T[0-9]{6}-[0-9a-f]{8}$")


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def prune_run_dirs(
    runs_dir: Path, keep_failed: int, *, done: str | None = None, keep: Collection[str] = ()
) -> list[Path]:
    """Remove run ``done``'s directory (registered) and all but the newest ``keep_failed`` other
    run directories, never one named in ``keep`` (runs still going). Returns what was removed."""
    removed: list[Path] = []
    if done is not None and RUN_ID.match(done):
        path = runs_dir / done
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
            removed.append(path)
    try:
        entries = list(runs_dir.iterdir())
    except FileNotFoundError:
        return removed
    names = [p for p in entries if RUN_ID.match(p.name) and p.name not in keep and p.name != done]
    others = [p for p in names if p.is_dir() and not p.is_symlink()]
    others.sort(key=_mtime, reverse=True)
    for path in others[max(0, keep_failed) :]:
        try:
            shutil.rmtree(path)
        except OSError as e:  # next time; one stuck directory must not stop the rest
            log.warning("run.retention_failed", path=str(path), error=f"{type(e).__name__}: {e}")
            continue
        removed.append(path)
    if removed:
        log.debug("run.retention", removed=[p.name for p in removed])
    return removed
