"""``registry list|show|lineage|promote`` handlers: one JSON object with --json, named exit codes."""

from __future__ import annotations

import argparse
import io
import json
import os
from pathlib import Path

import pytest

from daemon.cli.registry import RegistryExit, add_registry_parser, cli_registry, run_registry_command
from daemon.registry import ModelRegistry


def _parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_registry_parser(p.add_subparsers(dest="command"))
    return p.parse_args(["registry", *argv])


def _run(reg_dir: Path, argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    code = run_registry_command(reg_dir, _parse(argv), out=out)
    return code, out.getvalue()


@pytest.fixture
def reg_dir(tmp_path: Path) -> Path:
    d = tmp_path / "reg"
    with ModelRegistry(d) as r:
        prev = None
        for i in range(3):
            f = tmp_path / f"m{i}.pt"
            f.write_bytes(os.urandom(100))
            prev = r.register(f, "square8", 2, {}, {"val_loss": 1.0 - i / 10}, [], prev, fencing_token=i + 1)
        f = tmp_path / "h.pt"
        f.write_bytes(os.urandom(100))
        r.register(f, "hex8", 3)
    return d


def test_list_json_and_table(reg_dir: Path) -> None:
    code, out = _run(reg_dir, ["list", "--json"])
    obj = json.loads(out)
    assert code == RegistryExit.OK and obj["count"] == 4
    assert [m["model_id"] for m in obj["models"]] == [
        "hex8_3p-v1",
        "square8_2p-v1",
        "square8_2p-v2",
        "square8_2p-v3",
    ]
    code, out = _run(reg_dir, ["list", "--config-key", "hex8_3p", "--json"])
    assert [m["model_id"] for m in json.loads(out)["models"]] == ["hex8_3p-v1"]
    code, out = _run(reg_dir, ["list"])
    assert (
        code == 0
        and out.splitlines()[0].split()[:3] == ["MODEL", "STAGE", "STATUS"]
        and "square8_2p-v3" in out
    )


def test_show_lineage_promote(reg_dir: Path) -> None:
    code, out = _run(reg_dir, ["show", "square8_2p-v2", "--json"])
    obj = json.loads(out)
    assert code == 0 and obj["model"]["parent_version"] == 1 and obj["history"][0]["event"] == "registered"
    code, out = _run(reg_dir, ["lineage", "square8_2p-v3", "--json"])
    lin = json.loads(out)["lineage"]
    assert [(e["model_id"], e["parent_version"]) for e in lin] == [
        ("square8_2p-v3", 2),
        ("square8_2p-v2", 1),
        ("square8_2p-v1", None),
    ]
    code, out = _run(reg_dir, ["promote", "square8_2p-v3", "--json", "--reason", "ops"])
    assert code == 0 and json.loads(out) == {
        "promoted": "square8_2p-v3",
        "config": "square8_2p",
        "previous": None,
        "changed": True,
    }
    code, out = _run(reg_dir, ["promote", "square8_2p-v1", "--fencing-token", "1", "--json"])
    assert code == RegistryExit.FAILED and "rejected" in json.loads(out)["error"]
    code, out = _run(reg_dir, ["lineage", "square8_2p-v3"])
    assert code == 0 and out.splitlines()[1].startswith("  square8_2p-v2")


def test_errors(reg_dir: Path) -> None:
    code, out = _run(reg_dir, ["show", "square8_2p-v9", "--json"])
    assert code == RegistryExit.FAILED and "not found" in json.loads(out)["error"]
    assert cli_registry(reg_dir, "bogus", out=io.StringIO()) == RegistryExit.BAD_ARGS
    assert cli_registry(reg_dir, "show", out=io.StringIO()) == RegistryExit.BAD_ARGS
    buf = io.StringIO()
    assert cli_registry(reg_dir, "list", config="chess_2p", as_json=True, out=buf) == RegistryExit.BAD_ARGS
    assert "error" in json.loads(buf.getvalue())
    with pytest.raises(SystemExit):
        _parse(["list", "--config-key", "chess_9p"])
