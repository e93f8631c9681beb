"""The registry schema, as one ordered list of versioned steps with SQL per dialect.

Every record store applies the steps above its database's version when it opens, in one
transaction with the version bump, so a database is always at exactly one version. A
database newer than :data:`SCHEMA_VERSION` is refused (an older daemon must not write rows
it does not understand). SQLite keeps its version in ``PRAGMA user_version`` (schema v1
files, written before ``schema_migrations`` existed, are found that way); PostgreSQL in
``schema_migrations``; both record each applied step there.

Both dialects reach the same tables and columns; times stay ISO-8601 text and JSON columns
text, so a row reads back identically from either backend.

v1: models, fences, stage_events (append-only), one production per config.
v2: stage ``rejected``; status checked (``ready`` | ``corrupt``); ``parent_external`` and no
foreign key on ``parent_model_id`` (a parent from outside the registry is recorded as
given); the fleet's ``runs`` table.
"""

from __future__ import annotations

from dataclasses import dataclass

from daemon.registry.records import RegistryError


@dataclass(frozen=True)
class Step:
    version: int
    description: str
    sqlite: tuple[str, ...]
    postgresql: tuple[str, ...]


# The same text in both dialects.
MIGRATIONS_TABLE = """CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied_at TEXT NOT NULL)"""
RECORD_MIGRATION = "INSERT INTO schema_migrations (version, description, applied_at) VALUES (?, ?, ?)"

_MODEL_COLUMNS_V1 = """
        model_id TEXT PRIMARY KEY, config_key TEXT NOT NULL, version INTEGER NOT NULL,
        board_type TEXT NOT NULL, num_players INTEGER NOT NULL, created_at TEXT NOT NULL,
        stage TEXT NOT NULL {stage_check}, status TEXT NOT NULL {status_check},
        sha256 TEXT NOT NULL, size BIGINT NOT NULL,
        data_hash TEXT, data_path TEXT, source_snapshot TEXT, source_data_paths TEXT NOT NULL,
        training_config TEXT NOT NULL, metrics TEXT NOT NULL, checkpoint_metadata TEXT,
        parent_model_id TEXT {parent_ref}, parent_version INTEGER,
        run_id TEXT, fencing_token BIGINT{extra}, UNIQUE (config_key, version)"""

_COLUMNS_V1 = (
    "model_id, config_key, version, board_type, num_players, created_at, stage, status, sha256, size, "
    "data_hash, data_path, source_snapshot, source_data_paths, training_config, metrics, "
    "checkpoint_metadata, parent_model_id, parent_version, run_id, fencing_token"
)

_RUNS = """CREATE TABLE runs (
        run_id TEXT PRIMARY KEY, config_key TEXT NOT NULL, node TEXT NOT NULL, state TEXT NOT NULL,
        started_at TEXT NOT NULL, updated_at TEXT NOT NULL, finished_at TEXT,
        usable_games BIGINT, model_id TEXT, message TEXT, fencing_token BIGINT)"""
_RUNS_INDEX = "CREATE INDEX runs_config_started ON runs(config_key, started_at)"
_ONE_PRODUCTION = "CREATE UNIQUE INDEX one_production ON models(config_key) WHERE stage = 'production'"
_MODELS_SHA = "CREATE INDEX models_sha ON models(sha256)"
_STAGES_V1 = "('candidate', 'production', 'archived')"
_STAGES_V2 = "('candidate', 'production', 'archived', 'rejected')"
_STATUSES = "('ready', 'corrupt')"

V1 = Step(
    1,
    "models, fences, append-only stage_events",
    sqlite=(
        # Exactly the schema the first registry wrote (PRAGMA user_version = 1).
        """CREATE TABLE IF NOT EXISTS models (
        model_id TEXT PRIMARY KEY, config_key TEXT NOT NULL, version INTEGER NOT NULL,
        board_type TEXT NOT NULL, num_players INTEGER NOT NULL, created_at TEXT NOT NULL,
        stage TEXT NOT NULL CHECK (stage IN ('candidate', 'production', 'archived')),
        status TEXT NOT NULL, sha256 TEXT NOT NULL, size INTEGER NOT NULL,
        data_hash TEXT, data_path TEXT, source_snapshot TEXT, source_data_paths TEXT NOT NULL,
        training_config TEXT NOT NULL, metrics TEXT NOT NULL, checkpoint_metadata TEXT,
        parent_model_id TEXT REFERENCES models(model_id), parent_version INTEGER,
        run_id TEXT, fencing_token INTEGER, UNIQUE (config_key, version))""",
        "CREATE UNIQUE INDEX IF NOT EXISTS one_production ON models(config_key) WHERE stage = 'production'",
        "CREATE INDEX IF NOT EXISTS models_sha ON models(sha256)",
        "CREATE TABLE IF NOT EXISTS fences (config_key TEXT PRIMARY KEY, last_token INTEGER NOT NULL)",
        """CREATE TABLE IF NOT EXISTS stage_events (
        id INTEGER PRIMARY KEY AUTOINCREMENT, model_id TEXT NOT NULL, config_key TEXT NOT NULL,
        event TEXT NOT NULL, from_stage TEXT, to_stage TEXT, reason TEXT NOT NULL, at TEXT NOT NULL,
        fencing_token INTEGER)""",
        # History is append-only: the audit trail must not be rewritten.
        """CREATE TRIGGER IF NOT EXISTS stage_events_no_update BEFORE UPDATE ON stage_events
       BEGIN SELECT RAISE(ABORT, 'stage_events is append-only'); END""",
        """CREATE TRIGGER IF NOT EXISTS stage_events_no_delete BEFORE DELETE ON stage_events
       BEGIN SELECT RAISE(ABORT, 'stage_events is append-only'); END""",
    ),
    postgresql=(
        "CREATE TABLE models ("
        + _MODEL_COLUMNS_V1.format(
            stage_check=f"CONSTRAINT models_stage_check CHECK (stage IN {_STAGES_V1})",
            status_check="",
            parent_ref="CONSTRAINT models_parent_fk REFERENCES models(model_id)",
            extra="",
        )
        + ")",
        _ONE_PRODUCTION,
        _MODELS_SHA,
        "CREATE TABLE fences (config_key TEXT PRIMARY KEY, last_token BIGINT NOT NULL)",
        """CREATE TABLE stage_events (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, model_id TEXT NOT NULL,
        config_key TEXT NOT NULL, event TEXT NOT NULL, from_stage TEXT, to_stage TEXT,
        reason TEXT NOT NULL, at TEXT NOT NULL, fencing_token BIGINT)""",
        """CREATE FUNCTION registry_append_only() RETURNS trigger LANGUAGE plpgsql AS
        $$ BEGIN RAISE EXCEPTION 'stage_events is append-only'; END $$""",
        """CREATE TRIGGER stage_events_no_change BEFORE UPDATE OR DELETE ON stage_events
        FOR EACH ROW EXECUTE FUNCTION registry_append_only()""",
        """CREATE TRIGGER stage_events_no_truncate BEFORE TRUNCATE ON stage_events
        FOR EACH STATEMENT EXECUTE FUNCTION registry_append_only()""",
    ),
)

V2 = Step(
    2,
    "stage rejected, status check, external parents, fleet runs",
    # SQLite cannot alter a CHECK or drop a foreign key: rebuild the table and copy every row.
    sqlite=(
        "CREATE TABLE models_v2 ("
        + _MODEL_COLUMNS_V1.format(
            stage_check=f"CHECK (stage IN {_STAGES_V2})",
            status_check=f"CHECK (status IN {_STATUSES})",
            parent_ref="",
            extra=", parent_external INTEGER NOT NULL DEFAULT 0 CHECK (parent_external IN (0, 1))",
        )
        + ")",
        f"INSERT INTO models_v2 ({_COLUMNS_V1}, parent_external) SELECT {_COLUMNS_V1}, 0 FROM models",
        "DROP TABLE models",
        "ALTER TABLE models_v2 RENAME TO models",
        _ONE_PRODUCTION,
        _MODELS_SHA,
        _RUNS,
        _RUNS_INDEX,
    ),
    postgresql=(
        "ALTER TABLE models DROP CONSTRAINT models_parent_fk",
        "ALTER TABLE models ADD COLUMN parent_external BOOLEAN NOT NULL DEFAULT FALSE",
        "ALTER TABLE models DROP CONSTRAINT models_stage_check",
        f"ALTER TABLE models ADD CONSTRAINT models_stage_check CHECK (stage IN {_STAGES_V2})",
        f"ALTER TABLE models ADD CONSTRAINT models_status_check CHECK (status IN {_STATUSES})",
        _RUNS,
        _RUNS_INDEX,
    ),
)

STEPS: tuple[Step, ...] = (V1, V2)
SCHEMA_VERSION = STEPS[-1].version


def pending(current: int, where: str) -> list[Step]:
    """The steps a database at ``current`` still needs; refuses a newer one (``where`` names it)."""
    if current > SCHEMA_VERSION:
        raise RegistryError(
            f"registry database {where} has schema version {current}, newer than this daemon's "
            f"{SCHEMA_VERSION}: upgrade ringrift-daemon on this node (nothing was changed)"
        )
    return [s for s in STEPS if s.version > current]
