"""The settings' sections: one pydantic model per YAML section, each value bounded.

Every duration is in seconds unless its name says otherwise (``staleness_hours``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from daemon.keys import validate_config_key
from daemon.redis_keys import DEFAULT_PREFIX
from daemon.settings.strict_yaml import (
    INT_MAX,
    INT_MIN,
)
from daemon.training.args import AmpMode, trainer_default

ENV_PREFIX = "RINGRIFT_DAEMON_"
ENV_NESTING = "__"
DEFAULT_CONFIG_PATH = Path("config.yaml")

PositiveSeconds = float
# Bounds every duration obeys (issue 17 item 10): finite (the sections refuse inf and NaN),
# at most a year (a timer of 1e308 s overflows asyncio and APScheduler), and a loop interval
# no shorter than MIN_INTERVAL (1e-6 s spins the loop: HTTP dead, SIGTERM unheard).
MAX_SECONDS = 366 * 86400.0
MAX_HOURS = MAX_SECONDS / 3600
MIN_INTERVAL = 0.1
DEFAULT_KEEP_FAILED_RUNS = 3  # training.keep_failed_runs
# Validated item by item, so an error names the position: ``configs.1: invalid config key 'hex8_9p' ...``.
ConfigKey = Annotated[str, AfterValidator(validate_config_key)]


class SettingsError(Exception):
    """Bad settings: one message naming the field path and the bad value (exit 2)."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, allow_inf_nan=False)

    @model_validator(mode="after")
    def _int64(self) -> Any:
        # Integers fit SQLite and every C API they reach, whatever their source (YAML already
        # refuses more; an environment override is a string pydantic parses to any size).
        for name in type(self).model_fields:
            value = getattr(self, name)
            if type(value) is int and not INT_MIN <= value <= INT_MAX:
                raise ValueError(f"{name}: integer outside the 64-bit range")
        return self


def _url(v: str, schemes: tuple[str, ...], expect: str) -> str:
    """``v`` parsed in full (scheme, host, port), so a bad URL fails here and not in a client."""
    try:
        parts = urlsplit(v)
        _ = parts.port  # raises for a port out of range or not a number
    except ValueError as e:  # e.g. "Invalid IPv6 URL"
        raise ValueError(f"not a valid URL ({e})") from None
    if parts.scheme not in schemes:
        raise ValueError(expect)
    return v


def _read_secret(section: str, path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError as e:
        raise SettingsError(f"{section}.password_file: cannot read {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise SettingsError(f"{section}.password_file: {path} is not UTF-8 text") from None


class RedisSettings(_Section):
    url: str = "redis://127.0.0.1:6379/0"
    # Secrets never come from YAML: the password is read from this file, or
    # from RINGRIFT_DAEMON_REDIS__PASSWORD.
    password_file: Path | None = None
    password: SecretStr | None = None
    key_prefix: str = DEFAULT_PREFIX
    # The renewal runs every ttl/3: a tiny TTL would spin it.
    ttl: float = Field(default=60.0, ge=0.5, le=MAX_SECONDS)
    connect_timeout: float = Field(default=2.0, gt=0, le=3600)

    @field_validator("url")
    @classmethod
    def _url_scheme(cls, v: str) -> str:
        return _url(v, ("redis", "rediss", "unix"), "must start with redis://, rediss:// or unix://")

    def resolved_password(self) -> str | None:
        """The password from the environment or ``password_file`` (stripped); an unreadable
        file is a :class:`SettingsError` (``check`` fails on it, it never reads as "no password")."""
        if self.password is not None:
            return self.password.get_secret_value()
        if self.password_file is not None:
            return _read_secret("redis", self.password_file)
        return None


class RegistrySettings(_Section):
    """The registry of record (DESIGN 11). ``url`` None: ``sqlite:///{data_dir}/model_registry/registry.db``
    (SQLite on local disk only); ``postgresql://[user@]host[:port]/db`` for a fleet. ``store`` None:
    ``{data_dir}/model_registry/objects``; a shared path (NFS) or ``s3://bucket/prefix``."""

    url: str | None = None
    # Secrets never come from YAML: the password is read from this file, or
    # from RINGRIFT_DAEMON_REGISTRY__PASSWORD.
    password_file: Path | None = None
    password: SecretStr | None = None
    store: str | None = None
    pool_size: int = Field(default=4, ge=1, le=64)
    connect_timeout: float = Field(default=5.0, gt=0, le=3600)
    statement_timeout: float = Field(default=30.0, gt=0, le=MAX_SECONDS)
    lock_timeout: float = Field(default=30.0, gt=0, le=MAX_SECONDS)
    idle_in_transaction_timeout: float = Field(default=120.0, gt=0, le=MAX_SECONDS)
    busy_timeout: float = Field(default=30.0, gt=0, le=MAX_SECONDS)  # SQLite
    gc_grace: float = Field(default=3600.0, ge=0, le=MAX_SECONDS)  # unreferenced objects kept this long
    temp_grace: float = Field(default=3600.0, gt=0, le=MAX_SECONDS)  # a temp file this old is a dead writer's

    @field_validator("url")
    @classmethod
    def _url_scheme(cls, v: str | None) -> str | None:
        if v is not None:
            _url(v, ("sqlite", "postgresql"), "must start with sqlite:/// or postgresql://")
        return v

    @field_validator("store")
    @classmethod
    def _store_scheme(cls, v: str | None) -> str | None:
        if v is not None and "://" in v:
            _url(v, ("file", "s3"), "must be a path, file://PATH or s3://BUCKET[/PREFIX]")
        return v

    def resolved_password(self) -> str | None:
        """The password from the environment or ``password_file`` (stripped); see RedisSettings."""
        if self.password is not None:
            return self.password.get_secret_value()
        if self.password_file is not None:
            return _read_secret("registry", self.password_file)
        return None


class LockSettings(_Section):
    # auto: Redis when configured and reachable, else file locks (with a warning).
    backend: Literal["auto", "redis", "file"] = "auto"


class HttpLimits(_Section):
    """Bounds that keep /metrics answering and runs supplied with descriptors (DESIGN 13)."""

    max_connections: int = Field(default=256, ge=1, le=65536)
    # Descriptors kept free for runs (NPZ, SQLite, trainer pipes): no connection is admitted
    # when fewer than this are left below RLIMIT_NOFILE.
    fd_reserve: int = Field(default=256, ge=0, le=65536)
    # From the first byte of a request to its complete headers (slow clients).
    header_timeout: float = Field(default=10.0, gt=0, le=3600)
    # A connection with no request in progress (new or keep-alive) is closed after this.
    idle_timeout: float = Field(default=30.0, gt=0, le=86400)


class HttpSettings(_Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=9464, ge=0, le=65535)
    limits: HttpLimits = HttpLimits()

    @field_validator("port")
    @classmethod
    def _not_prometheus(cls, v: int) -> int:
        if v == 9090:
            raise ValueError("9090 is Prometheus's own port; pick another (default 9464)")
        return v


class ScheduleSettings(_Section):
    poll_interval: float = Field(default=30.0, ge=MIN_INTERVAL, le=MAX_SECONDS)
    decide_interval: float = Field(default=30.0, ge=MIN_INTERVAL, le=MAX_SECONDS)
    health_interval: float = Field(default=60.0, ge=MIN_INTERVAL, le=MAX_SECONDS)
    misfire_grace: float = Field(default=30.0, ge=0, le=MAX_SECONDS)
    # Bound on the graceful drain after SIGTERM before trainer groups are stopped.
    drain_timeout: float = Field(default=60.0, ge=0, le=MAX_SECONDS)


class TriggerSettings(_Section):
    """The training triggers' parameters (``TriggerConfig`` in the seed API is this class)."""

    freshness_threshold: int = Field(default=500, gt=0)
    staleness_hours: float = Field(default=6.0, gt=0, le=MAX_HOURS)
    min_win_rate: float = Field(default=0.45, ge=0, le=1)
    staleness_min_freshness: float = Field(default=0.3, ge=0, le=1)
    regression_threshold: float = Field(default=0.5, ge=0, le=1)
    # Win-rate drop below min_win_rate that counts as a full regression (default: min_win_rate).
    regression_span: float | None = Field(default=None, gt=0)
    bootstrap_min_games: int = Field(default=100, ge=0)
    min_interval: float = Field(default=1800.0, ge=0, le=MAX_SECONDS)
    freshness_weight: float = Field(default=0.4, ge=0)
    staleness_weight: float = Field(default=0.3, ge=0)
    regression_weight: float = Field(default=0.3, ge=0)
    bootstrap_score: float = Field(default=1.0, ge=0)


class CurriculumSettings(_Section):
    """The curriculum's parameters (``CurriculumConfig`` in the seed API is this class)."""

    window: float = Field(default=1800.0, gt=0, le=MAX_SECONDS)
    history_limit: int = Field(default=1000, gt=0)
    evaluation_sources: tuple[str, ...] = ("gauntlet", "tournament", "evaluation")
    min_games: int = Field(default=5, ge=1)
    base_weight: float = 1.0
    low_win_rate: float = Field(default=0.55, ge=0, le=1)
    low_win_rate_boost: float = 0.4
    bootstrap_boost: float = 0.5
    elo_regression_per_hour: float = -10.0
    min_elo_points: int = Field(default=3, ge=2)
    elo_regression_boost: float = 0.2
    high_win_rate: float = Field(default=0.70, ge=0, le=1)
    high_win_rate_penalty: float = 0.3
    stale_training_hours: float = Field(default=6.0, gt=0, le=MAX_HOURS)
    stale_training_boost: float = 0.1
    min_weight: float = Field(default=0.5, ge=0)
    max_weight: float = Field(default=2.0, ge=0)

    @model_validator(mode="after")
    def _weights(self) -> CurriculumSettings:
        if self.min_weight > self.max_weight:
            raise ValueError(f"min_weight {self.min_weight} must be <= max_weight {self.max_weight}")
        return self


class HealthSettings(_Section):
    """The health monitor's thresholds (``HealthConfig`` in the seed API is this class)."""

    stalled_after: float = Field(default=4 * 3600.0, gt=0, le=MAX_SECONDS)
    stale_model_after: float = Field(default=24 * 3600.0, gt=0, le=MAX_SECONDS)
    stale_data_after: float = Field(default=12 * 3600.0, gt=0, le=MAX_SECONDS)
    low_win_rate: float = Field(default=0.35, ge=0, le=1)
    failures_critical: int = Field(default=3, gt=0)


class ExportSection(_Section):
    # "builtin" or "package.module:Class" implementing the encoder protocol.
    encoder: str = "builtin"
    history_length: int = Field(default=4, gt=0)
    min_free_bytes: int = Field(default=256 * 1024 * 1024, ge=0)
    # Worker processes that read and encode games in parallel (1 = in the exporting process).
    # 2 meets the export-time target on a 2-core machine; an export under 128 games
    # per worker stays in the exporting process whatever this says.
    workers: int = Field(default=2, ge=1, le=64)
    # The NPZ's feature layout (DESIGN 6, 10); None: the encoder's own (the built-in one: cells).
    # dense: ``features`` uint8 (N, C, H, W) for trainers outside this project.
    feature_layout: Literal["cells", "packbits", "dense"] | None = None
    # Keep encoded rows of finished games as segments and re-encode only new games
    # (daemon.export.segments); False: every export encodes every game.
    incremental: bool = True


class TrainingSettings(_Section):
    device: Literal["auto", "cpu", "cuda"] = "auto"
    max_concurrent: int = Field(default=1, gt=0)
    nproc_per_node: int = Field(default=1, gt=0)
    timeout: float = Field(default=4 * 3600.0, gt=0, le=MAX_SECONDS)
    # SIGTERM -> SIGKILL grace for the trainer's process group.
    grace: float = Field(default=30.0, ge=0, le=MAX_SECONDS)
    # No progress line for this long means the trainer hung.
    heartbeat_timeout: float = Field(default=900.0, gt=0, le=MAX_SECONDS)
    channels: int = Field(default=32, gt=0)
    blocks: int = Field(default=2, gt=0)
    epochs: int | None = Field(default=None, gt=0)
    batch_size: int | None = Field(default=None, gt=0)
    learning_rate: float = Field(default=2e-3, gt=0)
    # Trainer knobs, passed as the TrainerArgs fields of the same name (their help says more).
    # CPU threads per trainer; None: daemon.training.threads.default_threads(max_concurrent).
    threads: int | None = Field(default=None, gt=0)
    # Mixed precision: auto (bf16 where the GPU has it, else fp16 + GradScaler; off on CPU), bf16, fp16, off.
    amp: AmpMode = trainer_default("amp")
    # NHWC memory format for the model and its inputs (GPU convolutions).
    channels_last: bool = trainer_default("channels_last")
    # torch.compile the training model (slower first steps while it compiles).
    compile: bool = trainer_default("compile")
    # Batches a background thread prepares ahead (pinned memory, side CUDA stream); 0 = none.
    prefetch: int = Field(default=trainer_default("prefetch"), ge=0)
    # Directories of runs that did not register kept in data_dir/runs (newest first); a
    # registered run's directory is removed (its model.pt is a copy of the registry object).
    keep_failed_runs: int = Field(default=DEFAULT_KEEP_FAILED_RUNS, ge=0, le=1000)


# The fewest games a promotion test may be capped at: below this no SPRT can reach its bounds.
PROMOTION_MIN_GAMES = 50
PromotionElo = Annotated[float, Field(ge=-1000, le=1000, allow_inf_nan=False)]
PromotionError = Annotated[float, Field(gt=0, lt=0.5, allow_inf_nan=False)]


class PromotionSettings(_Section):
    """The promotion test (DESIGN 12); the defaults are Leela Zero's server's SPRT."""

    mode: Literal["sprt", "manual", "always"] = "sprt"
    # gate: H0 elo0 vs H1 elo1; non_regression: H0 non_regression_elo0 vs H1 non_regression_elo1.
    kind: Literal["gate", "non_regression"] = "gate"
    elo0: PromotionElo = 0.0
    elo1: PromotionElo = 35.0
    non_regression_elo0: PromotionElo = -10.0
    non_regression_elo1: PromotionElo = 0.0
    alpha: PromotionError = 0.05
    beta: PromotionError = 0.05
    # At this many games without a decision the fallback decides: llr_sign (accept iff LLR > 0),
    # reject (keep production), or elo_interval (accept iff the Elo interval lies above elo0).
    # Sized so the cap is a rare backstop at the hypotheses (2,000 is over the 95th percentile
    # of a 35-Elo-wide test's length; a 10-Elo-wide test needs about 12x the games).
    max_games: int = Field(default=2000, ge=PROMOTION_MIN_GAMES)
    non_regression_max_games: int = Field(default=20000, ge=PROMOTION_MIN_GAMES)
    fallback: Literal["llr_sign", "reject", "elo_interval"] = "llr_sign"

    @model_validator(mode="after")
    def _ordered(self) -> PromotionSettings:
        for lo, hi in (("elo0", "elo1"), ("non_regression_elo0", "non_regression_elo1")):
            if not getattr(self, lo) < getattr(self, hi):
                raise ValueError(f"{lo} ({getattr(self, lo)}) must be below {hi} ({getattr(self, hi)})")
        return self


class DemoSettings(_Section):
    """``run --demo``: synthetic self-play plus evaluation games, bounded so it ends quickly."""

    config: str = "square8_2p"
    rate: float = Field(default=20.0, ge=0.01, le=100_000)  # self-play games per second
    db: Path = Path("data/games/demo.db")
    # Self-play stops after this many games (about 25 KB each: the database stays small).
    max_games: int = Field(default=1500, ge=1, le=1_000_000)
    # Every new candidate plays evaluation games against production, this much stronger
    # (Elo), in batches, until its promotion test decides or this many games were played.
    candidate_elo: float = Field(default=150.0, ge=-1000, le=1000)
    evaluation_batch: int = Field(default=40, ge=1, le=10_000)
    evaluation_games: int = Field(default=600, ge=1, le=100_000)
    # Training and triggers of the demo: small and quick on a CPU.
    epochs: int = Field(default=2, ge=1, le=1000)
    channels: int = Field(default=16, ge=1, le=1024)
    blocks: int = Field(default=1, ge=1, le=64)
    min_interval: float = Field(default=45.0, ge=0, le=86400)

    @field_validator("config")
    @classmethod
    def _key(cls, v: str) -> str:
        return validate_config_key(v)
