"""``registry pull`` across the fleet (DESIGN 11): node A trains and promotes a model (the real
pipeline and trainer, PostgreSQL registry, a shared object directory); node B, which never
trained the config and has an empty data directory, pulls the production model, verified.
A damaged object in the shared directory (a flipped bit, a truncation) is refused with a clear
error and exit 1, and nothing is written at ``--out``; once the bytes are repaired,
``registry verify`` marks the model ready again and the pull works."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from daemon.selfplay_sim import write_games
from tests.chaos._helpers import child_environ
from tests.support.fleet import fleet_mapping, write_node_config

# A real pipeline pass and eight CLI runs.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "daemon", *args],
        capture_output=True,
        text=True,
        env=child_environ(),
        timeout=timeout,
        check=False,
    )


def _last_json(out: str) -> dict[str, object]:
    loaded: dict[str, object] = json.loads(out.strip().splitlines()[-1])
    return loaded


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_pull_from_a_node_that_never_trained(tmp_path: Path, postgres_url: str) -> None:
    db, store = tmp_path / "games.db", tmp_path / "objects"
    write_games(db, "square8_2p", 40, seed=3)
    a, b = (
        write_node_config(
            tmp_path,
            i,
            fleet_mapping(tmp_path, i, db=db, configs=["square8_2p"], pg_url=postgres_url, store=store),
        )
        for i in (0, 1)
    )
    trained = _cli("train", "square8_2p", "--json", "--config", str(a))
    assert trained.returncode == 0, trained.stdout + trained.stderr
    model_id = str(_last_json(trained.stdout)["model_id"])
    assert model_id == "square8_2p-v1"
    promoted = _cli("registry", "promote", model_id, "--json", "--config", str(a))
    assert promoted.returncode == 0, promoted.stdout + promoted.stderr

    out = tmp_path / "worker" / "model.pt"
    out.parent.mkdir()
    pulled = _cli("registry", "pull", "square8_2p", "--out", str(out), "--json", "--config", str(b))
    assert pulled.returncode == 0, pulled.stdout + pulled.stderr
    got = _last_json(pulled.stdout)
    model = got["model"]
    assert isinstance(model, dict) and model["model_id"] == model_id and model["stage"] == "production"
    assert _sha(out) == model["sha256"] and out.stat().st_size == model["size"]
    assert not (tmp_path / "node1" / "runs").exists() or not any((tmp_path / "node1" / "runs").iterdir())
    obj = store / "sha256" / f"{model['sha256']}.pt"
    good = obj.read_bytes()

    def refused(damage: str) -> str:
        dest = tmp_path / "worker" / f"{damage}.pt"
        res = _cli("registry", "pull", "square8_2p", "--out", str(dest), "--config", str(b))
        assert res.returncode == 1, res.stdout + res.stderr
        assert not dest.exists(), "a pull wrote an unverified file"
        assert list(dest.parent.iterdir()) == [out], "a temp file was left beside --out"
        return res.stderr + res.stdout

    # A flipped bit: the hash differs; the model is marked corrupt and never served.
    flipped = bytearray(good)
    flipped[len(flipped) // 2] ^= 0x01
    obj.chmod(0o644)
    obj.write_bytes(bytes(flipped))
    msg = refused("flipped")
    assert model_id in msg and "sha256" in msg, msg
    again = refused("flipped-again")  # already marked: refused without reading the object
    assert "corrupt" in again and "registry verify" in again, again
    verify = _cli("registry", "verify", "--config", str(b))
    assert verify.returncode == 1 and f"CORRUPT {model_id}" in verify.stdout, verify.stdout + verify.stderr

    # Repaired bytes: verify marks it ready again; then a truncation is refused the same way.
    obj.write_bytes(good)
    assert _cli("registry", "verify", "--config", str(b)).returncode == 0
    obj.write_bytes(good[: len(good) // 3])
    msg = refused("truncated")
    assert model_id in msg and "size" in msg.lower(), msg
    assert _sha(out) == model["sha256"], "the worker's earlier verified copy was touched"
