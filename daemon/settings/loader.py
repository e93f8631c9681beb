"""The one typed ``Settings`` object: YAML file + ``RINGRIFT_DAEMON_*`` environment.

Built once at the edge (``cli.main``) and passed in; nothing below ``main``
reads the environment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import ValidationError, field_validator

from daemon.keys import ALL_CONFIG_KEYS
from daemon.settings.sections import (
    DEFAULT_CONFIG_PATH,
    ENV_NESTING,
    ENV_PREFIX,
    ConfigKey,
    CurriculumSettings,
    DemoSettings,
    ExportSection,
    HealthSettings,
    HttpSettings,
    LockSettings,
    PromotionSettings,
    RedisSettings,
    RegistrySettings,
    ScheduleSettings,
    SettingsError,
    TrainingSettings,
    TriggerSettings,
    _Section,
)
from daemon.settings.strict_yaml import (
    SettingsFileError,
    check_tree,
    one_line,
    parse_yaml,
    read_settings_text,
)


class Settings(_Section):
    data_dir: Path = Path("data")
    game_dbs: tuple[str, ...] = ("data/games/*.db",)
    configs: tuple[ConfigKey, ...] = ALL_CONFIG_KEYS
    redis: RedisSettings | None = None
    registry: RegistrySettings = RegistrySettings()
    locks: LockSettings = LockSettings()
    http: HttpSettings = HttpSettings()
    schedule: ScheduleSettings = ScheduleSettings()
    triggers: TriggerSettings = TriggerSettings()
    curriculum: CurriculumSettings = CurriculumSettings()
    health: HealthSettings = HealthSettings()
    export: ExportSection = ExportSection()
    training: TrainingSettings = TrainingSettings()
    promotion: PromotionSettings = PromotionSettings()
    demo: DemoSettings = DemoSettings()

    @field_validator("configs")
    @classmethod
    def _keys(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(v)) != len(v):
            raise ValueError("duplicate config keys")
        return v

    # Derived locations (all under data_dir).
    @property
    def state_dir(self) -> Path:
        return self.data_dir / "state"

    @property
    def training_dir(self) -> Path:
        return self.data_dir / "training"

    @property
    def lock_dir(self) -> Path:
        return self.data_dir / "locks"

    @property
    def registry_dir(self) -> Path:
        return self.data_dir / "model_registry"

    @property
    def registry_url(self) -> str:
        # Absolute: "sqlite:///data/..." would name /data/... (the URL's path is absolute).
        return self.registry.url or f"sqlite:///{(self.registry_dir / 'registry.db').absolute()}"

    @property
    def registry_store(self) -> str:
        return self.registry.store or str(self.registry_dir / "objects")

    @property
    def runs_dir(self) -> Path:
        return self.data_dir / "runs"


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """``RINGRIFT_DAEMON_HTTP__PORT=9464`` -> ``{"http": {"port": 9464}}`` (values parsed as YAML)."""
    tree: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        path = [p.lower() for p in name[len(ENV_PREFIX) :].split(ENV_NESTING)]
        if not all(path):
            raise SettingsError(f"{name}: empty level in environment override")
        value: Any = raw if path[-1] == "password" or not raw else _env_value(raw)
        node = tree
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise SettingsError(f"{name}: conflicts with another override")
            node = child
        node[path[-1]] = value
    return tree


def _env_value(raw: str) -> Any:
    """Scalars and ``[a, b]`` lists are parsed as YAML; anything else (``ringrift:``) stays a string."""
    try:
        value = parse_yaml(raw)
    except SettingsFileError:
        return raw
    if isinstance(value, dict) and not raw.lstrip().startswith("{"):
        return raw
    return value


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = _merge(dict(out[k]), v)
        elif isinstance(v, Mapping) and out.get(k) is None:
            out[k] = dict(v)
        else:
            out[k] = v
    return out


def _reject_yaml_secrets(data: Mapping[str, Any]) -> None:
    for section in ("redis", "registry"):
        values = data.get(section)
        if not isinstance(values, Mapping):
            continue
        env = f"{ENV_PREFIX}{section.upper()}{ENV_NESTING}PASSWORD"
        if "password" in values:
            raise SettingsError(
                f"{section}.password: secrets are not read from the config file; "
                f"use {env} or {section}.password_file"
            )
        url = values.get("url")
        try:
            password = urlsplit(url).password if isinstance(url, str) else None
        except ValueError:  # not a URL at all: the field's own validator says so
            password = None
        if password:
            raise SettingsError(
                f"{section}.url: contains a password; move it to {env} or {section}.password_file"
            )


def _format_error(err: ValidationError) -> str:
    first = err.errors()[0]
    # repr() for any part that is not a plain printable name, so the message stays on one line.
    path = ".".join(str(p) if str(p).isprintable() else repr(p) for p in first["loc"]) or "<root>"
    msg = first["msg"].removeprefix("Value error, ")
    value = first.get("input")
    shown = one_line(repr(value), 120)  # a huge bad value must not become a huge line
    if first["type"] == "extra_forbidden":
        return f"{path}: unknown key (got {shown})"
    if repr(value) in msg:  # the message already names the bad value
        return one_line(f"{path}: {msg}")
    return one_line(f"{path}: {msg} (got {shown})")


def settings_from_mapping(
    data: Mapping[str, Any] | None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Validate a settings mapping plus environment overrides; raise :class:`SettingsError`."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise SettingsError(f"<root>: expected a mapping of settings (got {type(data).__name__})")
    _reject_yaml_secrets(data)
    merged = _merge(dict(data), _env_overrides(environ or {}))
    bad = check_tree(merged)
    if bad is not None:
        raise SettingsError(bad)
    try:
        return Settings.model_validate(merged)
    except ValidationError as e:
        raise SettingsError(_format_error(e)) from None


def load_settings(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Load ``path`` (default ``config.yaml``; missing default file = built-in defaults).

    The file is read with the bounds of :mod:`daemon.settings.strict_yaml` (size, UTF-8, strict YAML).
    """
    env = os.environ if environ is None else environ
    explicit = path is not None
    path = path or DEFAULT_CONFIG_PATH
    shown = one_line(repr(str(path))[1:-1], 200)
    try:
        text = read_settings_text(path)
        if text is None and explicit:
            raise SettingsError(f"{shown}: settings file not found")
        data = parse_yaml(text) if text else None
    except SettingsFileError as e:
        raise SettingsError(f"{shown}: {e}") from None
    return settings_from_mapping(data, env)
