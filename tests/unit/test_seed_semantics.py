"""DESIGN 10's semantics, one by one, including the cases the design document implies."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from daemon.api import (
    DistributedLock,
    TrainingTriggers,
    TriggerConfig,
    register_trained_model,
    script_settings,
)
from daemon.decide.health import TrainingHealthMonitor
from daemon.decide.triggers import TrainingTriggers as CoreTriggers
from daemon.locks.names import InvalidLockName, file_stem, redis_keys, validate_lock_name
from daemon.registry import ModelRegistry
from daemon.settings import SettingsError, settings_from_mapping

T0 = datetime(2026, 1, 1, tzinfo=UTC)
KEY = "square8_2p"


def triggers() -> CoreTriggers:
    return CoreTriggers(TriggerConfig(freshness_threshold=500, staleness_hours=6.0, min_win_rate=0.45))


# -- triggers: games_count is the total; freshness counts from the games at the last training ----
def test_document_example_trains_on_games_count() -> None:
    t = triggers()
    t.update_config_state(KEY, games_count=600, win_rate=0.52, model_count=5)
    d = t.should_train(KEY, now=T0)
    assert d.should_train and d.reason == "train: 600 new games >= 500"
    assert d.signal_scores["data_freshness"] == 1.0 and d.priority > 0


def test_trained_at_600_now_900_is_freshness_0_6() -> None:
    t = triggers()
    t.update_config_state(KEY, games_count=600, model_count=0)
    t.record_training_complete(KEY, games_at_training=600, now=T0)
    assert t.get_state(KEY).model_count == 1
    t.update_config_state(KEY, games_count=900)
    later = T0 + timedelta(hours=1)
    assert t.signal_scores(KEY, now=later)["data_freshness"] == pytest.approx(0.6)
    d = t.should_train(KEY, now=later)
    assert not d.should_train and "300 new games < 500" in d.reason
    t.update_config_state(KEY, games_count=1100)  # 500 since the training: full
    assert t.should_train(KEY, now=later).should_train


def test_training_complete_defaults_to_the_current_games() -> None:
    t = triggers()
    t.update_config_state(KEY, games_count=700, model_count=2)
    t.record_training_complete(KEY, now=T0)
    s = t.get_state(KEY)
    assert (s.games_at_training, s.new_games, s.model_count) == (700, 0, 3)
    assert s.last_training_time == T0.timestamp()


def test_explicit_new_games_still_wins() -> None:
    t = triggers()  # the service passes new_games itself (from its run journal)
    s = t.update_config_state(KEY, games_count=900, new_games=42, games_at_training=600)
    assert s.new_games == 42


def test_upstream_elo_keyword_is_accepted() -> None:
    t = triggers()
    assert t.update_config_state(KEY, games_count=10, elo=1650.0).elo == 1650.0
    with pytest.raises(ValueError, match="elo"):
        t.update_config_state(KEY, elo=float("nan"))


def test_state_round_trips_with_the_new_fields() -> None:
    t = triggers()
    s = t.update_config_state(KEY, games_count=5, games_at_training=2, elo=1500.0)
    assert type(s).from_json(s.to_json()) == s


def test_api_triggers_take_the_settings_defaults(tmp_path: Path) -> None:
    s = settings_from_mapping({"data_dir": str(tmp_path), "triggers": {"freshness_threshold": 50}})
    assert TrainingTriggers(settings=s).config.freshness_threshold == 50
    assert TrainingTriggers(TriggerConfig(), settings=s).config.freshness_threshold == 500


# -- health: a completed training counts a model -------------------------------------------------
def test_model_count_after_a_completed_training(tmp_path: Path) -> None:
    with TrainingHealthMonitor(tmp_path / "decide.db") as mon:
        mon.record_training_start(KEY, now=T0)
        mon.record_training_complete(KEY, success=False, now=T0)
        assert 'ringrift_training_model_count{config="square8_2p"}' not in mon.get_prometheus_metrics(now=T0)
        mon.record_training_complete(KEY, success=True, now=T0)
        text = mon.get_prometheus_metrics(now=T0)
        assert 'ringrift_training_model_count{config="square8_2p"} 1.0' in text
        mon.record_training_complete(KEY, success=True, now=T0, model_count=15)  # the registry's count
        assert 'ringrift_training_model_count{config="square8_2p"} 15.0' in mon.get_prometheus_metrics(now=T0)


# -- locks: {purpose}:{config} ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "name", ["training:square8_2p", "export:hex8_2p", "selfplay:square8_2p", "gc:hex8_4p"]
)
def test_purpose_config_names(name: str) -> None:
    assert validate_lock_name(name) == name
    assert file_stem(name) == name.replace(":", "_")
    assert redis_keys("ringrift:", name)[0] == f"ringrift:lock:{name}"


@pytest.mark.parametrize(
    "bad",
    ["export:hex8_9p", "export:square8:2p", "Export:hex8_2p", "ex_port:hex8_2p", "training:foo", ":hex8_2p"],
)
def test_bad_purpose_config_names(bad: str) -> None:
    with pytest.raises(InvalidLockName):
        validate_lock_name(bad)


def test_api_lock_is_file_without_redis_and_redis_when_configured(tmp_path: Path) -> None:
    plain = settings_from_mapping({"data_dir": str(tmp_path)})
    lock = DistributedLock("export:hex8_2p", settings=plain)
    assert lock.requested == "auto" and lock.redis_url is None and lock.lock_dir == tmp_path / "locks"
    with_redis = settings_from_mapping({"data_dir": str(tmp_path), "redis": {"url": "redis://127.0.0.1:1/0"}})
    lock = DistributedLock("training:square8_2p", settings=with_redis, backend="redis")
    assert lock.redis_url == "redis://127.0.0.1:1/0" and lock.requested == "redis"


# -- script settings: the file a command reads, REDIS_URL at the edge ----------------------------
def test_script_settings_read_the_config_env_and_redis_url(tmp_path: Path) -> None:
    cfg = tmp_path / "site.yaml"
    cfg.write_text(f"data_dir: {tmp_path / 'd'}\n")
    env = {"RINGRIFT_DAEMON_CONFIG": str(cfg), "REDIS_URL": "redis://10.0.0.5:6380/2"}
    s = script_settings(env)
    assert s.data_dir == tmp_path / "d"
    assert s.redis is not None and s.redis.url == "redis://10.0.0.5:6380/2"
    cfg.write_text("redis: {url: 'redis://127.0.0.1:7000/0'}\n")
    assert script_settings(env).redis.url == "redis://127.0.0.1:7000/0"  # type: ignore[union-attr]
    with pytest.raises(SettingsError, match="not found"):  # a named file must exist
        script_settings({"RINGRIFT_DAEMON_CONFIG": str(tmp_path / "none.yaml"), "REDIS_URL": "http://x"})
    cfg.write_text("")
    with pytest.raises(SettingsError, match="REDIS_URL"):
        script_settings({"RINGRIFT_DAEMON_CONFIG": str(cfg), "REDIS_URL": "http://x"})


# -- registry: external parents, data_hash always set, a relative data_dir stays relative ---------
def test_external_parent_and_data_hash_from_sources(tmp_path: Path) -> None:
    model = tmp_path / "model.pt"
    model.write_bytes(b"weights")
    db = tmp_path / "selfplay.db"
    db.write_bytes(b"games")
    s = settings_from_mapping({"data_dir": str(tmp_path / "data")})
    mid = register_trained_model(
        model,
        "square8",
        2,
        source_data_paths=[db, tmp_path / "gone.db"],
        parent_model_id="model_v3_20241210",
        settings=s,
    )
    with ModelRegistry.from_settings(s) as reg:
        rec = reg.get_model(mid)
    assert rec is not None and rec.parent_model_id == "model_v3_20241210" and rec.parent_external
    want = hashlib.sha256(
        f"{db}\t{hashlib.sha256(b'games').hexdigest()}\n{tmp_path / 'gone.db'}\tmissing\n".encode()
    ).hexdigest()
    assert rec.data_hash == want
    db.write_bytes(b"more games")  # other bytes, another hash
    mid2 = register_trained_model(model, "square8", 2, source_data_paths=[db], settings=s)
    with ModelRegistry.from_settings(s) as reg:
        assert reg.get_model(mid2).data_hash not in (None, want)  # type: ignore[union-attr]


def test_registry_of_a_relative_data_dir_is_under_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.pt").write_bytes(b"w")
    s = settings_from_mapping({})  # data_dir "data": sqlite:///data/... once named /data
    register_trained_model("m.pt", "hex8", 2, settings=s)
    assert (tmp_path / "data" / "model_registry" / "registry.db").is_file()


def test_feature_layout_setting() -> None:
    assert settings_from_mapping({}).export.feature_layout is None  # the encoder's own (cells)
    assert settings_from_mapping({"export": {"feature_layout": "dense"}}).export.feature_layout == "dense"
    with pytest.raises(SettingsError, match=r"export\.feature_layout"):
        settings_from_mapping({"export": {"feature_layout": "sparse"}})


def test_commands_read_the_settings_file_the_config_env_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from daemon.cli.main import main

    cfg = tmp_path / "site.yaml"
    cfg.write_text("http: {port: 9090}\n")  # refused by its validator: proves this file was read
    assert main(["status", "--json"], environ={"RINGRIFT_DAEMON_CONFIG": str(cfg)}) == 2
    assert "http.port: 9090 is Prometheus's own port" in capsys.readouterr().out
