"""The Redis password never appears in logs, /status, /metrics, ``status --json`` or ``check``.

A real redis-server with ``--requirepass``; the real service process with the
password only in ``RINGRIFT_DAEMON_REDIS__PASSWORD`` at DEBUG log level. The
test also proves the password was used (the service reached Redis), so a
service that silently skipped Redis would not pass.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import yaml

from tests.support.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[2]
SECRET = "s3cret-XYZ"


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RINGRIFT_DAEMON_")}
    return {**env, "PYTHONUNBUFFERED": "1", "RINGRIFT_DAEMON_REDIS__PASSWORD": SECRET}


def _events(log: Path) -> list[dict[str, object]]:
    out = []
    for line in log.read_text().splitlines():
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if isinstance(ev, dict):
            out.append(ev)
    return out


def _get(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
        return str(r.read().decode())


def test_redis_password_never_shown(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis", password=SECRET)
    server.start()
    proc: subprocess.Popen[bytes] | None = None
    try:
        cfg = tmp_path / "c.yaml"
        cfg.write_text(
            yaml.safe_dump(
                {
                    "data_dir": str(tmp_path / "data"),
                    "game_dbs": [str(tmp_path / "none.db")],
                    "configs": ["square8_2p"],
                    "redis": {"url": server.url, "ttl": 5, "key_prefix": "sec:"},
                    "locks": {"backend": "redis"},
                    "http": {"port": 0},
                    "schedule": {"poll_interval": 1, "decide_interval": 1, "health_interval": 1},
                }
            )
        )
        log = tmp_path / "service.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "daemon", "--log-level", "DEBUG", "run", "--config", str(cfg)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=_env(),
                cwd=ROOT,
            )
        port = None
        deadline = time.monotonic() + 60
        while port is None and time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()
            for ev in _events(log):
                if ev.get("event") == "http.started":
                    assert ev["host"] == "127.0.0.1"  # loopback by default
                    port = int(ev["port"])
            time.sleep(0.2)
        assert port is not None, log.read_text()
        time.sleep(2.5)  # a few ticks: polls, decisions, health, lock backend selection
        shown = [_get(port, "/status"), _get(port, "/metrics"), _get(port, "/healthz")]
        assert "ringrift_redis_up 1.0" in shown[1], shown[1][:2000]
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        outputs = []
        for argv in (["status", "--json"], ["check", "--json"], ["check"], ["locks", "--json"], ["health"]):
            p = subprocess.run(
                [sys.executable, "-m", "daemon", "--log-level", "DEBUG", *argv, "--config", str(cfg)],
                capture_output=True,
                text=True,
                timeout=60,
                env=_env(),
                cwd=ROOT,
            )
            outputs.append(f"$ {argv}\n{p.stdout}\n{p.stderr}")
        check = json.loads(
            subprocess.run(
                [sys.executable, "-m", "daemon", "check", "--json", "--config", str(cfg)],
                capture_output=True,
                text=True,
                timeout=60,
                env=_env(),
                cwd=ROOT,
            ).stdout.splitlines()[-1]
        )
        everything = "\n".join([log.read_text(), *shown, *outputs])
        assert SECRET not in everything
        assert SECRET.lower() not in everything.lower()
        # The password was really used: Redis accepted the service's connection.
        assert "redis" in json.dumps(check).lower()
        assert "NOAUTH" not in everything and "invalid password" not in everything.lower()
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        server.stop()
