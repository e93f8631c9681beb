"""``ringrift-daemon check`` against the fleet's PostgreSQL (DESIGN 13): a registry that is
unreachable or refuses the password is a FAIL line that says so (exit 1), never the password;
a reachable one with the right password is an ok line."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest
import yaml

from tests.chaos._helpers import child_environ
from tests.support.postgres_server import USER, PostgresServer
from tests.support.redis_server import free_port

PASSWORD_ENV = "RINGRIFT_DAEMON_REGISTRY__PASSWORD"

# Each check runs the torch probe in a child.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def _check(tmp: Path, url: str, password: str | None = None) -> subprocess.CompletedProcess[str]:
    cfg = tmp / "node.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "data_dir": str(tmp / "data"),
                "game_dbs": [],
                "configs": ["square8_2p"],
                "registry": {"url": url, "connect_timeout": 2},
            }
        )
    )
    env = child_environ()
    env.pop(PASSWORD_ENV, None)
    if password is not None:
        env[PASSWORD_ENV] = password
    return subprocess.run(
        [sys.executable, "-m", "daemon", "check", "--config", str(cfg)],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
        check=False,
    )


def _registry_line(out: str) -> str:
    lines = [line for line in out.splitlines() if " registry: " in line]
    assert len(lines) == 1, out
    return lines[0]


def test_check_fails_when_postgres_is_unreachable(tmp_path: Path) -> None:
    port = free_port()
    res = _check(tmp_path, f"postgresql://{USER}@127.0.0.1:{port}/fleet")
    assert res.returncode == 1, res.stdout + res.stderr
    line = _registry_line(res.stdout)
    assert line.startswith("FAIL registry: "), line
    assert f"registry database postgresql://{USER}@127.0.0.1:{port}/fleet" in line
    assert "refused" in line.lower(), line


def test_check_fails_when_postgres_refuses_the_password(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    role = f"pw_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_server.url(), autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'right-horse-battery'")
        conn.execute(f"GRANT ALL ON DATABASE postgres TO {role}")
        conn.execute(f"GRANT ALL ON SCHEMA public TO {role}")
    # This role (only) must give a password over TCP; pg_hba.conf takes the first matching line.
    hba = postgres_server.data / "pg_hba.conf"
    hba.write_text(f"host all {role} 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
    with psycopg.connect(postgres_server.url(), autocommit=True) as conn:
        conn.execute("SELECT pg_reload_conf()")
    url = f"postgresql://{role}@127.0.0.1:{postgres_server.port}/postgres"

    wrong = _check(tmp_path, url, password="wrong-horse")
    assert wrong.returncode == 1, wrong.stdout + wrong.stderr
    line = _registry_line(wrong.stdout)
    assert line.startswith("FAIL registry: "), line
    assert f"registry database {url}" in line and "password authentication failed" in line, line
    assert "wrong-horse" not in wrong.stdout + wrong.stderr

    right = _check(tmp_path, url, password="right-horse-battery")
    line = _registry_line(right.stdout)
    assert right.returncode == 0 and line.startswith("ok   registry: "), right.stdout + right.stderr
    assert "right-horse-battery" not in right.stdout + right.stderr
