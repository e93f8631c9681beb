"""A real PostgreSQL server (``initdb`` + ``pg_ctl``) in a temp dir on a free loopback port.

Tests never touch a server on the standard port 5432: each server gets its own port, its
own unix-socket directory inside its temp dir, trust authentication for one test user, and
is stopped by the PID it started (``pg_ctl stop -m fast``, then SIGKILL of the postmaster
PID if it is still there).

PostgreSQL refuses to run as root. As root, the cluster is created and run as the
unprivileged ``nobody`` (``subprocess`` drops to its uid/gid), in a temp dir it owns under
the system temp dir (pytest's own ``tmp_path`` is root-only, mode 0700). Binaries are found
on PATH or under ``/usr/lib/postgresql/*/bin`` (Debian's ``postgresql`` package).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.support.redis_server import free_port
from tests.support.system_deps import reason

USER = "ringrift"
_SEARCH = "/usr/lib/postgresql/*/bin"


def find_binary(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for d in sorted(glob.glob(_SEARCH), reverse=True):  # newest major version first
        if os.access(os.path.join(d, name), os.X_OK):
            return os.path.join(d, name)
    pytest.skip(reason(name))  # strict runs (CI) turn this into a failure


class PostgresServer:
    """One cluster. ``start()`` / ``stop()``; ``stop_immediate()`` + ``start()`` restarts it on the
    same port with its data (a server outage)."""

    def __init__(self, *, durable: bool = False) -> None:
        self.durable = durable  # fsync on: for benchmarks; tests run without it
        self.port = 0
        self.root: Path | None = None
        self.pid: int | None = None
        self._run_as: dict[str, Any] = {}

    @property
    def data(self) -> Path:
        assert self.root is not None
        return self.root / "data"

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{dbname}"

    def _cmd(self, args: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
        res = subprocess.run(
            args, capture_output=True, text=True, timeout=timeout, cwd=self.root, check=False, **self._run_as
        )
        if res.returncode != 0:
            raise RuntimeError(
                f"{' '.join(args[:2])} failed ({res.returncode}): {res.stderr.strip()[-2000:]}"
            )
        return res

    def _init(self) -> None:
        as_root = os.geteuid() == 0
        # As root, under /tmp (world-traversable) whatever TMPDIR says: ``nobody`` must reach it.
        self.root = Path(tempfile.mkdtemp(prefix="ringrift-pg-", dir="/tmp" if as_root else None))
        if as_root:
            nobody = pwd.getpwnam("nobody")
            os.chown(self.root, nobody.pw_uid, nobody.pw_gid)
            self._run_as = {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}
        (self.root / "sock").mkdir()
        if self._run_as:
            os.chown(self.root / "sock", self._run_as["user"], self._run_as["group"])
        initdb = find_binary("initdb")
        self._cmd(
            [
                initdb,
                "-D",
                str(self.data),
                "-U",
                USER,
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ]
        )
        while self.port in (0, 5432):
            self.port = free_port()

    def start(self, timeout: float = 30.0) -> None:
        if self.root is None:
            self._init()
        opts = [
            f"-p {self.port}",
            "-c listen_addresses=127.0.0.1",
            f"-c unix_socket_directories={self.root}/sock",
            "-c max_connections=200",
            "-c shared_buffers=32MB",
        ]
        if not self.durable:
            # A test server survives its own crash (stop_immediate) but not the machine's: writes
            # reach the OS at commit (synchronous_commit stays on), only fsync is skipped.
            opts += ["-c fsync=off", "-c full_page_writes=off"]
        log = str(self.data.parent / "server.log")
        pg_ctl = find_binary("pg_ctl")
        args = [
            pg_ctl,
            "start",
            "-D",
            str(self.data),
            "-w",
            "-t",
            str(int(timeout)),
            "-l",
            log,
            "-o",
            " ".join(opts),
        ]
        self._cmd(args, timeout=timeout + 10)
        self.pid = int((self.data / "postmaster.pid").read_text().split()[0])
        deadline = time.monotonic() + timeout
        while True:  # accepting connections on our port, not just started
            try:
                with psycopg.connect(self.url(), connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _alive(self) -> bool:
        if self.pid is None:
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        return True

    def _stop(self, mode: str) -> None:
        if self.pid is None:
            return
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self._cmd([find_binary("pg_ctl"), "stop", "-D", str(self.data), "-m", mode, "-w", "-t", "20"], 30)
        deadline = time.monotonic() + 10
        while self._alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        if self._alive():
            assert self.pid is not None
            os.kill(self.pid, signal.SIGKILL)
        self.pid = None

    def stop_immediate(self) -> None:
        """The server goes away at once (no shutdown checkpoint), as in a crash; data kept."""
        self._stop("immediate")

    def stop(self) -> None:
        """Stop the server and delete its directory."""
        self._stop("fast")
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def create_database(self, name: str | None = None) -> str:
        """A fresh database; returns its URL."""
        name = name or f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
