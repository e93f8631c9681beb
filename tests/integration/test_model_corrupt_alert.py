"""A corrupt registered object raises ``model_corrupt`` (critical for production) on the next
tick; ``registry verify`` after the repair resolves it. Real SQLite, real files, real service."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

from daemon.service.app import build_app
from daemon.service.supervisor import Service
from daemon.settings import settings_from_mapping

KEY = "square8_2p"


def _alerts(service: Service, now: datetime) -> dict[tuple[str | None, str], str]:
    report = service.app.health.get_health_status(now=now)
    return {(a.config, a.kind): a.severity for a in report.active_alerts}


async def test_corrupt_production_object_raises_and_verify_resolves(tmp_path: Path) -> None:
    settings = settings_from_mapping(
        {
            "data_dir": str(tmp_path / "data"),
            "game_dbs": [str(tmp_path / "games" / "*.db")],
            "configs": [KEY],
            "http": {"enabled": False},
        },
        {},
    )
    service = Service(build_app(settings, {}), handle_signals=False)
    await service.start()
    try:
        reg = service.app.models
        src = tmp_path / "m.pt"
        good = os.urandom(4096)
        src.write_bytes(good)
        mid = reg.register(src, "square8", 2)
        reg.promote(mid)
        now = datetime.now(UTC)
        await service.tick(now)
        assert (KEY, "model_corrupt") not in _alerts(service, now)

        obj = Path(reg.require_model(mid).path)
        obj.chmod(0o644)
        data = bytearray(obj.read_bytes())
        data[100] ^= 0xFF  # one flipped bit in the stored object
        obj.write_bytes(bytes(data))
        assert [p.model_id for p in reg.verify()] == [mid]  # marks it corrupt
        await service.tick(now)
        assert _alerts(service, now)[(KEY, "model_corrupt")] == "critical"
        assert reg.warm_start_parent(KEY) is None  # never a parent

        obj.write_bytes(good)  # restored from a backup
        assert reg.verify() == []
        await service.tick(now)
        assert (KEY, "model_corrupt") not in _alerts(service, now)
    finally:
        await service.drain()
        await service.close()
