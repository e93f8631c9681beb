"""Schema migrations: a v1 SQLite file written by the first registry upgrades in place with every
row intact; a PostgreSQL database at v1 upgrades too; a newer schema is refused; both dialects
reach the same columns; nodes opening a new database together migrate it once."""

from __future__ import annotations

import shutil
import sqlite3
import threading
from pathlib import Path
from typing import Any

import psycopg
import pytest

from daemon.registry import ModelRegistry, RegistryError
from daemon.registry.migrations import SCHEMA_VERSION, STEPS
from tests.conftest import DATA
from tests.support.registry_backends import raw_execute, registry_url

__all__ = ["registry_url"]

# Written by the registry as of commit 80d211f (schema v1); see tests/data/README.md.
V1_DIR = DATA / "registry_v1"


def _sqlite_rows(db: Path, table: str) -> list[dict[str, Any]]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(f"SELECT * FROM {table} ORDER BY rowid")]
    finally:
        conn.close()


def test_steps_are_contiguous_and_cover_both_dialects() -> None:
    assert [s.version for s in STEPS] == list(range(1, SCHEMA_VERSION + 1))
    assert all(s.sqlite and s.postgresql and s.description for s in STEPS)


def test_v1_sqlite_file_upgrades_in_place_with_rows_intact(tmp_path: Path) -> None:
    reg_dir = tmp_path / "registry"
    shutil.copytree(V1_DIR, reg_dir)
    db = reg_dir / "registry.db"
    before = {t: _sqlite_rows(db, t) for t in ("models", "stage_events", "fences")}
    assert len(before["models"]) == 4 and len(before["stage_events"]) == 8
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    conn.close()

    with ModelRegistry(reg_dir) as reg:
        assert reg.describe()["schema_version"] == SCHEMA_VERSION
    after = {t: _sqlite_rows(db, t) for t in ("models", "stage_events", "fences")}
    assert [{k: v for k, v in r.items() if k != "parent_external"} for r in after["models"]] == before[
        "models"
    ]
    assert {r["parent_external"] for r in after["models"]} == {0}
    assert after["stage_events"] == before["stage_events"] and after["fences"] == before["fences"]
    applied = raw_execute(reg, "SELECT version FROM schema_migrations ORDER BY version")
    assert [v for (v,) in applied] == [1, 2]

    with ModelRegistry(reg_dir) as reg:  # the upgraded file works through the API
        assert [r.model_id for r in reg.get_lineage("square8_2p-v3")] == [
            "square8_2p-v3",
            "square8_2p-v2",
            "square8_2p-v1",
        ]
        prod = reg.get_production("square8_2p")
        assert prod is not None and prod.model_id == "square8_2p-v3" and prod.parent_version == 2
        assert reg.require_model("hex8_3p-v1").stage == "archived"
        assert reg.highest_token("square8_2p") == 7 and reg.highest_token("hex8_3p") == 2
        assert len(reg.get_history()) == 8 and reg.verify() == []
        f = tmp_path / "new.pt"
        f.write_bytes(b"a v2 model\n" * 9)
        v4 = reg.register(f, "square8", 2, parent_model_id="model_v3_20241210", fencing_token=7)
        assert v4 == "square8_2p-v4" and reg.require_model(v4).parent_external
        assert reg.reject(v4, reason="lost the SPRT", fencing_token=7)
        assert reg.require_model(v4).stage == "rejected"


def test_current_file_is_not_rewritten_by_open(tmp_path: Path) -> None:
    with ModelRegistry(tmp_path / "r"):
        pass
    db = tmp_path / "r" / "registry.db"
    before = db.read_bytes()
    with ModelRegistry(tmp_path / "r") as reg:
        assert reg.describe()["schema_version"] == SCHEMA_VERSION
    assert db.read_bytes() == before


def test_newer_schema_is_refused(tmp_path: Path, registry_url: str | None) -> None:
    reg = ModelRegistry(tmp_path / "r", url=registry_url)
    with reg:
        pass
    if registry_url is None:
        raw_execute(reg, f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    else:
        raw_execute(
            reg, "INSERT INTO schema_migrations VALUES (?, 'from the future', 'x')", (SCHEMA_VERSION + 1,)
        )
    with pytest.raises(RegistryError, match=f"schema version {SCHEMA_VERSION + 1}, newer than"):
        ModelRegistry(tmp_path / "r", url=registry_url).open()


def test_postgres_v1_database_upgrades(tmp_path: Path, postgres_url: str) -> None:
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        for stmt in STEPS[0].postgresql:
            conn.execute(stmt)
        conn.execute(
            "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, description TEXT NOT NULL, "
            "applied_at TEXT NOT NULL)"
        )
        conn.execute("INSERT INTO schema_migrations VALUES (1, 'v1', 'then')")
        conn.execute(
            "INSERT INTO models (model_id, config_key, version, board_type, num_players, created_at, "
            "stage, status, sha256, size, source_data_paths, training_config, metrics) VALUES "
            "('hex8_2p-v1', 'hex8_2p', 1, 'hex8', 2, '2025-12-01T00:00:00+00:00', 'production', 'ready', "
            "%s, 3, '[]', '{}', '{}')",
            ("ab" * 32,),
        )
    with ModelRegistry(tmp_path / "r", url=postgres_url) as reg:
        assert reg.describe()["schema_version"] == SCHEMA_VERSION
        rec = reg.require_model("hex8_2p-v1")
        assert (rec.stage, rec.parent_external, rec.size) == ("production", False, 3)
        f = tmp_path / "m.pt"
        f.write_bytes(b"x" * 10)
        mid = reg.register(f, "hex8", 2, parent_model_id="upstream-hex8-best")  # no FK any more
        assert reg.require_model(mid).parent_external


def _columns(reg: ModelRegistry, table: str) -> set[str]:
    if reg.url.startswith("sqlite"):
        return {r[1] for r in raw_execute(reg, f"PRAGMA table_info({table})")}
    rows = raw_execute(
        reg, "SELECT column_name FROM information_schema.columns WHERE table_name = ?", (table,)
    )
    return {r[0] for r in rows}


def test_both_dialects_reach_the_same_columns(tmp_path: Path, postgres_url: str) -> None:
    with ModelRegistry(tmp_path / "a") as lite, ModelRegistry(tmp_path / "b", url=postgres_url) as pg:
        for table in ("models", "fences", "stage_events", "runs", "schema_migrations"):
            assert _columns(lite, table) == _columns(pg, table) != set(), table


def test_nodes_opening_a_new_postgres_database_together_migrate_once(
    tmp_path: Path, postgres_url: str
) -> None:
    start = threading.Barrier(4)
    errors: list[BaseException] = []

    def node(i: int) -> None:
        try:
            start.wait(timeout=30)
            with ModelRegistry(tmp_path / f"n{i}", url=postgres_url) as reg:
                assert reg.describe()["schema_version"] == SCHEMA_VERSION
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=node, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall() == [
            (1,),
            (2,),
        ]
