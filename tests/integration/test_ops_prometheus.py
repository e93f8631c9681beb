"""deploy/prometheus against the real promtool (Debian package `prometheus`)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import yaml

from tests.support.system_deps import requires

ROOT = Path(__file__).resolve().parents[2]
PROM = ROOT / "deploy" / "prometheus"
DASH = ROOT / "deploy" / "grafana" / "ringrift-training.json"
PROMTOOL = shutil.which("promtool")
pytestmark = requires("promtool")


def promtool(*args: str, cwd: Path = PROM) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=60, cwd=cwd, check=False)


def test_promtool_version() -> None:
    res = promtool("--version")
    assert res.returncode == 0
    print((res.stdout or res.stderr).splitlines()[0])


def test_check_rules() -> None:
    res = promtool("check", "rules", "alerts.yml", "rules.yml")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS: 16 rules found" in res.stdout


def test_check_config() -> None:
    res = promtool("check", "config", "prometheus.yml")
    assert res.returncode == 0, res.stdout + res.stderr


def test_rule_unit_tests() -> None:
    res = promtool("test", "rules", "alerts_test.yml", "rules_test.yml")
    assert res.returncode == 0, res.stdout + res.stderr


def test_unit_tests_catch_a_broken_rule(tmp_path: Path) -> None:
    # Drop the "warning yields to critical" clause: the tests must notice.
    text = (PROM / "alerts.yml").read_text()
    broken = re.sub(r"\n\s*unless on \(job, instance, config\)\n(.*\n){2}", "\n", text, count=1)
    assert broken != text
    (tmp_path / "alerts.yml").write_text(broken)
    shutil.copy(PROM / "alerts_test.yml", tmp_path / "alerts_test.yml")
    assert promtool("check", "rules", "alerts.yml", cwd=tmp_path).returncode == 0
    res = promtool("test", "rules", "alerts_test.yml", cwd=tmp_path)
    assert res.returncode != 0
    assert "RingRiftTrainingFailuresWarning" in res.stdout + res.stderr


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    dash = json.loads(DASH.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    assert exprs
    subst = {"$job": "ringrift-training-daemon", "$instance": ".*", "$config": ".*", "$__range": "1h"}
    rules = []
    for i, expr in enumerate(exprs):
        for var, value in subst.items():
            expr = expr.replace(var, value)
        assert "$" not in expr, expr
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    res = promtool("check", "rules", str(path), cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
