"""``registry.*`` settings: defaults under data_dir, secrets only from the environment or a file,
and ``ModelRegistry.from_settings`` building the registry they describe (SQLite and PostgreSQL)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from daemon.registry import ModelRegistry
from daemon.settings import SettingsError, settings_from_mapping


def test_a_relative_data_dir_keeps_the_registry_under_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The shipped config says ``data_dir: data``: the registry file must land in ./data, not /data.
    monkeypatch.chdir(tmp_path)
    s = settings_from_mapping({"data_dir": "data"})
    assert s.registry_url == f"sqlite:///{tmp_path}/data/model_registry/registry.db"
    with ModelRegistry.from_settings(s) as reg:
        f = tmp_path / "m.pt"
        f.write_bytes(os.urandom(100))
        reg.register(f, "square8", 2)
    assert (tmp_path / "data" / "model_registry" / "registry.db").is_file()


def test_defaults_keep_the_single_node_layout(tmp_path: Path) -> None:
    s = settings_from_mapping({"data_dir": str(tmp_path)})
    assert s.registry.url is None and s.registry.store is None
    assert s.registry_url == f"sqlite:///{tmp_path}/model_registry/registry.db"
    assert s.registry_store == f"{tmp_path}/model_registry/objects"
    assert s.registry_dir == tmp_path / "model_registry"
    with ModelRegistry.from_settings(s) as reg:
        f = tmp_path / "m.pt"
        f.write_bytes(os.urandom(100))
        mid = reg.register(f, "square8", 2)
        path = Path(reg.require_model(mid).path)
        assert path.parent == tmp_path / "model_registry" / "objects" / "sha256" == reg.objects_dir
        assert (tmp_path / "model_registry" / "registry.db").is_file()
        assert reg.describe()["url"] == s.registry_url


def test_secrets_never_from_yaml() -> None:
    with pytest.raises(SettingsError, match=r"registry\.password: secrets are not read from the config file; "
                       r"use RINGRIFT_DAEMON_REGISTRY__PASSWORD or registry.password_file"):  # fmt: skip
        settings_from_mapping({"registry": {"password": "hunter2"}})
    with pytest.raises(SettingsError, match=r"registry\.url: contains a password"):
        settings_from_mapping({"registry": {"url": "postgresql://u:hunter2@db/reg"}})
    with pytest.raises(SettingsError, match=r"registry\.url: must start with sqlite:/// or postgresql://"):
        settings_from_mapping({"registry": {"url": "mysql://db/reg"}})
    with pytest.raises(SettingsError, match=r"registry\.store"):
        settings_from_mapping({"registry": {"store": "gs://bucket"}})
    with pytest.raises(SettingsError, match=r"registry\.pool_size"):
        settings_from_mapping({"registry": {"pool_size": 0}})


def test_password_from_env_or_file(tmp_path: Path) -> None:
    s = settings_from_mapping(
        {"registry": {"url": "postgresql://ringrift@db/reg"}},
        {"RINGRIFT_DAEMON_REGISTRY__PASSWORD": "s3cr3t: with colon"},
    )
    assert s.registry.resolved_password() == "s3cr3t: with colon"
    assert "s3cr3t" not in repr(s.registry)
    pw = tmp_path / "pw"
    pw.write_text("from-file\n")
    s = settings_from_mapping({"registry": {"password_file": str(pw), "store": "s3://b/p"}})
    assert s.registry.resolved_password() == "from-file" and s.registry_store == "s3://b/p"
    assert settings_from_mapping({}).registry.resolved_password() is None


def test_from_settings_on_postgres(tmp_path: Path, postgres_url: str) -> None:
    s = settings_from_mapping(
        {"data_dir": str(tmp_path), "registry": {"url": postgres_url, "pool_size": 2, "lock_timeout": 7}},
        {"RINGRIFT_DAEMON_REGISTRY__PASSWORD": "unused-with-trust-auth"},
    )
    reg = ModelRegistry.from_settings(s, require_token=True)
    with reg:
        f = tmp_path / "m.pt"
        f.write_bytes(os.urandom(100))
        assert reg.register(f, "hex8", 2, fencing_token=1) == "hex8_2p-v1"
        assert reg.describe()["url"] == postgres_url and reg.require_token
        opts = reg._records.options  # type: ignore[attr-defined]
        assert (opts.pool_size, opts.lock_timeout, opts.password) == (2, 7.0, "unused-with-trust-auth")
        with reg._records._connections().connection() as conn:  # type: ignore[attr-defined]
            row = conn.execute(
                "SELECT current_setting('lock_timeout') AS l, current_setting('statement_timeout') AS s, "
                "current_setting('idle_in_transaction_session_timeout') AS i"
            ).fetchone()
        assert (row["l"], row["s"], row["i"]) == ("7s", "30s", "2min")
