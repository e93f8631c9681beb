"""Chaos: Redis down at start, down mid-run, restarted empty, slow.

Every scenario runs an in-process service (real redis-server, real SQLite, the
real trainer subprocess) and checks: nothing registered from a lost lease, no
orphan trainer, the right alert / metric, and the service keeps serving.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml
from structlog.testing import capture_logs

from daemon.selfplay_sim import write_games
from daemon.settings import settings_from_mapping
from tests.chaos._redis_helpers import (
    DelayProxy,
    alerts_of,
    assert_no_orphans,
    chaos_mapping,
    chaos_settings,
    metric,
    running_service,
    wait_for,
)
from tests.support.redis_server import RedisServer

KEY = "square8_2p"
OTHER = "hex8_2p"


def _games(tmp: Path, keys: tuple[str, ...] = (KEY,), n: int = 30) -> Path:
    db = tmp / "games.db"
    for i, key in enumerate(keys):
        write_games(db, key, n, seed=11 + i)
    return db


async def test_redis_down_at_start_fails_closed_then_recovers(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    db = _games(tmp_path)
    redis_server.stop()  # our own server, so nothing else can be listening on its port
    mapping = chaos_mapping(
        tmp_path, configs=[KEY], game_dbs=[str(db)], redis_url=redis_server.url, backend="redis"
    )
    settings = settings_from_mapping(mapping, {})
    async with running_service(settings) as service:
        report = await service.tick(datetime.now(UTC))
        assert report.dispatched == []
        view = service.app.view
        assert view.lock_backend == "redis"
        assert (
            "unreachable" in view.lock_backend_reason and str(redis_server.port) in view.lock_backend_reason
        )
        (alert,) = alerts_of(service, "lock_unavailable")
        assert alert["severity"] == "critical" and "unreachable" in alert["message"], alert
        assert metric(service, "ringrift_training_alerts_critical") >= 1
        assert "lock unavailable" in report.decisions[KEY].reason, report.decisions[KEY].reason
        assert service.app.models.list_models(config=KEY) == []
        assert service.app.journal.recent(KEY) == []

        # `status --json` (a separate process, as an operator would run it) tells the same story.
        cfg = tmp_path / "status.yaml"
        cfg.write_text(yaml.safe_dump(mapping))
        out = subprocess.run(
            [sys.executable, "-m", "daemon", "status", "--json", "--config", str(cfg)],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert out.returncode == 0, out.stderr[-2000:]
        status = json.loads(out.stdout.strip().splitlines()[-1])
        kinds = {a["kind"] for a in status["alerts"]}
        assert "lock_unavailable" in kinds, status
        assert "unreachable" in status["lock_backend_reason"], status

        # Redis comes back: the next tick trains, and the alert resolves.
        redis_server.start()
        report = await service.tick(datetime.now(UTC))
        assert report.dispatched == [KEY], report.decisions[KEY].reason
        (result,) = await service.wait_runs()
        assert result.state == "succeeded", result.message
        assert result.lock_backend == "redis"
        service.evaluator.evaluate_health(datetime.now(UTC))
        assert alerts_of(service, "lock_unavailable") == [], service.app.view.alerts
    assert_no_orphans(tmp_path)


async def test_redis_down_at_start_auto_falls_back_to_file(tmp_path: Path, redis_server: RedisServer) -> None:
    db = _games(tmp_path)
    redis_server.stop()
    settings = chaos_settings(
        tmp_path, configs=[KEY], game_dbs=[str(db)], redis_url=redis_server.url, backend="auto"
    )
    with capture_logs() as logs:
        async with running_service(settings) as service:
            assert service.app.view.lock_backend == "file"
            assert "fell back to file" in service.app.view.lock_backend_reason
            assert metric(service, "ringrift_lock_backend", backend="file") == 1
            report = await service.tick(datetime.now(UTC))
            assert report.dispatched == [KEY]
            (result,) = await service.wait_runs()
            assert result.state == "succeeded", result.message
            assert result.lock_backend == "file"
            assert [m.model_id for m in service.app.models.list_models(config=KEY)] == [result.model_id]
            assert alerts_of(service, "lock_unavailable") == []
    fallback = [e for e in logs if e["event"] == "lock.backend_fallback"]
    assert fallback and "unreachable" in fallback[0]["reason"], [e["event"] for e in logs]
    assert_no_orphans(tmp_path)


async def test_redis_killed_mid_run_interrupts_and_registers_nothing(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    db = _games(tmp_path)
    settings = chaos_settings(
        tmp_path,
        configs=[KEY],
        game_dbs=[str(db)],
        redis_url=redis_server.url,
        backend="redis",
        ttl=1.5,
        epochs=5000,  # far longer than the test: only the lease loss can end it
    )
    async with running_service(settings) as service:
        assert (await service.tick(datetime.now(UTC))).dispatched == [KEY]
        await wait_for(lambda: KEY in service.pipeline.progress, 60, "the trainer's first epoch")
        token = service.pipeline.active[KEY]["fencing_token"]
        redis_server.stop()  # SIGKILL while the run holds the lease
        (result,) = await service.wait_runs()
        assert result.state == "interrupted", (result.state, result.message)
        assert "lease lost" in result.message
        assert result.model_id is None and result.fencing_token == token
        assert service.app.models.list_models(config=KEY) == []
        assert service.app.models.highest_token(KEY) == 0  # the registry never accepted that token
        assert metric(service, "ringrift_lock_lease_lost_total", config=KEY) == 1
        assert metric(service, "ringrift_training_runs_total", config=KEY, outcome="interrupted") == 1
        assert metric(service, "ringrift_training_runs_total", config=KEY, outcome="succeeded") == 0
        (run,) = service.app.journal.recent(KEY)
        assert run.state == "interrupted" and run.model_id is None
        assert_no_orphans(tmp_path)  # the trainer group was stopped while the service runs on
        # The service is still up and deciding (and refuses to run without a lock).
        later = datetime.now(UTC) + timedelta(hours=2)
        report = await service.tick(later)
        assert report.dispatched == [] and "lock unavailable" in report.decisions[KEY].reason


async def test_redis_restarted_empty_tokens_keep_increasing(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    db = _games(tmp_path)
    settings = chaos_settings(
        tmp_path, configs=[KEY], game_dbs=[str(db)], redis_url=redis_server.url, backend="redis"
    )
    async with running_service(settings) as service:
        assert (await service.tick(datetime.now(UTC))).dispatched == [KEY]
        (first,) = await service.wait_runs()
        assert first.state == "succeeded", first.message
        assert first.fencing_token is not None

        redis_server.stop()
        redis_server.start()  # empty: no fence counter, no run records

        write_games(db, KEY, 10, seed=99)
        second = await service.pipeline.run_training(KEY, force=True, reason="after restart")
        assert second.state == "succeeded", second.message
        assert second.fencing_token is not None and second.fencing_token > first.fencing_token
        models = sorted(service.app.models.list_models(config=KEY), key=lambda m: m.created_at)
        assert [m.fencing_token for m in models] == [first.fencing_token, second.fencing_token]
        assert service.app.models.highest_token(KEY) == second.fencing_token
    assert_no_orphans(tmp_path)


async def test_redis_slow_below_ttl_keeps_lease_beyond_ttl_loses_it(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    db = _games(tmp_path, (KEY, OTHER))
    proxy = DelayProxy(redis_server.port)
    proxy.start()
    try:
        settings = chaos_settings(
            tmp_path,
            configs=[KEY, OTHER],
            game_dbs=[str(db)],
            redis_url=proxy.url,
            backend="redis",
            ttl=1.5,
            epochs=60,
        )
        async with running_service(settings) as service:
            # Below the TTL: ~0.1 s per round trip. Every renewal is late but in time.
            proxy.delay = 0.05
            first_key = (await service.tick(datetime.now(UTC))).dispatched[0]
            (first,) = await service.wait_runs()
            assert first.state == "succeeded", first.message
            assert metric(service, "ringrift_lock_lease_lost_total", config=first_key) == 0

            # Beyond the TTL: a round trip takes longer than the lease; the run must stop.
            proxy.delay = 0.0
            second_key = (await service.tick(datetime.now(UTC))).dispatched[0]
            assert second_key != first_key
            await wait_for(lambda: second_key in service.pipeline.progress, 60, "the trainer's first epoch")
            proxy.delay = 2.0
            (first_again, second) = await service.wait_runs()
            assert first_again is first
            assert second.state == "interrupted", (second.state, second.message)
            assert "lease lost" in second.message
            assert service.app.models.list_models(config=second_key) == []
            assert len(service.app.models.list_models(config=first_key)) == 1
            assert metric(service, "ringrift_lock_lease_lost_total", config=second_key) == 1
            assert_no_orphans(tmp_path)
            proxy.delay = 0.0
    finally:
        proxy.close()
    assert_no_orphans(tmp_path)
