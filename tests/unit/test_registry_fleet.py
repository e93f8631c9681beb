"""Schema v2 behaviour on both record stores: external parents, the rejected stage, the warm-start
chooser, verified fetch/pull (corrupt objects are marked, never used), and the fleet's run history."""

from __future__ import annotations

import io
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from daemon.cli.registry import run_registry_command
from daemon.registry import (
    FencingTokenRejected,
    LineageError,
    ModelCorrupt,
    ModelRegistry,
    NoModelAvailable,
    RegistryError,
)
from tests.support.registry_backends import registry_url
from tests.unit.test_registry_cli import _parse

__all__ = ["registry_url"]

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def _model(tmp: Path, name: str, size: int = 4096) -> Path:
    p = tmp / "src" / name
    p.parent.mkdir(exist_ok=True)
    p.write_bytes(os.urandom(size))
    return p


@pytest.fixture
def reg(tmp_path: Path, registry_url: str | None) -> ModelRegistry:
    r = ModelRegistry(tmp_path / "registry", url=registry_url)
    r.open()
    yield r  # type: ignore[misc]
    r.close()


def test_external_parent_is_recorded_not_refused(reg: ModelRegistry, tmp_path: Path) -> None:
    a = reg.register(_model(tmp_path, "a.pt"), "square8", 2, parent_model_id="model_v3_20241210")
    rec = reg.require_model(a)
    assert (rec.parent_model_id, rec.parent_version, rec.parent_external) == ("model_v3_20241210", None, True)
    b = reg.register(_model(tmp_path, "b.pt"), "square8", 2, parent_model_id=a)
    rb = reg.require_model(b)
    assert (rb.parent_version, rb.parent_external) == (1, False)
    assert [r.model_id for r in reg.get_lineage(b)] == [b, a]  # stops at the external parent
    assert reg.require_model(b).as_dict()["parent_external"] is False
    # An id of the registry's own form that names nothing is a mistake, not an upstream model.
    with pytest.raises(LineageError, match="unknown parent"):
        reg.register(_model(tmp_path, "c.pt"), "square8", 2, parent_model_id="hex8_3p-v4")
    with pytest.raises(LineageError, match="empty"):
        reg.register(_model(tmp_path, "d.pt"), "square8", 2, parent_model_id=" ")
    assert len(reg.list_models()) == 2


def test_rejected_stage_and_warm_start_parent(reg: ModelRegistry, tmp_path: Path) -> None:
    assert reg.warm_start_parent("square8_2p") is None
    v1 = reg.register(_model(tmp_path, "1.pt"), "square8", 2, fencing_token=1)
    v2 = reg.register(_model(tmp_path, "2.pt"), "square8", 2, fencing_token=1)
    assert reg.warm_start_parent("square8_2p").model_id == v2  # type: ignore[union-attr]
    assert reg.reject(v2, reason="SPRT: LLR -2.95", fencing_token=1, now=NOW) is True
    assert reg.reject(v2) is False  # already rejected
    assert reg.require_model(v2).stage == "rejected"
    assert reg.get_history(model_id=v2)[-1].to_stage == "rejected"
    assert reg.warm_start_parent("square8_2p").model_id == v1  # type: ignore[union-attr]
    with pytest.raises(RegistryError, match="rejected"):
        reg.promote(v2)
    reg.promote(v1, fencing_token=1)
    with pytest.raises(RegistryError, match="only candidate"):
        reg.reject(v1)  # production is never rejected
    with pytest.raises(RegistryError, match="only candidate or production"):
        reg.archive(v2)
    assert reg.warm_start_parent("square8_2p").model_id == v1  # type: ignore[union-attr]
    assert [m.model_id for m in reg.list_models(stage="rejected")] == [v2]
    # Production corrupt: the newest ready candidate, never the rejected one.
    Path(reg.require_model(v1).path).write_bytes(b"bit rot")
    reg.verify()
    assert reg.require_model(v1).status == "corrupt"
    assert reg.warm_start_parent("square8_2p") is None
    v3 = reg.register(_model(tmp_path, "3.pt"), "square8", 2, fencing_token=1)
    assert reg.warm_start_parent("square8_2p").model_id == v3  # type: ignore[union-attr]


def test_lower_token_after_higher_changes_no_stage(reg: ModelRegistry, tmp_path: Path) -> None:
    v1 = reg.register(_model(tmp_path, "1.pt"), "square8", 2, fencing_token=8)
    events = len(reg.get_history())
    for move in (reg.promote, reg.reject, reg.archive):
        with pytest.raises(FencingTokenRejected):
            move(v1, fencing_token=7)
    assert reg.require_model(v1).stage == "candidate" and len(reg.get_history()) == events
    assert reg.highest_token("square8_2p") == 8


@pytest.mark.parametrize("damage", ["bit_flip", "truncate", "delete"])
def test_fetch_verifies_and_marks_corrupt(reg: ModelRegistry, tmp_path: Path, damage: str) -> None:
    src = _model(tmp_path, "a.pt", 100_000)
    mid = reg.register(src, "square8", 2)
    out = tmp_path / "out" / "model.pt"
    assert reg.fetch(mid, out).model_id == mid and out.read_bytes() == src.read_bytes()
    obj = Path(reg.require_model(mid).path)
    good = obj.read_bytes()
    if damage == "bit_flip":
        obj.write_bytes(good[:500] + bytes([good[500] ^ 0x10]) + good[501:])
    elif damage == "truncate":
        obj.write_bytes(good[:-1])
    else:
        obj.unlink()
    out.write_bytes(b"previous model")
    with pytest.raises(ModelCorrupt) as ei:
        reg.fetch(mid, out, now=NOW)
    problem = {"bit_flip": "digest_mismatch", "truncate": "size_mismatch", "delete": "missing"}[damage]
    assert problem in str(ei.value)
    assert out.read_bytes() == b"previous model"  # destination untouched
    assert sorted(p.name for p in out.parent.iterdir()) == ["model.pt"]  # no temp left behind
    rec = reg.require_model(mid)
    assert rec.status == "corrupt" and reg.get_latest("square8_2p") is None
    last = reg.get_history(model_id=mid)[-1]
    assert (last.event, last.reason, last.at) == ("status", f"fetch: {problem}", NOW)
    with pytest.raises(ModelCorrupt, match="status is corrupt"):
        reg.fetch(mid, tmp_path / "again.pt")  # never used again
    assert not (tmp_path / "again.pt").exists()
    if damage != "delete":
        obj.write_bytes(good)
        assert reg.verify() == [] and reg.require_model(mid).status == "ready"
        assert reg.fetch(mid, out).model_id == mid and out.read_bytes() == good


def test_pull_semantics(reg: ModelRegistry, tmp_path: Path) -> None:
    out = tmp_path / "pulled.pt"
    with pytest.raises(NoModelAvailable, match="no usable production model for square8_2p"):
        reg.pull("square8_2p", out=out)
    a = reg.register(_model(tmp_path, "a.pt"), "square8", 2)
    b = reg.register(_model(tmp_path, "b.pt"), "square8", 2)
    with pytest.raises(NoModelAvailable):
        reg.pull("square8_2p", out=out)
    assert reg.pull("square8_2p", stage="candidate", out=out).model_id == b
    reg.promote(a)
    assert reg.pull("square8_2p", out=out).model_id == a
    assert out.read_bytes() == (tmp_path / "src" / "a.pt").read_bytes()
    with pytest.raises(RegistryError, match="never served"):
        reg.pull("square8_2p", stage="rejected", out=out)
    with pytest.raises(RegistryError, match="unknown stage"):
        reg.pull("square8_2p", stage="best", out=out)
    Path(reg.require_model(a).path).unlink()
    with pytest.raises(ModelCorrupt):
        reg.pull("square8_2p", out=out)
    with pytest.raises(ModelCorrupt, match="status is corrupt"):  # production stays, marked corrupt
        reg.pull("square8_2p", out=out)


def test_warm_start_skips_a_parent_that_proves_corrupt(reg: ModelRegistry, tmp_path: Path) -> None:
    a = reg.register(_model(tmp_path, "a.pt"), "square8", 2)
    b = reg.register(_model(tmp_path, "b.pt"), "square8", 2)
    reg.promote(a)
    Path(reg.require_model(a).path).write_bytes(b"x")  # not yet known to be corrupt
    dest = tmp_path / "cache" / "parent.pt"
    got = reg.warm_start("square8_2p", dest)
    assert (
        got is not None
        and got.model_id == b
        and dest.read_bytes() == (tmp_path / "src" / "b.pt").read_bytes()
    )
    assert reg.require_model(a).status == "corrupt"
    Path(reg.require_model(b).path).unlink()
    assert reg.warm_start("square8_2p", tmp_path / "cache" / "p2.pt") is None
    assert not (tmp_path / "cache" / "p2.pt").exists()


def test_show_reflects_corrupt(tmp_path: Path) -> None:
    reg_dir = tmp_path / "reg"
    with ModelRegistry(reg_dir) as reg:
        mid = reg.register(_model(tmp_path, "a.pt"), "square8", 2)
        Path(reg.require_model(mid).path).write_bytes(b"altered")
        with pytest.raises(ModelCorrupt):
            reg.fetch(mid, tmp_path / "x.pt")
    out = io.StringIO()
    assert run_registry_command(reg_dir, _parse(["show", mid, "--json"]), out=out) == 0
    shown = json.loads(out.getvalue())
    assert shown["model"]["status"] == "corrupt" and shown["history"][-1]["reason"] == "fetch: size_mismatch"


def test_fleet_run_history(reg: ModelRegistry) -> None:
    t0 = NOW
    a = reg.record_run(
        "a1", "square8_2p", "pending", now=t0, node="node-a", usable_games=1200, fencing_token=4
    )
    assert (a.started_at, a.finished_at, a.node) == (t0, None, "node-a")
    reg.record_run("a1", "square8_2p", "training", now=t0 + timedelta(minutes=1), node="node-a")
    a = reg.record_run(
        "a1", "square8_2p", "failed", now=t0 + timedelta(minutes=5), node="node-a", message="OOM"
    )
    assert (a.state, a.started_at, a.finished_at, a.usable_games, a.fencing_token, a.message) == (
        "failed",
        t0,
        t0 + timedelta(minutes=5),
        1200,
        4,
        "OOM",
    )
    assert reg.last_success("square8_2p") is None and reg.last_run("square8_2p").run_id == "a1"  # type: ignore[union-attr]
    reg.record_run(
        "b1", "square8_2p", "pending", now=t0 + timedelta(minutes=10), node="node-b", usable_games=1500
    )
    b = reg.record_run(
        "b1",
        "square8_2p",
        "succeeded",
        now=t0 + timedelta(minutes=40),
        node="node-b",
        model_id="square8_2p-v1",
    )
    assert reg.last_success("square8_2p") == b and reg.last_run("square8_2p") == b
    assert b.usable_games == 1500 and b.model_id == "square8_2p-v1"
    # A finished run never changes again (a late duplicate from a stale node is ignored).
    again = reg.record_run("b1", "square8_2p", "failed", now=t0 + timedelta(hours=1), node="node-a")
    assert again == b
    reg.record_run("h1", "hex8_3p", "pending", now=t0 + timedelta(hours=2), node="node-a")
    assert reg.last_run("square8_2p") == b and reg.last_run("hex8_3p").run_id == "h1"  # type: ignore[union-attr]
    assert [r.run_id for r in reg.recent_runs()] == ["h1", "b1", "a1"]
    assert [r.run_id for r in reg.recent_runs("square8_2p", limit=1)] == ["b1"]
    assert (
        reg.get_run("nope") is None
        and reg.get_run("a1").as_dict()["finished_at"] == a.finished_at.isoformat()
    )  # type: ignore[union-attr]
    with pytest.raises(RegistryError, match="belongs to square8_2p"):
        reg.record_run("a1", "hex8_3p", "failed", now=t0, node="node-a")
    with pytest.raises(RegistryError, match="unknown run state"):
        reg.record_run("c1", "square8_2p", "done", now=t0, node="node-a")
    with pytest.raises(ValueError):
        reg.record_run("c1", "chess_2p", "pending", now=t0, node="node-a")


def test_a_run_published_at_its_end_keeps_its_interval(reg: ModelRegistry) -> None:
    """The pipeline tells the fleet's history about a run once, when it ends: the record keeps
    when it started, so the history shows each run's interval (no two of a config overlap)."""
    from daemon.runs.cluster import ClusterRun
    from daemon.runs.fleet import RegistryHistory

    start, end = NOW, NOW + timedelta(minutes=7)
    done = ClusterRun(end, "succeeded", 900, "square8_2p-v1", "node-a", "r1", start)
    assert ClusterRun.from_json(done.as_json()) == done  # the Redis copy carries it too
    RegistryHistory(reg).publish("square8_2p", done)
    run = reg.get_run("r1")
    assert run is not None and (run.started_at, run.finished_at, run.state) == (start, end, "succeeded")
    # A record without a start (an older node's) starts when it is first recorded, as before.
    RegistryHistory(reg).publish("square8_2p", ClusterRun(end, "failed", None, None, "node-b", "r2"))
    old = reg.get_run("r2")
    assert old is not None and old.started_at == old.finished_at == end
