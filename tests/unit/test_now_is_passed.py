"""Inside the package, decision code is always given ``now``: only the seed-facing methods default it.

The decision classes (triggers, curriculum, health) are also the seed API, so their public
methods keep ``now=None`` for scripts. Every call the package itself makes passes ``now``
explicitly, so the service decides on one clock reading per tick and tests never sleep.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "daemon"
# Methods of the decision classes whose result depends on the time.
TIMED = {
    "should_train",
    "signal_scores",
    "get_training_queue",
    "decisions",
    "get_curriculum_weights",
    "get_config_metrics",
    "get_weight",
    "weight_factors",
    "record_training",
    "record_training_start",
    "record_training_complete",
    "record_data_update",
    "record_win_rate",
    "record_fleet_success",
    "set_condition",
    "evaluate",
    "get_health_status",
    "snapshot",
    "ingest_evaluation_games",
}


def test_package_calls_pass_now() -> None:
    missing = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT)
        if rel.parts[0] == "decide" or rel.parts[:2] == ("training", "trainer"):
            continue  # the public methods themselves resolve a missing now; the trainer decides nothing
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
            owner = getattr(getattr(node.func, "value", None), "id", None)
            if owner == "sqlite":  # daemon.sqlite.snapshot: a database copy, not a decision
                continue
            if name in TIMED and not any(k.arg == "now" for k in node.keywords):
                missing.append(f"daemon/{rel}:{node.lineno} {name}()")
    assert missing == [], "calls without now=: " + ", ".join(missing)
