"""How a trainer run ended, from its exit status and its last events (torch-free).

A DDP run can finish (rank 0 wrote the checkpoint and printed ``done``) and still exit
non-zero: a rank may abort while tearing the process group down (gloo: "terminate called
without an active exception"), and torchrun then exits 1. Such a run succeeded; it gets
its own reason, ``teardown_crash``, when the ``done`` event names a checkpoint that is on
disk and complete: its size is the ``checkpoint_bytes`` the event reports and it is a
readable zip archive (``torch.save``'s format; the central directory is written last).
"""

from __future__ import annotations

import contextlib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from daemon.training.exitcodes import ExitCode, exit_name

Reason = Literal["ok", "exit", "timeout", "cancelled", "heartbeat", "signal", "teardown_crash"]
DONE_CHECKPOINT_BYTES = "checkpoint_bytes"  # in the ``done`` event: the checkpoint file's size


@dataclass
class TrainerOutcome:
    """``exit_code``/``exit_name`` are the run's result; ``process_exit`` is what the process returned.

    They differ only for ``reason == "teardown_crash"``: the run's code is OK (INTERRUPTED when
    ``done`` says so) while the process exited e.g. 1 or SIGABRT.
    """

    exit_code: int
    exit_name: str
    duration: float
    last_progress: dict[str, Any] | None
    checkpoint: Path | None
    reason: Reason
    pid: int
    pgid: int
    stderr_tail: list[str] = field(default_factory=list)
    process_exit: int | None = None

    @property
    def ok(self) -> bool:
        return self.exit_code == ExitCode.OK and self.checkpoint is not None


def checkpoint_complete(done: dict[str, Any] | None) -> Path | None:
    """The ``done`` event's checkpoint when it is on disk and complete (see the module doc), else None."""
    if not done or not isinstance(done.get("checkpoint"), str):
        return None
    path, size = Path(done["checkpoint"]), done.get(DONE_CHECKPOINT_BYTES)
    if not isinstance(size, int) or isinstance(size, bool):
        return None
    with contextlib.suppress(OSError):
        if path.is_file() and path.stat().st_size == size and zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                if zf.namelist():
                    return path
    return None


def classify(
    rc: int,
    stopped: Reason | None,
    done: dict[str, Any] | None,
    error: dict[str, Any] | None,
    default_checkpoint: Path,
) -> tuple[int, str, Reason, Path | None]:
    """(exit code, exit name, reason, checkpoint) of a run whose process returned ``rc``.

    ``stopped``: why the runner stopped it (None: it exited by itself).
    """
    name = exit_name(rc)
    # torchrun exits 1 whatever the worker code was: trust the worker's own error event.
    if rc == ExitCode.INTERNAL_ERROR and error and isinstance(error.get("code"), str):
        name = error["code"]
    if stopped is None and rc != 0 and error is None:
        finished = checkpoint_complete(done)
        if finished is not None:
            code = ExitCode.INTERRUPTED if done and done.get("interrupted") else ExitCode.OK
            return int(code), code.name, "teardown_crash", finished
    reason: Reason = stopped or ("ok" if rc == 0 else "signal" if rc < 0 else "exit")
    checkpoint: Path | None = None
    if done and isinstance(done.get("checkpoint"), str):
        checkpoint = Path(done["checkpoint"])
    elif rc in (ExitCode.OK, ExitCode.INTERRUPTED):
        checkpoint = default_checkpoint
    if checkpoint is not None and not checkpoint.is_file():
        checkpoint = None
    return rc, name, reason, checkpoint
