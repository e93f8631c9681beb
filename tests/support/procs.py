"""Stopping the service processes a test started (by their Popen handles, never by name)."""

from __future__ import annotations

import os
import signal
import subprocess


def stop_all(procs: list[subprocess.Popen[bytes]], timeout: float = 30) -> None:
    """SIGCONT (a frozen node must see its SIGTERM), SIGTERM, wait; SIGKILL what does not stop."""
    for p in procs:
        if p.poll() is None:
            os.kill(p.pid, signal.SIGCONT)
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
