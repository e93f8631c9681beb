"""The design document's examples run as written here (DESIGN 10; issue 19).

Every Python block of the document (the copy in tests/data) runs with only its import lines
mapped (``tests/seed/document.py``), in a fresh directory that holds what a user's would: a
game database (``data/games/selfplay.db``, real synthetic self-play), a ``config.yaml`` sized
for a CPU, and for the Redis block a real ``redis-server`` named by upstream's ``REDIS_URL``.
A block that uses the names of an earlier one runs after it in the same process. Each test
asserts the outcome the document states.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from daemon.registry import ModelRegistry
from daemon.selfplay_sim import write_games
from tests.seed.document import blocks, translate
from tests.support.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[2]
BLOCKS = blocks()
# Each test's chain: the blocks that run, in order, in one process (the last is the one tested).
CHAINS: dict[str, tuple[str, ...]] = {
    "Export Cache/How It Works": ("Export Cache/How It Works",),
    "Dynamic Export Settings/Usage": ("Dynamic Export Settings/Usage",),
    "Curriculum Feedback/Weight Calculation": ("Curriculum Feedback/Weight Calculation",),
    "Curriculum Feedback/Metrics Tracked": (
        "Curriculum Feedback/Weight Calculation",
        "Curriculum Feedback/Metrics Tracked",
    ),
    "Training Triggers/Usage": ("Training Triggers/Usage",),
    "Training Triggers/Signal Scores": ("Training Triggers/Usage", "Training Triggers/Signal Scores"),
    "Distributed Locks/Redis Mode (Preferred)": ("Distributed Locks/Redis Mode (Preferred)",),
    # The context manager uses the section's import (in the block above it).
    "Distributed Locks/Context Manager": (
        "Distributed Locks/Redis Mode (Preferred)",
        "Distributed Locks/Context Manager",
    ),
    "Health Monitoring/Recording Events": ("Health Monitoring/Recording Events",),
    "Health Monitoring/Health Status": (
        "Health Monitoring/Recording Events",
        "Health Monitoring/Health Status",
    ),
    "Health Monitoring/Prometheus Metrics": (
        "Health Monitoring/Recording Events",
        "Health Monitoring/Prometheus Metrics",
    ),
    "Model Registry/Registration": ("Model Registry/Registration",),
    "Model Registry/Model Lookup": ("Model Registry/Registration", "Model Registry/Model Lookup"),
    "Unified Pipeline": ("Unified Pipeline",),
    "Integration Example": ("Integration Example",),
}
CONFIG = {
    "configs": ["square8_2p", "hex8_2p"],
    "http": {"enabled": False},
    "export": {"workers": 1},
    "training": {
        "epochs": 1,
        "batch_size": 64,
        "channels": 8,
        "blocks": 1,
        "device": "cpu",
        "grace": 5,
        "threads": 1,
    },
}
CLI = "import sys; from daemon.cli import main; sys.exit(main())"
GAMES = 200  # ~180 usable: the small tier, and over the default bootstrap minimum (100)


class Ran:
    def __init__(self, proc: subprocess.CompletedProcess[str], outcome: dict[str, Any]) -> None:
        self.stdout = proc.stdout
        self.names: dict[str, Any] = outcome["names"]
        self.seen: dict[str, Any] = outcome["seen"]


def user_dir(tmp_path: Path) -> Path:
    """What a user's directory holds: a game database and the settings a command would read."""
    d = tmp_path / "user"
    (d / "data" / "games").mkdir(parents=True)
    assert write_games(d / "data" / "games" / "selfplay.db", "square8_2p", GAMES, seed=7) >= 150
    (d / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    (d / "model.pt").write_bytes(b"a checkpoint the reader trained elsewhere\n")
    return d


def run_chain(cwd: Path, chain: tuple[str, ...], env: dict[str, str] | None = None) -> Ran:
    paths = []
    for i, key in enumerate(chain):
        p = cwd / f"block{i}.py"
        p.write_text(translate(BLOCKS[key]))
        paths.append(str(p))
    spec = cwd / "spec.json"
    outcome = cwd / "outcome.json"
    spec.write_text(json.dumps({"blocks": paths, "outcome": str(outcome)}))
    base = {k: v for k, v in os.environ.items() if not k.startswith("RINGRIFT_DAEMON_") and k != "REDIS_URL"}
    base["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run(
        [sys.executable, "-m", "tests.seed.runner", str(spec)],
        cwd=cwd,
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, f"{chain[-1]} failed:\n{proc.stdout}\n{proc.stderr[-4000:]}"
    return Ran(proc, json.loads(outcome.read_text()))


def test_every_block_of_the_document_is_run_here() -> None:
    assert set(BLOCKS) == set(CHAINS), "a block of the document has no test (or a test no block)"
    for code in BLOCKS.values():
        assert not re.search(r"\bapp\.", translate(code))


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_export_cache_rerun_skips_and_the_cli_shares_the_entry(tmp_path: Path) -> None:
    d = user_dir(tmp_path)
    first = run_chain(d, CHAINS["Export Cache/How It Works"])
    assert first.seen["export_data_calls"] == 1
    assert "skipping" not in first.stdout
    assert (d / "data" / "training" / ".export_cache.json").is_file()  # the documented location
    again = run_chain(d, CHAINS["Export Cache/How It Works"])
    assert again.seen["export_data_calls"] == 0
    assert "Export cache valid, skipping" in again.stdout
    # The command (absolute paths, the configured sources) hits the entry the script wrote.
    cli = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from daemon.cli import main; sys.exit(main())",
            "export",
            "square8_2p",
            "--json",
        ],
        cwd=d,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout)["cache_hit"] is True


def test_dynamic_export_settings(tmp_path: Path) -> None:
    ran = run_chain(user_dir(tmp_path), CHAINS["Dynamic Export Settings/Usage"])
    assert "Tier: small" in ran.stdout
    assert "Max games: None" in ran.stdout and "Sample every: 1" in ran.stdout
    assert "Epochs: 100" in ran.stdout
    assert int(re.search(r"Estimated samples: (\d+)", ran.stdout).group(1)) > 0  # type: ignore[union-attr]


def test_curriculum_weights(tmp_path: Path) -> None:
    ran = run_chain(user_dir(tmp_path), CHAINS["Curriculum Feedback/Weight Calculation"])
    weights = ran.names["weights"]
    assert set(CONFIG["configs"]) <= set(weights)
    assert all(0.5 <= w <= 2.0 for w in weights.values())
    # No trained model: +0.5 (bootstrap); two games are too few for either win-rate rule.
    assert weights["square8_2p"] == pytest.approx(1.5)


def test_curriculum_metrics_print_a_win_rate(tmp_path: Path) -> None:
    ran = run_chain(user_dir(tmp_path), CHAINS["Curriculum Feedback/Metrics Tracked"])
    assert "Games (recent): 2" in ran.stdout
    assert "Win rate: 50.0%" in ran.stdout
    assert "Elo trend: +0.0" in ran.stdout and "Model count: 0" in ran.stdout


def test_triggers_example_trains_with_reason_and_priority(tmp_path: Path) -> None:
    ran = run_chain(user_dir(tmp_path), CHAINS["Training Triggers/Usage"])
    assert "Should train: True" in ran.stdout
    assert "Reason: train: 600 new games >= 500" in ran.stdout
    assert float(re.search(r"Priority: ([0-9.]+)", ran.stdout).group(1)) > 0  # type: ignore[union-attr]


def test_trigger_signal_scores(tmp_path: Path) -> None:
    ran = run_chain(user_dir(tmp_path), CHAINS["Training Triggers/Signal Scores"])
    scores = ran.names["scores"]
    assert set(scores) == {"data_freshness", "model_staleness", "performance_regression"}
    assert scores["data_freshness"] == 1.0
    assert all(0.0 <= v <= 1.0 for v in scores.values())


def test_redis_lock_excludes_a_second_holder(tmp_path: Path, redis_server: RedisServer) -> None:
    ran = run_chain(
        user_dir(tmp_path),
        CHAINS["Distributed Locks/Redis Mode (Preferred)"],
        {"REDIS_URL": redis_server.url},
    )
    [seen] = ran.seen["run_training_calls"]
    assert seen["backend"] == "redis" and seen["redis_lease_exists"] is True
    assert seen["second_holder_acquired"] is False


def test_file_lock_context_manager_excludes_a_second_holder(tmp_path: Path) -> None:
    ran = run_chain(user_dir(tmp_path), CHAINS["Distributed Locks/Context Manager"])
    calls = ran.seen["run_training_calls"]
    assert len(calls) == 2  # the section's first block (no Redis: the file fallback), then the `with`
    for seen in calls:  # data/locks/training_square8_2p.lock, and a second holder refused
        assert seen["backend"] == "file" and seen["lock_file_exists"] is True
        assert seen["second_holder_acquired"] is False


def test_health_recording_and_status(tmp_path: Path) -> None:
    ran = run_chain(user_dir(tmp_path), CHAINS["Health Monitoring/Health Status"])
    assert "Status: healthy" in ran.stdout
    assert "Summary: " in ran.stdout and "Alert:" not in ran.stdout
    run_chain(user_dir(tmp_path / "again"), CHAINS["Health Monitoring/Recording Events"])


def test_prometheus_metrics_show_the_model_count(tmp_path: Path) -> None:
    ran = run_chain(user_dir(tmp_path), CHAINS["Health Monitoring/Prometheus Metrics"])
    text = ran.names["metrics"]
    assert 'ringrift_training_is_running{config="square8_2p"} 0.0' in text
    assert 'ringrift_training_consecutive_failures{config="square8_2p"} 0.0' in text
    assert 'ringrift_training_model_count{config="square8_2p"} 1.0' in text
    assert 'ringrift_training_win_rate{config="square8_2p"} 0.55' in text
    assert "ringrift_training_alerts_critical 0.0" in text
    assert "# HELP ringrift_training_alerts_warning" in text


def test_registry_registration_and_lookup(tmp_path: Path) -> None:
    d = user_dir(tmp_path)
    ran = run_chain(d, CHAINS["Model Registry/Model Lookup"])
    assert "Registered: square8_2p-v1" in ran.stdout
    assert "Status: ready" in ran.stdout
    digest = re.search(r"Training data hash: (\S+)", ran.stdout).group(1)  # type: ignore[union-attr]
    assert re.fullmatch(r"[0-9a-f]{64}", digest)
    with ModelRegistry(d / "data" / "model_registry", read_only=True) as reg:
        model = reg.get_model("square8_2p-v1")
    assert model is not None
    assert model.parent_model_id == "model_v3_20241210" and model.parent_external is True
    assert model.data_hash == digest


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_unified_pipeline_trains_and_registers(tmp_path: Path) -> None:
    d = user_dir(tmp_path)
    ran = run_chain(d, CHAINS["Unified Pipeline"])
    assert re.search(r"Health: (healthy|degraded|unhealthy)", ran.stdout)
    assert "'lock_backend': 'file'" in ran.stdout  # Features: {...}
    assert "Success: True" in ran.stdout, ran.stdout
    assert re.search(r"Export time: \d+\.\ds", ran.stdout)
    assert re.search(r"Training time: \d+\.\ds", ran.stdout)
    assert "Model ID: square8_2p-v1" in ran.stdout
    with ModelRegistry(d / "data" / "model_registry", read_only=True) as reg:
        assert reg.get_model("square8_2p-v1") is not None


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_integration_example_triggers_and_registers_a_model(tmp_path: Path) -> None:
    d = user_dir(tmp_path)
    ran = run_chain(d, CHAINS["Integration Example"])
    # Fresh triggers read the config as `status` does: games, no model yet -> bootstrap.
    assert "Training triggered: train: bootstrap: no model yet" in ran.stdout, ran.stdout
    assert "Training complete: square8_2p-v1" in ran.stdout
    with ModelRegistry(d / "data" / "model_registry", read_only=True) as reg:
        model = reg.get_model("square8_2p-v1")
    assert model is not None and model.status == "ready"
