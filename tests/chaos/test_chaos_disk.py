"""Disk full during export and during registration.

The "disk" is a per-file size limit (``RLIMIT_FSIZE``; a write past it fails with EFBIG, as a
full disk fails with ENOSPC) set in a ``ringrift-daemon train`` child process - portable, no
root or mount needed. For registration the limit is set at the moment the registry is called
(after the export and the trainer's checkpoint were written), below the checkpoint's size.
Each: the previous NPZ and registry are intact, no torn or temp file, the run failed with a
clear message, nothing was registered, the alert is raised, and no process is left.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon.selfplay_sim import write_games
from daemon.service.app import build_app
from tests.chaos._helpers import (
    assert_no_orphans,
    assert_no_torn_files,
    assert_npz_intact,
    assert_registry_matches_journal,
    child_environ,
    failure_alert,
    journal_runs,
    kill_test_processes,
    node_mapping,
    registry_rows,
    run_cli,
    settings_of,
    sha256_of,
    write_config,
)

KEY = "square8_2p"


@pytest.fixture(autouse=True)
def _kill_leftovers(tmp_path: Path) -> Iterator[None]:
    yield
    kill_test_processes(tmp_path)  # only after a failure is there anything left to end


FILE_TOO_LARGE = "File too large"  # strerror(EFBIG)


async def _first_model(tmp: Path) -> tuple[dict[str, Any], Path]:
    """One good run (export + model v1) in-process; returns the settings mapping and YAML path."""
    db = tmp / "games.db"
    write_games(db, KEY, 50, seed=1)
    data = node_mapping(tmp, db, [KEY])
    app = build_app(settings_of(data), child_environ())
    await app.start()
    try:
        result = await app.pipeline.run_training(KEY)
    finally:
        await app.close()
    assert result.success, result.message
    write_games(db, KEY, 20, seed=2)  # new games: the next export is a real one (cache miss)
    return data, write_config(tmp, data)


def _train_json(out: str) -> dict[str, Any]:
    lines = [ln for ln in out.splitlines() if ln.startswith("{") and '"config_key"' in ln]
    assert lines, out[-2000:]
    return dict(json.loads(lines[-1]))


def _health(cfg: Path) -> list[dict[str, Any]]:
    proc = run_cli(["--log-level", "ERROR", "health", "--json", "--config", str(cfg)])
    assert proc.returncode == 0, proc.stderr[-2000:]
    return list(json.loads(proc.stdout.strip().splitlines()[-1])["active_alerts"])


def _snapshot(settings: Any) -> dict[str, Any]:
    npz = settings.training_dir / f"{KEY}.npz"
    return {
        "npz_sha": sha256_of(npz),
        "npz_rows": assert_npz_intact(npz),
        "cache": (settings.training_dir / ".export_cache.json").read_bytes(),
        "rows": registry_rows(settings),
    }


async def test_disk_full_during_export(tmp_path: Path) -> None:
    data, cfg = await _first_model(tmp_path)
    settings = settings_of(data)
    before = _snapshot(settings)
    limit = 1 << 16  # far below the NPZ (~0.67 MB in format 3): the export's part files hit it
    assert settings.training_dir.joinpath(f"{KEY}.npz").stat().st_size > 4 * limit
    preamble = f"import resource\nresource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))"
    proc = run_cli(
        ["--log-level", "WARNING", "train", KEY, "--config", str(cfg), "--json"], preamble=preamble
    )
    assert proc.returncode == 1, (proc.stdout[-2000:], proc.stderr[-3000:])
    result = _train_json(proc.stdout)
    assert result["state"] == "failed" and result["model_id"] is None, result
    assert "ExportError" in result["message"] and FILE_TOO_LARGE in result["message"], result["message"]
    assert result["export_time"] > 0 and result["training_time"] == 0

    after = _snapshot(settings)
    assert after == before, "the previous NPZ, export cache or registry changed"
    runs = journal_runs(settings)
    assert [r["state"] for r in runs] == ["succeeded", "failed"], runs
    assert FILE_TOO_LARGE in runs[-1]["message"]
    alert = failure_alert(_health(cfg), KEY)
    assert alert is not None and alert["severity"] == "warning" and FILE_TOO_LARGE in alert["message"], alert
    assert_registry_matches_journal(settings)
    assert_no_torn_files(settings)
    assert_no_orphans(tmp_path, settings)


REGISTRY_FULL = """
import resource
from daemon import registry as _registry

_register = _registry.ModelRegistry.register

def _register_on_full_disk(self, *args, **kwargs):
    resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))  # the disk fills up now
    return _register(self, *args, **kwargs)

_registry.ModelRegistry.register = _register_on_full_disk
"""


async def test_disk_full_during_registration(tmp_path: Path) -> None:
    data, cfg = await _first_model(tmp_path)
    settings = settings_of(data)
    before = _snapshot(settings)
    (v1,) = before["rows"]
    # Sizes first: the model copy must not fit, the registry's SQLite writes must.
    limit = 1 << 20
    assert v1["size"] > 2 * limit, v1
    preamble = textwrap.dedent(REGISTRY_FULL).format(limit=limit)
    proc = run_cli(
        ["--log-level", "WARNING", "train", KEY, "--config", str(cfg), "--json"], preamble=preamble
    )
    assert proc.returncode == 1, (proc.stdout[-2000:], proc.stderr[-3000:])
    result = _train_json(proc.stdout)
    assert result["state"] == "failed" and result["model_id"] is None, result
    assert result["trainer_exit"] == "OK" and FILE_TOO_LARGE in result["message"], result

    # The new export went through (it preceded the full disk); the registry did not change.
    npz = settings.training_dir / f"{KEY}.npz"
    assert sha256_of(npz) != before["npz_sha"] and assert_npz_intact(npz) > before["npz_rows"]
    assert registry_rows(settings) == before["rows"], "something was registered on a full disk"
    objects = sorted(p.name for p in (settings.registry_dir / "objects" / "sha256").iterdir())
    assert objects == [f"{v1['sha256']}.pt"], objects
    runs = journal_runs(settings)
    assert [r["state"] for r in runs] == ["succeeded", "failed"], runs
    assert runs[-1]["model_id"] is None and FILE_TOO_LARGE in runs[-1]["message"]
    ckpt = settings.runs_dir / runs[-1]["run_id"] / "model.pt"
    assert ckpt.is_file() and sha256_of(ckpt) != v1["sha256"]  # trained, never registered
    alert = failure_alert(_health(cfg), KEY)
    assert alert is not None and alert["severity"] == "warning", alert
    assert_registry_matches_journal(settings)
    assert_no_torn_files(settings)
    assert_no_orphans(tmp_path, settings)
