"""End to end: games arrive -> the decision flips -> one run -> a registered model with
lineage to its data -> /metrics shows it -> a tick with no new data does nothing and says why.

Real SQLite, the real trainer subprocess (torch on CPU), real HTTP.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from daemon.selfplay_sim import GameFactory, connect_writer, insert_game, write_games
from daemon.service.app import build_app
from daemon.service.supervisor import Service
from daemon.settings import Settings, settings_from_mapping


def service_settings(tmp_path: Path, **over: Any) -> Settings:
    data: dict[str, Any] = {
        "data_dir": str(tmp_path / "data"),
        "game_dbs": [str(tmp_path / "games" / "*.db")],
        "configs": ["square8_2p", "hex8_2p"],
        "http": {"host": "127.0.0.1", "port": 0},
        "triggers": {"freshness_threshold": 200, "bootstrap_min_games": 60, "min_interval": 3600},
        "training": {"epochs": 2, "batch_size": 64, "channels": 8, "blocks": 1, "device": "cpu", "grace": 5},
        "schedule": {"drain_timeout": 5},
    }
    for k, v in over.items():
        data[k] = v
    return settings_from_mapping(data, {})


def sample_value(text: str, name: str, labels: dict[str, str]) -> float | None:
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return None


async def test_games_arrive_run_registers_and_metrics_show_it(tmp_path: Path) -> None:
    settings = service_settings(tmp_path)
    service = Service(build_app(settings, {}), handle_signals=False)
    await service.start()
    try:
        now = datetime.now(UTC)
        report = await service.tick(now)
        assert report.dispatched == []
        reason = report.decisions["square8_2p"].reason
        assert report.decisions["square8_2p"].should_train is False
        assert "0" in reason  # says which numbers block it

        db = tmp_path / "games" / "selfplay.db"
        usable = write_games(db, "square8_2p", 90, seed=1)
        assert usable >= 60
        report = await service.tick(datetime.now(UTC))
        decision = report.decisions["square8_2p"]
        assert decision.should_train, decision.reason
        assert report.dispatched == ["square8_2p"]
        assert report.decisions["hex8_2p"].should_train is False
        results = await service.wait_runs()
        assert len(results) == 1
        result = results[0]
        assert result.success, result.message
        assert result.state == "succeeded"
        assert result.model_id == "square8_2p-v1"

        # Lineage: the model row names its data by the sha256 of the exact training file.
        model = service.app.models.get_model(result.model_id)
        assert model is not None
        npz = settings.training_dir / "square8_2p.npz"
        assert model.data_hash == hashlib.sha256(npz.read_bytes()).hexdigest()
        assert model.run_id == result.run_id
        assert model.fencing_token == result.fencing_token is not None

        await service.decide(datetime.now(UTC))
        assert service.http is not None
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{service.http.bound_port}/metrics") as resp,
        ):
            assert resp.status == 200
            text = await resp.text()
        assert sample_value(text, "ringrift_training_model_count", {"config": "square8_2p"}) == 1
        assert (
            sample_value(
                text, "ringrift_training_runs_total", {"config": "square8_2p", "outcome": "succeeded"}
            )
            == 1
        )
        assert sample_value(text, "ringrift_lock_backend", {"backend": "file"}) == 1

        # No new data: nothing happens, and the reason says why.
        report = await service.tick(datetime.now(UTC))
        assert report.dispatched == []
        d = report.decisions["square8_2p"]
        assert d.should_train is False
        assert "new games" in d.reason or "min" in d.reason, d.reason

        # Evaluation games of the current model feed the curriculum (each game once).
        factory = GameFactory("square8_2p", seed=99, source="gauntlet")
        conn = connect_writer(db)
        try:
            for i in range(8):
                rows = factory.make("completed")
                winner = rows["game"]["winner"]
                seat = winner if i < 2 else (2 if winner == 1 else 1)  # the model won 2 of 8
                rows["game"]["metadata_json"] = json.dumps({"model_id": "square8_2p-v1", "model_seat": seat})
                insert_game(conn, rows)
        finally:
            conn.close()
        await service.tick(datetime.now(UTC))
        await service.tick(datetime.now(UTC))
        m = service.app.curriculum.get_config_metrics("square8_2p", now=datetime.now(UTC))
        assert m.games_recent == 8
        assert m.win_rate == 0.25
        assert service.app.view.configs["square8_2p"].win_rate == 0.25

        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{service.http.bound_port}/status") as resp,
        ):
            status = await resp.json()
        cfg = status["configs"]["square8_2p"]
        assert cfg["latest_model"] == "square8_2p-v1"
        assert cfg["should_train"] is False
        assert status["lock_backend"] == "file"
    finally:
        await service.drain()
        await service.close()
