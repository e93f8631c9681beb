"""The GPU-node config loads, and the unit rendered for an install prefix verifies offline."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from daemon.settings import load_settings
from tests.support.system_deps import require

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_config_is_valid() -> None:
    s = load_settings(ROOT / "deploy" / "config.gpu.yaml", {})
    assert s.training.device == "cuda" and s.training.nproc_per_node == 8
    assert s.locks.backend == "redis" and s.redis is not None
    assert s.data_dir == Path("/var/lib/ringrift/data")
    assert s.game_dbs == ("/srv/ringrift/games/*.db",)


def test_rendered_unit_points_at_the_venv_and_verifies(tmp_path: Path) -> None:
    prefix = tmp_path / "opt" / "ringrift-daemon"
    exe = prefix / "venv" / "bin" / "ringrift-daemon"
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\nexit 0\n")
    exe.chmod(0o755)
    (prefix / "share").mkdir()
    (prefix / "share" / "OPERATIONS.md").write_text("ops\n")
    unit = subprocess.run(
        [str(ROOT / "deploy" / "render-unit.sh"), str(prefix)], capture_output=True, text=True, check=True
    ).stdout
    execs = [line for line in unit.splitlines() if line.startswith(("ExecStart=", "ExecStartPre="))]
    assert len(execs) == 2 and all(line.split("=", 1)[1].startswith(f"{exe} ") for line in execs), execs
    assert f"Documentation=file://{prefix}/share/OPERATIONS.md" in unit.splitlines()
    path = tmp_path / "ringrift-training-daemon.service"
    path.write_text(unit)
    res = subprocess.run(
        [require("systemd-analyze"), "verify", "--man=no", "--recursive-errors=no", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SYSTEMD_LOG_COLOR": "0", "SYSTEMD_PAGER": ""},
    )
    assert res.returncode == 0 and res.stderr.strip() == "", res.stdout + res.stderr
