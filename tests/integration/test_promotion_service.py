"""Promotion by evidence through the real service (``run --once``), real SQLite databases.

bootstrap: the first model is promoted at once; a candidate winning 75% of its evaluation
games becomes production (the previous one archived, the test in the stage history); one
winning 30% is rejected and the next run warm-starts from production; counted games stay
counted across restarts.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from daemon.registry import ModelRegistry
from daemon.selfplay_sim import write_evaluation_games, write_games

ROOT = Path(__file__).resolve().parents[2]
KEY = "square8_2p"
ELO_75 = 400 * math.log10(3)  # the candidate wins 75% against production
ELO_30 = -400 * math.log10(7 / 3)  # 30%


def _cli(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RINGRIFT_DAEMON_")}
    env["PYTHONPATH"] = str(ROOT)
    out = subprocess.run(
        [sys.executable, "-m", "daemon", *args, "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=900,  # a generous bound: one training pass on a loaded 2-core machine
        env=env,
        cwd=cfg.parent,
    )
    assert out.returncode == 0, (args, out.stdout[-3000:], out.stderr[-3000:])
    return out


def _status(cfg: Path) -> dict[str, Any]:
    report: dict[str, Any] = json.loads(_cli(cfg, "status", "--json").stdout.strip().splitlines()[-1])
    return report["configs"][KEY]


@pytest.mark.timeout(3600)
def test_candidates_promoted_and_rejected_on_evidence(tmp_path: Path) -> None:
    games = tmp_path / "games.db"
    data = tmp_path / "data"
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "data_dir": str(data),
                "game_dbs": [str(games)],
                "configs": [KEY],
                "http": {"enabled": False},
                "triggers": {"freshness_threshold": 50, "bootstrap_min_games": 20, "min_interval": 0},
                "training": {"epochs": 1, "channels": 8, "blocks": 1, "device": "cpu"},
            }
        )
    )
    reg = ModelRegistry(data / "model_registry", read_only=True)

    def stages() -> dict[str, str]:
        with ModelRegistry(data / "model_registry", read_only=True) as r:
            return {m.model_id: m.stage for m in r.list_models(config=KEY)}

    write_games(games, KEY, 60, seed=1)
    _cli(cfg, "run", "--once")  # trains v1
    assert stages() == {f"{KEY}-v1": "candidate"}
    _cli(cfg, "run", "--once")  # no production model: v1 is promoted at once
    assert stages() == {f"{KEY}-v1": "production"}

    write_games(games, KEY, 60, seed=2)
    _cli(cfg, "run", "--once")  # trains v2 from v1
    assert stages()[f"{KEY}-v2"] == "candidate"

    won = write_evaluation_games(
        games, KEY, 200, candidate=f"{KEY}-v2", production=f"{KEY}-v1", elo_diff=ELO_75, seed=3
    )
    assert 0.65 < won / 200 < 0.85
    _cli(cfg, "run", "--once")  # accepts v2; the new games then train v3 from v2
    st = stages()
    assert (st[f"{KEY}-v1"], st[f"{KEY}-v2"], st[f"{KEY}-v3"]) == ("archived", "production", "candidate")
    with reg:
        history = reg.get_history(model_id=f"{KEY}-v2")
        promoted = [e for e in history if e.to_stage == "production"]
        assert len(promoted) == 1 and "promotion test accepted (sprt:" in promoted[0].reason
        assert " vs v1: " in promoted[0].reason and "LLR" in promoted[0].reason
        assert reg.require_model(f"{KEY}-v3").parent_model_id == f"{KEY}-v2"

    write_evaluation_games(
        games, KEY, 300, candidate=f"{KEY}-v3", production=f"{KEY}-v2", elo_diff=ELO_30, seed=4
    )
    _cli(cfg, "run", "--once")  # rejects v3; the next run (v4) starts from production v2
    st = stages()
    assert st[f"{KEY}-v3"] == "rejected" and st[f"{KEY}-v2"] == "production"
    with reg:
        assert reg.require_model(f"{KEY}-v4").parent_model_id == f"{KEY}-v2"
        rejected = [e for e in reg.get_history(model_id=f"{KEY}-v3") if e.to_stage == "rejected"]
        assert len(rejected) == 1 and "promotion test rejected" in rejected[0].reason

    # A few games for v4: the test stays open, and a restart counts none of them twice.
    write_evaluation_games(
        games, KEY, 12, candidate=f"{KEY}-v4", production=f"{KEY}-v2", elo_diff=0.0, seed=5
    )
    first = _status(cfg)["promotion"]
    assert first["candidate"] == f"{KEY}-v4" and first["games"] == 12 and first["result"] == "continue"
    _cli(cfg, "run", "--once")
    _cli(cfg, "run", "--once")
    again = _status(cfg)["promotion"]
    assert (again["candidate"], again["games"]) == (f"{KEY}-v4", 12)
    pending = json.loads(_cli(cfg, "evaluation", "pending", "--json").stdout.strip().splitlines()[-1])
    assert [p["config"] for p in pending["pending"]] == [KEY]
