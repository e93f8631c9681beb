"""Trainer exit codes (torch-free: the service imports this)."""

from __future__ import annotations

import enum
import signal


class ExitCode(enum.IntEnum):
    OK = 0
    INTERNAL_ERROR = 1
    BAD_ARGS = 2
    BAD_DATA = 3
    DIVERGED = 4
    INTERRUPTED = 5  # stopped by SIGTERM/SIGINT; a checkpoint was saved
    INIT_MISMATCH = 6  # --init checkpoint does not fit the model


def exit_name(code: int) -> str:
    """Name for a process return code: ``BAD_DATA``, ``SIGKILL`` (negative codes), ``EXIT_77``."""
    if code < 0:
        try:
            return signal.Signals(-code).name
        except ValueError:
            return f"SIGNAL_{-code}"
    try:
        return ExitCode(code).name
    except ValueError:
        return f"EXIT_{code}"


class TrainerError(Exception):
    """An error the trainer reports as ``{"event": "error", "code": ...}`` and exits with."""

    def __init__(self, code: ExitCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
