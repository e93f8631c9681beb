"""A fleet on one machine for the fleet tests: N service processes sharing one redis-server,
one PostgreSQL database, one object directory and the same game databases (DESIGN 11).

Each node gets its own data directory and YAML file; the settings are the fast ones (sub-second
loops, tiny CPU model, one epoch) so a run takes seconds. Views of the fleet read the registry
of record with a :class:`ModelRegistry` of their own (never one of the nodes').
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import yaml

from daemon.registry import ModelRegistry
from tests.chaos._helpers import node_mapping


def fleet_mapping(
    tmp: Path,
    i: int,
    *,
    db: Path,
    configs: list[str],
    pg_url: str,
    store: Path,
    redis_url: str | None = None,
    **sections: dict[str, Any],
) -> dict[str, Any]:
    """Settings of node ``i``: data under ``tmp/node{i}``, the fleet's registry and store."""
    # The chaos tests' fast single-node settings, plus the fleet's registry, store and locks.
    data = node_mapping(
        tmp,
        db,
        configs,
        locks={"backend": "redis" if redis_url else "file"},
        registry={"url": pg_url, "store": str(store), "connect_timeout": 2, "pool_size": 2},
        triggers={"bootstrap_min_games": 30, "min_interval": 0},
        training={"threads": 1},
    )
    data["data_dir"] = str(tmp / f"node{i}")
    if redis_url:
        data["redis"] = {"url": redis_url, "ttl": 8.0, "key_prefix": "fleet:", "connect_timeout": 1.0}
    for name, over in sections.items():
        data[name] = {**data.get(name, {}), **over}
    return data


def write_node_config(tmp: Path, i: int, data: dict[str, Any]) -> Path:
    path = tmp / f"node{i}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def fleet_registry(pg_url: str, store: Path, tmp: Path) -> ModelRegistry:
    """A reader of the fleet's registry (its own, unused registry dir; not yet opened)."""
    return ModelRegistry(tmp / "observer-registry", url=pg_url, store=str(store))


def node_runs(data_dir: Path) -> list[dict[str, Any]]:
    """One node's journal (read-only; empty until the node created it)."""
    db = data_dir / "state" / "runs.db"
    if not db.exists():
        return []
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM runs ORDER BY started_at")]
    except sqlite3.OperationalError:  # schema not there yet
        return []
    finally:
        conn.close()


def log_tails(logs: list[Path], chars: int = 3000) -> str:
    """The end of each node's log, for a failing assertion's message."""
    out = []
    for p in logs:
        text = p.read_text(errors="replace") if p.exists() else "(no log)"
        out.append(f"--- {p.name}\n{text[-chars:]}")
    return "\n".join(out)
