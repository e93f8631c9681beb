"""Settings defaults, environment overrides, and bad settings through the CLI (exit 2, one message)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from daemon.keys import ALL_CONFIG_KEYS
from daemon.settings import SettingsError, load_settings, settings_from_mapping

ROOT = Path(__file__).resolve().parents[2]


def test_defaults() -> None:
    s = settings_from_mapping({}, {})
    assert s.configs == ALL_CONFIG_KEYS and len(s.configs) == 12
    assert s.data_dir == Path("data")
    assert s.redis is None and s.locks.backend == "auto"  # file locks unless redis is set
    assert (s.http.host, s.http.port) == ("127.0.0.1", 9464)
    assert s.state_dir == Path("data/state") and s.training_dir == Path("data/training")


def test_embedded_config_yaml_is_the_default() -> None:
    s = load_settings(ROOT / "config.yaml", {})
    assert s.configs == ALL_CONFIG_KEYS and s.redis is None and s.http.port == 9464


def test_env_override() -> None:
    s = settings_from_mapping(
        {"http": {"host": "0.0.0.0"}}, {"RINGRIFT_DAEMON_HTTP__PORT": "9999", "OTHER": "x"}
    )
    assert (s.http.host, s.http.port) == ("0.0.0.0", 9999)
    s = settings_from_mapping(
        {},
        {
            "RINGRIFT_DAEMON_REDIS__URL": "redis://10.0.0.5:6379/0",
            "RINGRIFT_DAEMON_REDIS__PASSWORD": "s3cret",
        },
    )
    assert s.redis is not None and s.redis.resolved_password() == "s3cret"
    assert "s3cret" not in repr(s)


def test_password_file(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("from-file\n")
    s = settings_from_mapping({"redis": {"url": "redis://127.0.0.1:1/0", "password_file": str(pw)}}, {})
    assert s.redis is not None and s.redis.resolved_password() == "from-file"


def _cli(
    args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("RINGRIFT_DAEMON_")}
    base["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-m", "daemon", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**base, **(env or {})},
        cwd=cwd or ROOT,
    )


# (yaml, field path, bad value as printed): the exact messages are in the README.
BAD = [
    ("bogus: 1\n", "error: bad settings: bogus: unknown key (got 1)"),
    (
        "http:\n  port: abc\n",
        "error: bad settings: http.port: Input should be a valid integer, unable to parse string as an "
        "integer (got 'abc')",
    ),
    (
        "configs: [square8_2p, square8_5p]\n",
        "error: bad settings: configs.1: invalid config key 'square8_5p': expected {board}_{n}p with board "
        "in square8|square19|hex8|hexagonal and n in 2..4 (e.g. square8_2p)",
    ),
    (
        "schedule:\n  poll_interval: -5\n",
        "error: bad settings: schedule.poll_interval: Input should be greater than or equal to 0.1 (got -5)",
    ),
    (
        "redis:\n  password: hunter2\n",
        "error: bad settings: redis.password: secrets are not read from the config file; "
        "use RINGRIFT_DAEMON_REDIS__PASSWORD or redis.password_file",
    ),
    (
        "http:\n  port: 9090\n",
        "error: bad settings: http.port: 9090 is Prometheus's own port; pick another (default 9464)",
    ),
    (
        "configs: ['../../x_2p']\n",
        "error: bad settings: configs.0: invalid config key '../../x_2p': expected {board}_{n}p with board "
        "in square8|square19|hex8|hexagonal and n in 2..4 (e.g. square8_2p)",
    ),
]


@pytest.mark.parametrize(
    ("yaml_text", "message"), BAD, ids=[b[0].split(":")[0] + str(i) for i, b in enumerate(BAD)]
)
def test_bad_settings_exit_2_with_one_message(tmp_path: Path, yaml_text: str, message: str) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml_text)
    out = _cli(["status", "--config", str(cfg)])
    assert out.returncode == 2, out
    assert out.stderr.strip().splitlines() == [message]
    assert "hunter2" not in out.stderr + out.stdout


def test_bad_settings_json_error_on_stdout(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("schedule:\n  poll_interval: -5\n")
    out = _cli(["status", "--json", "--config", str(cfg)])
    assert out.returncode == 2
    assert '"error": "bad settings: schedule.poll_interval' in out.stdout


def test_bad_env_override_exit_2(tmp_path: Path) -> None:
    cfg = tmp_path / "ok.yaml"
    cfg.write_text(f"data_dir: {tmp_path / 'data'}\n")
    out = _cli(["status", "--config", str(cfg)], env={"RINGRIFT_DAEMON_HTTP__PORT": "nope"})
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "error: bad settings: http.port: Input should be a valid integer, unable to parse string as an "
        "integer (got 'nope')"
    ]


def test_in_process_errors() -> None:
    with pytest.raises(SettingsError, match=r"^triggers\.freshness_threshold: .*\(got 'many'\)$"):
        settings_from_mapping({"triggers": {"freshness_threshold": "many"}}, {})
    with pytest.raises(SettingsError, match=r"redis\.url: contains a password"):
        settings_from_mapping({"redis": {"url": "redis://:pw@host:6379/0"}}, {})
    with pytest.raises(SettingsError, match=r"settings file not found"):
        load_settings(Path("/nonexistent/x.yaml"), {})
