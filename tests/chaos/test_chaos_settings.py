"""Hostile settings files through the real CLI (issue 17 item 10).

Each file is given to ``python -m daemon check`` and ``run --once`` in a child process: exit 2,
exactly one stderr line, no traceback, and bounded cost (the child's own CPU seconds and peak
RSS from ``wait4``, which load on the machine does not inflate the way wall-clock time is).
A wrong Redis password under ``locks.backend: auto`` must fail closed, never fall back to
node-local file locks; an unreadable ``password_file`` fails ``check``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from daemon.selfplay_sim import write_games
from tests.chaos._helpers import child_environ, journal_runs, node_mapping, settings_of, write_config
from tests.support.redis_server import RedisServer

KEY = "square8_2p"
CPU_SECONDS = 20.0  # a refused file costs an interpreter start and a parse: about 1 s of CPU
PEAK_RSS_MB = 400  # the CLI with pydantic loaded is about 80 MB; the alias bomb took 1.3 GB
HANG_GUARD = 300.0  # wall-clock only to stop a hung child (the FIFO); never the thing asserted


# A fork of this (large) pytest process would start with its peak RSS: Linux carries the
# pre-exec high-water mark into the child's ru_maxrss. A small interpreter spawns the CLI
# (posix_spawn: nothing of pytest's memory) and reports the CLI's own rusage.
SPAWN = r"""
import json, os, sys
pid = os.posix_spawn(sys.executable, [sys.executable, *sys.argv[2:]], os.environ)
_, status, u = os.wait4(pid, 0)
with open(sys.argv[1], "w") as f:
    json.dump({"status": status, "cpu": u.ru_utime + u.ru_stime, "maxrss": u.ru_maxrss}, f)
sys.exit(os.waitstatus_to_exitcode(status) & 0xFF)
"""


@dataclass
class Outcome:
    rc: int
    stdout: str
    stderr: str
    cpu: float
    rss_mb: float


def _cli(args: list[str], tmp: Path, env: dict[str, str] | None = None) -> Outcome:
    out, err, usage = tmp / "cli.out", tmp / "cli.err", tmp / "cli.rusage.json"
    usage.unlink(missing_ok=True)
    with out.open("wb") as o, err.open("wb") as e:
        proc = subprocess.Popen(
            [sys.executable, "-c", SPAWN, str(usage), "-m", "daemon", *args],
            stdout=o,
            stderr=e,
            stdin=subprocess.DEVNULL,
            env={**child_environ(), **(env or {})},
            cwd=tmp,
            start_new_session=True,  # the guard below ends the spawner and the CLI together
        )
    try:
        _wait(proc, HANG_GUARD)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    u = json.loads(usage.read_text())
    return Outcome(
        os.waitstatus_to_exitcode(u["status"]),
        out.read_text(errors="replace"),
        err.read_text(errors="replace"),
        u["cpu"],
        u["maxrss"] / 1024,
    )


def _wait(proc: subprocess.Popen[bytes], guard: float) -> None:
    deadline = time.monotonic() + guard
    while proc.poll() is None:
        if time.monotonic() > deadline:
            raise AssertionError(f"the CLI did not exit within {guard:.0f}s (hung on the settings file)")
        time.sleep(0.05)


def _alias_bomb() -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, 10):
        refs = ", ".join([f"*a{i - 1}"] * 9)
        lines.append(f"a{i}: &a{i} [{refs}]")
    return "\n".join(lines) + "\nconfigs: *a9\n"


def _deep(n: int) -> str:
    return "configs: " + "[" * n + "]" * n + "\n"


# (id, file bytes, words the one error line must contain)
HOSTILE: list[tuple[str, bytes, tuple[str, ...]]] = [
    ("non_utf8", b"data_dir: caf\xe9\n", ("not UTF-8",)),
    ("int_5001_digits", b"http:\n  port: " + b"9" * 5001 + b"\n", ("integer too large",)),
    ("deep_nesting", _deep(5000).encode(), ("nested deeper",)),
    ("nul_in_data_dir", b'data_dir: "data\\0x"\n', ("data_dir", "NUL")),
    ("invalid_ipv6_redis_url", b'redis:\n  url: "redis://[::1:6379/0"\n', ("redis.url", "IPv6")),
    ("poll_interval_inf", b"schedule:\n  poll_interval: .inf\n", ("schedule.poll_interval", "finite")),
    ("poll_interval_1e308", b"schedule:\n  poll_interval: 1e308\n", ("schedule.poll_interval", "less than")),
    ("drain_timeout_inf", b"schedule:\n  drain_timeout: .inf\n", ("schedule.drain_timeout", "finite")),
    ("interval_1e-6", b"schedule:\n  decide_interval: 1.0e-6\n", ("schedule.decide_interval", "greater")),
    ("alias_bomb", _alias_bomb().encode(), ("aliases",)),
    ("duplicate_keys", b"http:\n  port: 9464\n  port: 9465\n", ("duplicate key", "port")),
    ("huge_file", b"# padding\n" * 220_000, ("larger than",)),
]


def _assert_refused(o: Outcome, words: tuple[str, ...]) -> None:
    lines = [ln for ln in o.stderr.splitlines() if ln.strip()]
    assert o.rc == 2, (o.rc, o.stderr[-3000:])
    assert len(lines) == 1, f"expected one stderr line, got {len(lines)}: {o.stderr[:3000]!r}"
    assert "Traceback" not in o.stderr and len(lines[0]) < 600, lines[0][:1000]
    assert lines[0].startswith("error: bad settings: "), lines[0]
    for w in words:
        assert w in lines[0], (w, lines[0])
    assert o.cpu < CPU_SECONDS, f"{o.cpu:.1f} CPU seconds to refuse a settings file"
    assert o.rss_mb < PEAK_RSS_MB, f"peak RSS {o.rss_mb:.0f} MB to refuse a settings file"


@pytest.mark.parametrize(("name", "body", "words"), HOSTILE, ids=[h[0] for h in HOSTILE])
@pytest.mark.parametrize("command", [["check"], ["run", "--once"]], ids=["check", "run_once"])
def test_hostile_settings_file_exit_2_one_line(
    tmp_path: Path, name: str, body: bytes, words: tuple[str, ...], command: list[str]
) -> None:
    cfg = tmp_path / "hostile.yaml"
    cfg.write_bytes(body)
    _assert_refused(_cli([*command, "--config", str(cfg)], tmp_path), words)
    assert not (tmp_path / "data").exists(), "a refused settings file must touch nothing"


def test_settings_fifo_does_not_block(tmp_path: Path) -> None:
    fifo = tmp_path / "settings.yaml"
    os.mkfifo(fifo)
    _assert_refused(_cli(["check", "--config", str(fifo)], tmp_path), ("not a regular file",))


ENV_HOSTILE = [
    ("RINGRIFT_DAEMON_SCHEDULE__POLL_INTERVAL", ".inf", "finite"),
    ("RINGRIFT_DAEMON_HTTP__PORT", "9" * 5001, "longer than"),
    ("RINGRIFT_DAEMON_TRAINING__MAX_CONCURRENT", "9" * 30, "64-bit"),
    ("RINGRIFT_DAEMON_SCHEDULE__HEALTH_INTERVAL", "1e-6", "greater"),
]


@pytest.mark.parametrize(("name", "value", "word"), ENV_HOSTILE, ids=[e[0][16:] for e in ENV_HOSTILE])
def test_hostile_environment_value_one_line(tmp_path: Path, name: str, value: str, word: str) -> None:
    _assert_refused(_cli(["check"], tmp_path, {name: value}), (word,))


def _node(tmp: Path, **sections: dict[str, object]) -> Path:
    db = tmp / "games.db"
    write_games(db, KEY, 50, seed=1)
    return write_config(tmp, node_mapping(tmp, db, [KEY], **sections))


@pytest.mark.timeout(600)  # check runs the torch probe
def test_missing_password_file_fails_check(tmp_path: Path) -> None:
    missing = tmp_path / "secrets" / "redis.pw"
    cfg = _node(
        tmp_path,
        redis={"url": "redis://127.0.0.1:1/0", "password_file": str(missing)},
        registry={"password_file": str(tmp_path / "secrets" / "registry.pw")},
    )
    o = _cli(["--log-level", "ERROR", "check", "--json", "--config", str(cfg)], tmp_path)
    assert o.rc == 1, (o.rc, o.stdout[-2000:], o.stderr[-2000:])
    checks = {c["name"]: c for c in json.loads(o.stdout.strip().splitlines()[-1])["checks"]}
    for name, path in (("redis password", missing), ("registry password", "registry.pw")):
        assert not checks[name]["ok"] and str(path) in checks[name]["detail"], checks[name]
        assert "No such file" in checks[name]["detail"], checks[name]
    assert not checks["redis"]["ok"], checks["redis"]  # never "unreachable (auto: file locks)"


@pytest.mark.timeout(600)  # check's torch probe plus a service pass
def test_wrong_redis_password_with_auto_does_not_fall_back(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis", password="right-password")
    server.start()
    try:
        cfg = _node(tmp_path, redis={"url": server.url, "ttl": 5}, locks={"backend": "auto"})
        settings = settings_of(yaml.safe_load(cfg.read_text()))
        env = {"RINGRIFT_DAEMON_REDIS__PASSWORD": "wrong-password"}

        o = _cli(["--log-level", "ERROR", "check", "--json", "--config", str(cfg)], tmp_path, env)
        assert o.rc == 1, (o.rc, o.stdout[-2000:], o.stderr[-2000:])
        checks = {c["name"]: c for c in json.loads(o.stdout.strip().splitlines()[-1])["checks"]}
        assert not checks["redis"]["ok"] and "refused" in checks["redis"]["detail"], checks["redis"]
        assert "wrong-password" not in o.stdout + o.stderr

        # The service starts (it serves status and alerts) but trains nothing: no file lock.
        o = _cli(["run", "--once", "--config", str(cfg)], tmp_path, env)
        events = [json.loads(ln) for ln in o.stderr.splitlines() if ln.startswith("{")]
        names = [e["event"] for e in events]
        assert "lock.backend_fallback" not in names, o.stderr[-3000:]
        selected = [e for e in events if e["event"] == "lock.backend_selected"]
        assert selected and selected[0]["backend"] == "redis", selected
        assert "refused" in selected[0]["reason"], selected
        assert journal_runs(settings) == [], "a run started although the lock backend refused us"
        assert not list((settings.lock_dir).glob("*.lock")), "fell back to node-local file locks"
        assert "wrong-password" not in o.stdout + o.stderr
    finally:
        server.stop()
