"""Fixtures shared by every test directory."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import system_deps
from tests.support.postgres_server import PostgresServer
from tests.support.redis_server import RedisServer

DATA = Path(__file__).resolve().parent / "data"  # provenance and licence: tests/data/README.md
REAL_DB = DATA / "canonical_square8_3p.db"
LEGACY_NPZ = DATA / "training_states_sq8_legacy.npz"


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A fresh real redis-server on a free loopback port, killed by PID afterwards."""
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        if server.proc is not None and server.proc.poll() is None:
            try:
                server.resume()
            except (ProcessLookupError, AssertionError):
                pass
        server.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One real PostgreSQL for the session (initdb + pg_ctl, free loopback port, stopped by PID);
    each test takes its own database from ``postgres_url``."""
    server = PostgresServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh, empty database on the session's server, dropped afterwards."""
    url = postgres_server.create_database()
    try:
        yield url
    finally:
        postgres_server.drop_database(url)


@pytest.fixture
def real_db(tmp_path: Path) -> Path:
    """A private copy of the real upstream square8_3p database (schema v6)."""
    if not REAL_DB.exists():
        pytest.fail(f"missing test fixture {REAL_DB}")
    dst = tmp_path / "canonical_square8_3p.db"
    dst.write_bytes(REAL_DB.read_bytes())
    os.chmod(dst, 0o644)
    return dst


@pytest.fixture
def legacy_npz() -> Path:
    if not LEGACY_NPZ.exists():
        pytest.fail(f"missing test fixture {LEGACY_NPZ}")
    return LEGACY_NPZ


_MISSING: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and system_deps.MARK in str(report.longrepr):
        _MISSING.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Strict runs (CI) fail when a test was skipped for a missing system program."""
    if _MISSING and os.environ.get(system_deps.STRICT_ENV) == "1":
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(
                f"{len(_MISSING)} test(s) skipped for a missing system program with "
                f"{system_deps.STRICT_ENV}=1 (install: {system_deps.INSTALL}), e.g. {_MISSING[0]}",
                red=True,
            )
