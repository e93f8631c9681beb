"""Static checks of the systemd unit and its environment example (no systemd needed)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from daemon.cli.exits import EXIT_ALREADY_RUNNING, EXIT_BAD_SETTINGS
from daemon.settings import ScheduleSettings, TrainingSettings, settings_from_mapping

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "ringrift-training-daemon.service"
ENV_EXAMPLE = ROOT / "systemd" / "ringrift-training-daemon.env.example"


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """systemd syntax: sections, repeatable keys, '#'/';' comments (no continuations used)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        assert not line.endswith("\\"), f"continuation lines are not expected: {raw!r}"
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        assert current is not None, f"key outside a section: {raw!r}"
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


@pytest.fixture(scope="module")
def service() -> dict[str, list[str]]:
    return parse_unit(UNIT.read_text())["Service"]


def one(service: dict[str, list[str]], key: str) -> str:
    values = service.get(key)
    assert values is not None, f"{key}= missing"
    assert len(values) == 1, f"{key}= given {len(values)} times"
    return values[0]


def test_notify_lifecycle(service: dict[str, list[str]]) -> None:
    assert one(service, "Type") == "notify"
    assert one(service, "NotifyAccess") == "main"
    assert one(service, "WatchdogSec") == "120"
    exe = "/opt/ringrift-daemon/venv/bin/ringrift-daemon"
    assert one(service, "ExecStart") == f"{exe} run --config /etc/ringrift/config.yaml"
    assert one(service, "ExecStartPre") == (
        "/opt/ringrift-daemon/venv/bin/ringrift-daemon check --config /etc/ringrift/config.yaml"
    )


def test_stop_and_restart_policy(service: dict[str, list[str]]) -> None:
    assert one(service, "KillMode") == "mixed"
    # systemd must not SIGKILL before the daemon's own drain + trainer grace are over.
    budget = ScheduleSettings().drain_timeout + TrainingSettings().grace
    assert int(one(service, "TimeoutStopSec")) > budget
    assert one(service, "Restart") == "on-failure"
    # Bad settings (2) and a data directory held by another service (4): restarting won't help.
    prevent = one(service, "RestartPreventExitStatus").split()
    assert prevent == [str(EXIT_BAD_SETTINGS), str(EXIT_ALREADY_RUNNING)]
    assert one(service, "OOMPolicy") == "continue"
    assert int(one(service, "LimitNOFILE")) >= 65536  # a connection burst must not starve runs


def test_identity_dirs_and_caches(service: dict[str, list[str]]) -> None:
    assert one(service, "User") == one(service, "Group") == "ringrift"
    assert one(service, "WorkingDirectory") == "/var/lib/ringrift"
    assert one(service, "StateDirectory") == "ringrift"
    assert one(service, "CacheDirectory") == "ringrift"
    assert one(service, "EnvironmentFile") == "-/etc/ringrift/daemon.env"
    env = dict(v.split("=", 1) for v in service["Environment"])
    for var in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR", "XDG_CACHE_HOME"):
        assert env[var].startswith("/var/cache/ringrift"), var
    rw = one(service, "ReadWritePaths").split()
    assert "/var/lib/ringrift" in rw
    assert any(p.lstrip("-").startswith("/srv/ringrift/games") for p in rw)


def test_hardening_keeps_gpu(service: dict[str, list[str]]) -> None:
    expected = {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "PrivateTmp": "yes",
        "ProtectHome": "read-only",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectKernelLogs": "yes",
        "ProtectControlGroups": "yes",
        "RestrictRealtime": "yes",
        "LockPersonality": "yes",
        "SystemCallArchitectures": "native",
        "RestrictNamespaces": "yes",
        "CapabilityBoundingSet": "",
        "UMask": "0027",
        "ProtectClock": "yes",
        "ProtectHostname": "yes",
        "DevicePolicy": "closed",
    }
    for key, value in expected.items():
        assert one(service, key) == value, key
    assert set(one(service, "RestrictAddressFamilies").split()) == {
        "AF_UNIX",
        "AF_INET",
        "AF_INET6",
        "AF_NETLINK",
    }
    # These hide or break the GPU (no /dev/nvidia*, no W+X pages for the CUDA/Triton JIT,
    # no /proc/driver/nvidia): they must stay off.
    for key in ("PrivateDevices", "MemoryDenyWriteExecute", "ProcSubset", "PrivateUsers"):
        assert key not in service, key
    allowed = {v.split()[0]: v.split()[1] for v in service["DeviceAllow"]}
    for dev in ("char-nvidia-frontend", "char-nvidia-uvm", "/dev/nvidiactl", "/dev/nvidia-uvm"):
        assert "r" in allowed[dev] and "w" in allowed[dev], dev
    assert "/dev/nvidia-modeset" in allowed
    for spec in allowed:  # globs only work on char-/block- group names (resource-control(5))
        assert spec.startswith(("char-", "block-")) or "*" not in spec, spec


ENV_LINE = re.compile(r"^#?(RINGRIFT_DAEMON_[A-Z0-9_]+)=(.*)$")


def test_env_example_names_only_real_settings() -> None:
    seen = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        m = ENV_LINE.match(line.strip())
        if m:
            seen[m.group(1)] = m.group(2)
    assert "RINGRIFT_DAEMON_REDIS__PASSWORD" in seen
    assert "RINGRIFT_DAEMON_REDIS__PASSWORD_FILE" in seen
    assert "not-a-real-secret" in seen["RINGRIFT_DAEMON_REDIS__PASSWORD"]
    for name, value in seen.items():
        # Each documented variable is accepted by the real settings loader on its own.
        settings_from_mapping({}, {name: value})
    # Together, too (the example is coherent).
    s = settings_from_mapping({}, seen)
    assert s.http.host == "127.0.0.1"
    assert s.http.port == 9464
    assert s.redis is not None
    assert s.redis.password is not None
    assert s.training.grace + s.schedule.drain_timeout < 150
