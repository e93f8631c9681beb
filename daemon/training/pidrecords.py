"""Records of running trainer process groups, so a restarted daemon can end orphans (torch-free).

One JSON file per run under ``state_dir``: pid, pgid, run_id, the kernel start time
of the pid (``/proc/<pid>/stat`` field 22) and the argv. Before signalling a recorded
group we check the pid still is that process: same start time and a cmdline that
mentions ``daemon.training``; pids get reused.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import time
from pathlib import Path
from typing import Any

import structlog

log = structlog.get_logger(__name__)

TRAINER_MARKER = "daemon.training"
_PREFIX = "trainer-"


def proc_start_time(pid: int) -> int | None:
    """Start time in clock ticks since boot, or None if the process is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm (field 2) may contain spaces/parens: split after the last ')'.
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[19])


def proc_cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def group_alive(pgid: int) -> bool:
    """True while any non-zombie process is in process group ``pgid``."""
    try:
        entries = os.listdir("/proc")
    except OSError:
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True
    for name in entries:
        if not name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{name}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            return True
    return False


def pids_of_run(run_id: str) -> list[int]:
    """Live processes whose environment carries ``RINGRIFT_RUN_ID=<run_id>``.

    torchrun starts its workers in sessions of their own, out of reach of a kill
    of the trainer's process group; they inherit the run id, so they are found here.
    """
    needle = f"RINGRIFT_RUN_ID={run_id}".encode()
    me = os.getpid()
    out = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as f:
                env = f.read()
        except OSError:  # gone, or not ours to read
            continue
        if needle in env.split(b"\0"):
            out.append(int(entry.name))
    return out


def _safe(run_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", run_id)[:120] or "run"


def record_path(state_dir: Path, run_id: str) -> Path:
    return state_dir / f"{_PREFIX}{_safe(run_id)}.json"


def write_record(state_dir: Path, run_id: str, pid: int, pgid: int, argv: list[str], started_at: str) -> Path:
    state_dir.mkdir(parents=True, exist_ok=True)
    path = record_path(state_dir, run_id)
    rec = {
        "pid": pid,
        "pgid": pgid,
        "run_id": run_id,
        "start_time": proc_start_time(pid),
        "started_at": started_at,
        "argv": argv,
    }
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("w") as fh:
        json.dump(rec, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fd = os.open(state_dir, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return path


def _is_ours(rec: dict[str, Any]) -> bool:
    pid = rec.get("pid")
    if not isinstance(pid, int):
        return False
    started = proc_start_time(pid)
    return started is not None and started == rec.get("start_time") and TRAINER_MARKER in proc_cmdline(pid)


def reap_orphans(state_dir: Path, *, grace: float = 5.0) -> list[int]:
    """End trainer groups recorded by a previous daemon that still run; remove all records.

    SIGTERM to the group (the trainer checkpoints), SIGKILL after ``grace``. Returns the
    pids that were signalled. Synchronous: call once at start-up, before new runs.
    """
    ended: list[int] = []
    if not state_dir.is_dir():
        return ended
    for path in sorted(state_dir.glob(f"{_PREFIX}*.json")):
        try:
            rec = json.loads(path.read_text())
        except (OSError, ValueError):
            rec = {}
        if isinstance(rec, dict) and _is_ours(rec):
            pid = int(rec["pid"])
            pgid = int(rec.get("pgid") or pid)
            log.warning("trainer.orphan_found", pid=pid, pgid=pgid, run_id=rec.get("run_id"))
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGTERM)
            deadline = time.monotonic() + grace
            while group_alive(pgid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if group_alive(pgid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pgid, signal.SIGKILL)
            ended.append(pid)
        path.unlink(missing_ok=True)
    return ended
