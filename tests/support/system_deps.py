"""The system programs the tests need beyond pip, and what happens when one is missing.

Missing: the test is skipped with the one command that installs everything (README, "Tests").
With ``RINGRIFT_TESTS_REQUIRE_SYSTEM_DEPS=1`` (``.ci/run`` sets it) any such skip fails the run,
so CI can never pass by skipping the real-server tests.
"""

from __future__ import annotations

import shutil

import pytest

STRICT_ENV = "RINGRIFT_TESTS_REQUIRE_SYSTEM_DEPS"
# Debian/Ubuntu packages: redis-server, promtool + prometheus, systemd-analyze, initdb/pg_ctl, jq.
INSTALL = "sudo apt-get install -y --no-install-recommends redis-server prometheus systemd postgresql jq"
MARK = "missing system dependency"  # every such skip reason contains this


def reason(binary: str) -> str:
    return f"{MARK}: {binary} not found; install: {INSTALL}"


def missing(binary: str) -> bool:
    return shutil.which(binary) is None


def requires(binary: str) -> pytest.MarkDecorator:
    """``pytestmark = requires("promtool")``: skip (or, strict, fail) when ``binary`` is absent."""
    return pytest.mark.skipif(missing(binary), reason=reason(binary))


def require(binary: str) -> str:
    """The path of ``binary``, or skip the running test (strict runs turn the skip into a failure)."""
    path = shutil.which(binary)
    if path is None:
        pytest.skip(reason(binary))
    return path
