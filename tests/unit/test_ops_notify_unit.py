"""Pure parts of daemon.service.notify: env parsing, watchdog gating arithmetic, child env."""

from __future__ import annotations

import pytest

from daemon.service.notify import NOTIFY_ENV_VARS, SystemdNotifier, Watchdog, child_env


def test_child_env_strips_notify_variables_only() -> None:
    env = {"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "1", "WATCHDOG_PID": "2", "PATH": "/bin", "A": "b"}
    out = child_env(env)
    assert out == {"PATH": "/bin", "A": "b"}
    assert env["NOTIFY_SOCKET"] == "/run/x"  # input untouched
    assert set(NOTIFY_ENV_VARS) == {"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"}


def test_from_environ_parses_and_halves_interval() -> None:
    n = SystemdNotifier.from_environ(
        {"NOTIFY_SOCKET": "/run/n", "WATCHDOG_USEC": "120000000", "WATCHDOG_PID": "42"}, pid=42
    )
    assert n.enabled and n.watchdog_enabled
    assert n.watchdog_timeout == 120.0
    assert n.watchdog_interval == 60.0


@pytest.mark.parametrize(
    ("env", "pid", "enabled", "wd"),
    [
        ({}, 1, False, False),
        ({"NOTIFY_SOCKET": ""}, 1, False, False),
        ({"NOTIFY_SOCKET": "/run/n"}, 1, True, False),
        ({"NOTIFY_SOCKET": "/run/n", "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "7"}, 8, True, False),
        ({"NOTIFY_SOCKET": "/run/n", "WATCHDOG_USEC": "junk", "WATCHDOG_PID": "8"}, 8, True, False),
        ({"NOTIFY_SOCKET": "/run/n", "WATCHDOG_USEC": "0", "WATCHDOG_PID": "8"}, 8, True, False),
        ({"NOTIFY_SOCKET": "@abstract", "WATCHDOG_USEC": "1000000"}, 8, True, True),
        ({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "8"}, 8, False, False),
        ({"NOTIFY_SOCKET": "vsock:2:1234"}, 1, False, False),
    ],
)
def test_enablement(env: dict[str, str], pid: int, enabled: bool, wd: bool) -> None:
    n = SystemdNotifier.from_environ(env, pid=pid)
    assert n.enabled is enabled
    assert n.watchdog_enabled is wd
    assert (n.watchdog_interval is not None) is wd


def test_unset_is_noop_and_opens_nothing() -> None:
    n = SystemdNotifier(None, None, None)
    with n:
        assert n.ready("x") is False
        assert n.status("x") is False
        assert n.stopping() is False
        assert n.watchdog() is False
        assert n.extend_timeout(1) is False
        assert n._sock is None
    wd = Watchdog(n)
    wd.beat(1.0)
    assert wd.maybe_ping(1.0) is False


def test_extend_timeout_rejects_non_positive() -> None:
    with pytest.raises(ValueError, match="usec must be positive"):
        SystemdNotifier(None, None, None).extend_timeout(0)


def test_watchdog_defaults_from_interval() -> None:
    n = SystemdNotifier("/run/n", 120_000_000, 5, pid=5)
    wd = Watchdog(n)
    assert wd.progress_window == 120.0
    assert wd.ping_every == 30.0
    assert not wd.progressing(0.0)  # no beat yet: never "progressing"
    wd.beat(10.0)
    wd.beat(5.0)  # out-of-order beats never move progress backwards
    assert wd.last_beat == 10.0
    assert wd.progressing(130.0) and not wd.progressing(130.5)
