"""Fuzz: settings mappings, environment overrides and config keys never crash, always a typed error.

``settings_from_mapping`` either returns ``Settings`` or raises ``SettingsError``
with one line naming a field path; ``validate_config_key`` accepts exactly the
12 keys; every place a key enters (locks, export, registry, settings) refuses
traversal, unicode look-alikes, NUL bytes and trailing newlines.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.keys import ALL_CONFIG_KEYS, InvalidConfigKey, parse_config_key, validate_config_key
from daemon.locks.names import InvalidLockName, file_stem, redis_keys, validate_lock_name
from daemon.settings import Settings, SettingsError, settings_from_mapping

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

SECTIONS = [
    "redis",
    "locks",
    "http",
    "schedule",
    "triggers",
    "curriculum",
    "health",
    "export",
    "training",
    "demo",
]
TOP_KEYS = ["data_dir", "game_dbs", "configs", *SECTIONS]
FIELDS = [
    "url", "ttl", "key_prefix", "backend", "host", "port", "enabled", "poll_interval", "drain_timeout",
    "freshness_threshold", "min_win_rate", "window", "stalled_after", "encoder", "history_length",
    "device", "epochs", "batch_size", "channels", "config", "rate", "db", "password_file",
]  # fmt: skip

BAD_KEYS = [
    "../../x_2p",
    "square8_2p/../../etc",
    "../square8_2p",
    "square8_2p/..",
    "/etc/passwd",
    "square8_2p\x00",
    "square8\x00_2p",
    "square8_2p\n",
    " square8_2p",
    "SQUARE8_2P",
    "square\uff18_2p",  # full-width digit 8
    "\u0455quare8_2p",  # Cyrillic dze looks like s
    "square8_2p\u200b",  # zero-width space
    "square8_5p",
    "sq8_2p",
    "",
    "training:square8_2p",
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(
        ["square8_2p", "../../x_2p", "redis://127.0.0.1:1/0", "file", "auto", "cpu", "-1", "1e9"]
    ),
)
# Control and line-separator characters in key names: see test_control_characters_in_key_names.
printable = st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), max_size=10)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.one_of(st.sampled_from(FIELDS), printable), inner, max_size=4)
    ),
    max_leaves=12,
)
keys = st.one_of(st.sampled_from(TOP_KEYS), printable, st.integers(), st.none())
mappings = st.dictionaries(keys, values, max_size=5)


def _check_error(e: SettingsError) -> None:
    msg = str(e)
    assert msg and len(msg.splitlines()) == 1, msg
    assert "Traceback" not in msg


@FAST
@given(mappings)
def test_random_mapping_is_settings_or_settings_error(data: dict[Any, Any]) -> None:
    try:
        s = settings_from_mapping(data, {})
    except SettingsError as e:
        _check_error(e)
        assert ":" in str(e)  # "<path>: <problem>"
    else:
        assert isinstance(s, Settings)
        assert all(k in ALL_CONFIG_KEYS for k in s.configs)


@pytest.mark.parametrize("key", ["a\nb", "x\x1ey", "p\u2028q"])
def test_control_characters_in_key_names_stay_on_one_line(key: str) -> None:
    with pytest.raises(SettingsError) as info:
        settings_from_mapping({"http": {key: 1}}, {})
    assert len(str(info.value).splitlines()) == 1, str(info.value)


@FAST
@given(st.one_of(scalars, st.lists(scalars, max_size=3)))
def test_non_mapping_root_is_refused(data: Any) -> None:
    if data is None:
        assert isinstance(settings_from_mapping(data, {}), Settings)
        return
    with pytest.raises(SettingsError, match="<root>"):
        settings_from_mapping(data, {})


env_names = st.lists(
    st.sampled_from(["HTTP", "PORT", "REDIS", "URL", "TTL", "LOCKS", "BACKEND", "CONFIGS", "", "X"]),
    min_size=1,
    max_size=3,
).map(lambda parts: "RINGRIFT_DAEMON_" + "__".join(parts))


@FAST
@given(
    st.dictionaries(env_names, st.text(max_size=30), max_size=4),
    st.dictionaries(st.sampled_from(TOP_KEYS), values, max_size=3),
)
def test_random_environment_overrides(env: dict[str, str], data: dict[str, Any]) -> None:
    try:
        settings_from_mapping(data, env)
    except SettingsError as e:
        _check_error(e)


@pytest.mark.parametrize("bad", BAD_KEYS)
def test_bad_key_refused_in_settings_configs(bad: str) -> None:
    with pytest.raises(SettingsError, match=r"configs\.0"):
        settings_from_mapping({"configs": [bad]}, {})
    with pytest.raises(SettingsError, match=r"demo\.config"):
        settings_from_mapping({"demo": {"config": bad}}, {})


@FAST
@given(st.text(max_size=24))
def test_validate_config_key_accepts_exactly_the_twelve(key: str) -> None:
    if key in ALL_CONFIG_KEYS:
        assert validate_config_key(key) == key
        assert parse_config_key(key)[1] in (2, 3, 4)
    else:
        with pytest.raises(InvalidConfigKey):
            validate_config_key(key)


@pytest.mark.parametrize("bad", [*BAD_KEYS, None, 2, b"square8_2p", ["square8_2p"]])
def test_bad_key_refused_by_validate_and_lock_names(bad: Any) -> None:
    with pytest.raises(InvalidConfigKey):
        validate_config_key(bad)
    name = f"training:{bad}" if isinstance(bad, str) else bad
    with pytest.raises(InvalidLockName):
        validate_lock_name(name)
    with pytest.raises(InvalidLockName):
        file_stem(name)
    with pytest.raises(InvalidLockName):
        redis_keys("ringrift:", name)


@FAST
@given(st.text(max_size=30))
def test_lock_names_never_contain_path_or_control_characters(name: str) -> None:
    try:
        ok = validate_lock_name(name)
    except InvalidLockName:
        return
    stem = file_stem(ok)
    assert "/" not in stem and "\x00" not in stem and ".." not in stem
    assert stem.isascii() and stem.isprintable()


@pytest.mark.parametrize("bad", BAD_KEYS)
def test_bad_key_refused_by_distributed_lock(bad: str, tmp_path: Path) -> None:
    from daemon.locks import DistributedLock

    with pytest.raises(InvalidLockName):
        DistributedLock(f"training:{bad}", backend="file", lock_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("bad", BAD_KEYS)
def test_bad_key_refused_by_export_before_any_file(bad: str, tmp_path: Path) -> None:
    from daemon.export.job import run_export

    s = settings_from_mapping({"data_dir": str(tmp_path / "data"), "game_dbs": [str(tmp_path / "x.db")]}, {})
    with pytest.raises(InvalidConfigKey):
        run_export(s, bad)
    assert not (tmp_path / "data").exists()
    assert not any(p.suffix == ".npz" for p in tmp_path.parent.rglob("*x_2p*"))


@pytest.mark.parametrize("bad", ["../../x", "square8/../..", "sq\x008", "hex\uff18", ""])
def test_bad_board_refused_by_registry(bad: str, tmp_path: Path) -> None:
    from daemon.registry import ModelRegistry

    model = tmp_path / "m.pt"
    model.write_bytes(b"not really a model")
    with ModelRegistry(tmp_path / "reg") as reg:
        with pytest.raises(ValueError):
            reg.register(model, bad, 2, {}, {}, [], None, fencing_token=1)
        for key in BAD_KEYS[:8]:
            with pytest.raises(ValueError):
                reg.list_models(config=key)
            with pytest.raises(ValueError):
                reg.get_latest(key)
        assert reg.list_models() == []
    assert not any(p.name == "x" for p in tmp_path.rglob("*"))
