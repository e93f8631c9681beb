"""Registry behaviour on both record stores: a real SQLite file in tmp_path and a real PostgreSQL
database (fake checkpoints: random bytes)."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from daemon.registry import (
    FencingTokenRejected,
    LineageError,
    ModelCorrupt,
    ModelNotFound,
    ModelRegistry,
    RegistryError,
    register_trained_model,
)
from tests.support.registry_backends import RAW_ERRORS, raw_execute, registry_url

__all__ = ["registry_url"]  # the parametrized fixture, imported for pytest

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def _model(tmp: Path, name: str, size: int = 2048) -> Path:
    p = tmp / "src" / name
    p.parent.mkdir(exist_ok=True)
    p.write_bytes(os.urandom(size))
    return p


def _objects(reg: ModelRegistry) -> list[str]:
    return sorted(p.name for p in reg.objects_dir.iterdir())


@pytest.fixture
def reg(tmp_path: Path, registry_url: str | None) -> ModelRegistry:
    r = ModelRegistry(tmp_path / "registry", url=registry_url)
    r.open()
    yield r  # type: ignore[misc]
    r.close()


def test_register_records_everything(reg: ModelRegistry, tmp_path: Path) -> None:
    model = _model(tmp_path, "a.pt")
    data = tmp_path / "square8_2p.npz"
    data.write_bytes(os.urandom(5000))

    @dataclass
    class Snap:
        path: Path
        max_rowid: int

    mid = reg.register(
        model,
        "sq8",
        2,
        {"lr": 0.001},
        {"val_loss": 0.5, "bad": float("nan")},
        [tmp_path / "games.db"],
        None,
        fencing_token=3,
        run_id="run-1",
        source_snapshot=Snap(tmp_path / "games.db", 42),
        data_path=data,
        now=NOW,
    )
    assert mid == "square8_2p-v1"
    rec = reg.get_model(mid)
    assert rec is not None
    assert (rec.version, rec.stage, rec.status, rec.board_type, rec.num_players) == (
        1,
        "candidate",
        "ready",
        "square8",
        2,
    )
    assert rec.created_at == NOW and rec.created_at.tzinfo is not None
    assert rec.data_hash == hashlib.sha256(data.read_bytes()).hexdigest()
    assert rec.data_path == str(data.resolve())
    assert Path(rec.path).is_absolute() and Path(rec.path) == Path(rec.path).resolve()
    assert rec.sha256 == hashlib.sha256(model.read_bytes()).hexdigest() == Path(rec.path).stem
    assert rec.size == 2048 and Path(rec.path).read_bytes() == model.read_bytes()
    assert rec.source_snapshot == {"path": str(tmp_path / "games.db"), "max_rowid": 42}
    assert rec.metrics == {"val_loss": 0.5, "bad": None}
    assert rec.training_config == {"lr": 0.001} and rec.run_id == "run-1" and rec.fencing_token == 3
    assert rec.checkpoint_metadata is None  # random bytes are no checkpoint
    assert rec.as_dict()["created_at"] == NOW.isoformat()


def test_data_hash_mismatch_and_bad_inputs(reg: ModelRegistry, tmp_path: Path) -> None:
    model = _model(tmp_path, "a.pt")
    data = tmp_path / "d.npz"
    data.write_bytes(b"x")
    with pytest.raises(RegistryError, match="data_hash"):
        reg.register(model, "square8", 2, data_path=data, data_hash="0" * 64)
    with pytest.raises(RegistryError, match="missing"):
        reg.register(tmp_path / "nope.pt", "square8", 2)
    with pytest.raises(ValueError, match="board"):
        reg.register(model, "chess", 2)
    with pytest.raises(RegistryError, match="fencing_token"):
        reg.register(model, "square8", 2, fencing_token=-1)
    with pytest.raises(RegistryError, match="object"):
        reg.register(model, "square8", 2, metrics={"x": object()})
    assert reg.list_models() == [] and _objects(reg) == []


def test_same_file_twice_stored_once(reg: ModelRegistry, tmp_path: Path) -> None:
    model = _model(tmp_path, "a.pt")
    a = reg.register(model, "square8", 2)
    b = reg.register(model, "square8", 2)
    ra, rb = reg.require_model(a), reg.require_model(b)
    assert (ra.version, rb.version) == (1, 2) and ra.path == rb.path
    assert _objects(reg) == [f"{ra.sha256}.pt"]


def test_fencing_7_then_5_rejected_then_8(reg: ModelRegistry, tmp_path: Path) -> None:
    m7, m5, m8 = (_model(tmp_path, f"{t}.pt") for t in (7, 5, 8))
    assert reg.register(m7, "square8", 2, fencing_token=7) == "square8_2p-v1"
    before = _objects(reg)
    with pytest.raises(FencingTokenRejected) as ei:
        reg.register(m5, "square8", 2, fencing_token=5)
    assert (ei.value.config_key, ei.value.token, ei.value.highest) == ("square8_2p", 5, 7)
    assert _objects(reg) == before  # no file (and no temp file)
    assert [m.model_id for m in reg.list_models()] == ["square8_2p-v1"]  # no row
    assert reg.register(m8, "square8", 2, fencing_token=8) == "square8_2p-v2"
    assert reg.highest_token("square8_2p") == 8 and reg.highest_token("hex8_3p") == 0
    # Other configs have their own counters.
    assert reg.register(m5, "hex8", 3, fencing_token=5) == "hex8_3p-v1"
    assert reg.highest_token_overall() == 8
    with pytest.raises(FencingTokenRejected):
        reg.promote("square8_2p-v1", fencing_token=7)
    assert reg.get_production("square8_2p") is None


def test_fencing_recheck_inside_transaction(reg: ModelRegistry, tmp_path: Path) -> None:
    """A token accepted by another writer after the early check is still caught before publishing."""
    m = _model(tmp_path, "a.pt")
    other = ModelRegistry(reg.registry_dir, url=reg.url)

    def hook(point: str) -> None:
        if point == "copied":
            with other:
                other.register(_model(tmp_path, "b.pt"), "square8", 2, fencing_token=9)

    racer = ModelRegistry(reg.registry_dir, url=reg.url, hook=hook)
    with racer, pytest.raises(FencingTokenRejected):
        racer.register(m, "square8", 2, fencing_token=4)
    assert [r.fencing_token for r in reg.list_models()] == [9]
    assert len(_objects(reg)) == 1


def test_require_token(tmp_path: Path) -> None:
    with (
        ModelRegistry(tmp_path / "r", require_token=True) as r,
        pytest.raises(RegistryError, match="required"),
    ):
        r.register(_model(tmp_path, "a.pt"), "square8", 2)


def test_lineage_chain_and_cycles(reg: ModelRegistry, tmp_path: Path) -> None:
    v1 = reg.register(_model(tmp_path, "1.pt"), "square8", 2)
    v2 = reg.register(_model(tmp_path, "2.pt"), "square8", 2, parent_model_id=v1)
    v3 = reg.register(_model(tmp_path, "3.pt"), "square8", 2, parent_model_id=v2)
    chain = reg.get_lineage(v3)
    assert [(r.model_id, r.parent_model_id, r.parent_version) for r in chain] == [
        ("square8_2p-v3", "square8_2p-v2", 2),
        ("square8_2p-v2", "square8_2p-v1", 1),
        ("square8_2p-v1", None, None),
    ]
    with pytest.raises(LineageError, match="own parent"):
        reg.register(_model(tmp_path, "4.pt"), "square8", 2, parent_model_id="square8_2p-v4")
    with pytest.raises(LineageError, match="unknown parent"):
        reg.register(_model(tmp_path, "5.pt"), "square8", 2, parent_model_id="square8_2p-v99")
    assert len(reg.list_models()) == 3 and len(_objects(reg)) == 3
    # A cycle can only come from outside tampering; registration and lineage must both survive it.
    raw_execute(reg, "UPDATE models SET parent_model_id = ? WHERE model_id = ?", (v3, v1))
    with pytest.raises(LineageError, match="cycle"):
        reg.register(_model(tmp_path, "6.pt"), "square8", 2, parent_model_id=v3)
    assert [r.model_id for r in reg.get_lineage(v3)] == [v3, v2, v1]
    with pytest.raises(ModelNotFound):
        reg.get_lineage("square8_2p-v42")


def test_promotion_is_per_config(reg: ModelRegistry, tmp_path: Path) -> None:
    s1 = reg.register(_model(tmp_path, "s1.pt"), "square8", 2, fencing_token=1)
    s2 = reg.register(_model(tmp_path, "s2.pt"), "square8", 2, fencing_token=1)
    h1 = reg.register(_model(tmp_path, "h1.pt"), "hex8", 3, fencing_token=1)
    reg.promote(h1, reason="first hex", now=NOW)
    p = reg.promote(s1, reason="first", fencing_token=1, now=NOW)
    assert (p.previous, p.changed) == (None, True)
    p = reg.promote(s2, reason="better", fencing_token=2, now=NOW + timedelta(hours=1))
    assert p.previous == s1
    assert reg.get_production("square8_2p").model_id == s2  # type: ignore[union-attr]
    assert reg.require_model(s1).stage == "archived"
    hp = reg.get_production("hex8_3p")
    assert hp is not None and hp.model_id == h1 and hp.stage == "production"
    assert [m.model_id for m in reg.list_models(stage="production")] == [h1, s2]
    assert reg.promote(s2).changed is False
    hist = [
        (e.model_id, e.event, e.from_stage, e.to_stage, e.reason)
        for e in reg.get_history(config="square8_2p")
    ]
    assert hist[-3:] == [
        (s1, "stage", "candidate", "production", "first"),
        (s1, "stage", "production", "archived", f"superseded by {s2}"),
        (s2, "stage", "candidate", "production", "better"),
    ]
    assert reg.get_history(model_id=s2)[-1].at == NOW + timedelta(hours=1)
    assert all(e.config_key == "hex8_3p" for e in reg.get_history(config="hex8_3p"))
    reg.archive(s2, reason="retired")
    assert reg.get_production("square8_2p") is None
    assert reg.get_latest("square8_2p").model_id == s2  # type: ignore[union-attr]


def test_history_is_append_only(reg: ModelRegistry, tmp_path: Path) -> None:
    reg.register(_model(tmp_path, "a.pt"), "square8", 2)
    with pytest.raises(RAW_ERRORS, match="append-only"):
        raw_execute(reg, "DELETE FROM stage_events")
    with pytest.raises(RAW_ERRORS, match="append-only"):
        raw_execute(reg, "UPDATE stage_events SET reason = 'x'")
    assert [e.reason for e in reg.get_history()] == ["registered"]


def test_verify_marks_corrupt_and_promote_refuses(reg: ModelRegistry, tmp_path: Path) -> None:
    a = reg.register(_model(tmp_path, "a.pt"), "square8", 2)
    b = reg.register(_model(tmp_path, "b.pt"), "square8", 2)
    path = Path(reg.require_model(b).path)
    good = path.read_bytes()
    path.write_bytes(bytes([good[0] ^ 1]) + good[1:])
    assert [(p.model_id, p.problem) for p in reg.verify(now=NOW)] == [(b, "digest_mismatch")]
    assert reg.require_model(b).status == "corrupt"
    assert reg.get_latest("square8_2p").model_id == a  # type: ignore[union-attr]
    with pytest.raises(ModelCorrupt):
        reg.promote(b)
    path.write_bytes(good)
    assert reg.verify(now=NOW) == [] and reg.require_model(b).status == "ready"
    path.unlink()
    assert [p.problem for p in reg.verify(mark=False)] == ["missing"]


def test_garbage_collection_respects_grace(reg: ModelRegistry, tmp_path: Path) -> None:
    keep = reg.register(_model(tmp_path, "a.pt"), "square8", 2)
    orphan = reg.objects_dir / ("ab" * 32 + ".pt")
    orphan.write_bytes(b"orphan")
    dead_tmp = reg.objects_dir / ".tmp-otherhost-1-dead.pt"
    dead_tmp.write_bytes(b"partial")
    now = datetime.fromtimestamp(orphan.stat().st_mtime, UTC)
    # Temp files and orphans both get their grace (no lock tells a live writer from a dead one).
    rep = reg.collect_garbage(now=now + timedelta(seconds=10))
    assert rep.temp_removed == [] and rep.orphans_kept == [str(orphan)] and orphan.exists()
    assert dead_tmp.exists()
    rep = reg.collect_garbage(now=now + timedelta(hours=2))
    assert rep.temp_removed == [str(dead_tmp)] and not dead_tmp.exists()
    assert rep.orphans_removed == [str(orphan)] and not orphan.exists()
    assert Path(reg.require_model(keep).path).exists()


def test_seed_function_and_script_use(tmp_path: Path) -> None:
    model = _model(tmp_path, "a.pt")
    mid = register_trained_model(
        model, "hexagonal", 4, {}, {}, [], None, registry_dir=tmp_path / "r", run_id="x"
    )
    assert mid == "hexagonal_4p-v1"
    r = ModelRegistry(tmp_path / "r")  # no explicit open(): connects on first use
    try:
        rec = r.get_model(mid)
        assert rec is not None and rec.run_id == "x" and r.get_model("hexagonal_4p-v2") is None
        assert (
            register_trained_model(model, "hexagonal", 4, registry=r, parent_model_id=mid)
            == "hexagonal_4p-v2"
        )
    finally:
        r.close()
