"""The settings a script's call uses: the ones a command would (DESIGN 10).

``RINGRIFT_DAEMON_CONFIG`` names the settings file, else ``./config.yaml``, else the built-in
defaults; ``RINGRIFT_DAEMON_*`` overrides apply as for every command. Upstream's ``REDIS_URL``
names a Redis when the settings name none. This is the edge for scripts (as ``cli.main`` is
for commands): the only place below the CLI that reads ``os.environ``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from daemon.settings import ENV_PREFIX, RedisSettings, Settings, SettingsError, load_settings

CONFIG_ENV = f"{ENV_PREFIX}CONFIG"
UPSTREAM_REDIS_ENV = "REDIS_URL"

__all__ = ["CONFIG_ENV", "UPSTREAM_REDIS_ENV", "script_environ", "script_settings"]


def script_environ(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment a script's objects get (a copy; the trainer's child env comes from it)."""
    return dict(os.environ if environ is None else environ)


def script_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Settings as a command would load them, plus ``REDIS_URL`` when no Redis is configured."""
    env = script_environ(environ)
    path = env.pop(CONFIG_ENV, None)  # names the file; it is not a settings field
    settings = load_settings(Path(path) if path else None, env)
    url = env.get(UPSTREAM_REDIS_ENV)
    if settings.redis is None and url:
        try:
            redis = RedisSettings(url=url)
        except ValueError as e:
            raise SettingsError(f"{UPSTREAM_REDIS_ENV}: {e}") from None
        settings = settings.model_copy(update={"redis": redis})
    return settings
