"""The trainer dies with its supervisor: Linux ``prctl(PR_SET_PDEATHSIG)`` (torch-free).

Set first thing in the trainer process, before ``import torch`` (seconds long), so a supervisor
killed with SIGKILL during the import does not leave the trainer running on. The kernel sends the
signal when the **thread** that forked this process exits, not when the parent process does:
the runner forks from its event-loop thread, which lives as long as the service; a supervisor
that ran its loop in a short-lived thread would stop its trainer when that thread ends. The
setting is not inherited across fork: torchrun's workers run this module and set their own
(parent: torchrun). Not Linux: nothing is set; the supervisor-pid watcher in the trainer's CLI
is the portable backstop.
"""

from __future__ import annotations

import ctypes
import signal
import sys

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
# The runner puts its pid here; the trainer's watcher stops the run when that process is gone.
SUPERVISOR_PID_ENV = "RINGRIFT_SUPERVISOR_PID"


def set_parent_death_signal(sig: int = signal.SIGTERM) -> bool:
    """Ask the kernel to send ``sig`` to this process when its parent thread exits; True when set."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False
