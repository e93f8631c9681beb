"""``ringrift-daemon check``: is this node ready to run the service?

Used as the systemd unit's ``ExecStartPre``. Prints one line per check
(``ok``/``WARN``/``FAIL``) and exits 1 only on a FAIL: what stops the service (settings,
the data directory, a required Redis, the registry of record, torch). A game database that cannot be read, and
no database matching ``game_dbs`` at all, are WARN lines (DESIGN 13): the service starts,
serves the other sources and reports that one as an unhealthy source.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass

from daemon.data.gamedb import GameDB, GameDBError
from daemon.data.sources import expand
from daemon.export.encoder import EncoderError, load_encoder
from daemon.locks.admin import refused
from daemon.registry import ModelRegistry, RegistryError
from daemon.settings import Settings, SettingsError

TORCH_PROBE = (
    "import json, torch; print(json.dumps({'torch': torch.__version__, "
    "'cuda': torch.cuda.is_available(), 'gpus': torch.cuda.device_count()}))"
)


_LABEL = {(True, False): "ok  ", (True, True): "WARN", (False, False): "FAIL", (False, True): "FAIL"}


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool  # False: the service cannot run (exit 1)
    detail: str
    warning: bool = False  # worth a look, but the service runs (a WARN line)


def check_settings(settings: Settings) -> CheckResult:
    return CheckResult("settings", True, f"{len(settings.configs)} configs enabled")


def check_databases(settings: Settings) -> list[CheckResult]:
    paths = expand(settings.game_dbs)
    if not paths:
        detail = f"no database matches {list(settings.game_dbs)} (the service starts and reports it)"
        return [CheckResult("game_dbs", True, detail, warning=True)]
    out = []
    for path in paths:
        db = GameDB(path, busy_timeout=2.0)
        try:
            snap = db.refresh()
            usable = sum(c.usable_games for c in snap.configs.values())
            out.append(
                CheckResult(f"db {path}", True, f"schema v{snap.schema_version}, {usable} usable games")
            )
            out.extend(CheckResult(f"db {path}", True, w, warning=True) for w in snap.warnings)
        except GameDBError as e:
            out.append(CheckResult(f"db {path}", True, e.reason, warning=True))
        except Exception as e:  # a reader bug: still only this source
            out.append(
                CheckResult(f"db {path}", True, f"cannot read ({type(e).__name__}: {e})", warning=True)
            )
        finally:
            db.close()
    return out


def check_encoder(settings: Settings) -> CheckResult:
    # A plug-in encoder that cannot be imported would fail every export: stop the unit here.
    try:
        enc = load_encoder(settings.export.encoder, settings.export.history_length)
    except EncoderError as e:
        return CheckResult("encoder", False, str(e))
    return CheckResult("encoder", True, f"{enc.name} v{enc.version}, {enc.num_planes} planes")


def check_state_dir(settings: Settings) -> CheckResult:
    d = settings.data_dir
    try:
        d.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=d, prefix=".check-", delete=True) as f:
            f.write(b"ok")
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        return CheckResult("data_dir", False, f"{d} is not writable: {e.strerror}")
    return CheckResult("data_dir", True, f"{d.absolute()} writable")


def check_secrets(settings: Settings) -> list[CheckResult]:
    """A configured ``password_file`` that cannot be read stops the service (``run`` would exit 3)."""
    out = []
    for name, section in (("redis", settings.redis), ("registry", settings.registry)):
        if section is None or section.password_file is None:
            continue
        try:
            section.resolved_password()
        except SettingsError as e:
            out.append(CheckResult(f"{name} password", False, str(e)))
        else:
            out.append(CheckResult(f"{name} password", True, f"{section.password_file} readable"))
    return out


def check_redis(settings: Settings) -> CheckResult | None:
    if settings.redis is None:
        if settings.locks.backend == "redis":
            return CheckResult("redis", False, "locks.backend is 'redis' but no redis section is configured")
        return None
    import redis

    r = settings.redis
    try:
        password = r.resolved_password()
    except SettingsError:  # reported by check_secrets
        return CheckResult("redis", False, "not tried: its password_file cannot be read")
    try:
        client = redis.Redis.from_url(
            r.url,
            password=password,
            socket_connect_timeout=r.connect_timeout,
            socket_timeout=r.connect_timeout,
        )
        try:
            client.ping()
        finally:
            client.close()
    except (redis.RedisError, OSError) as e:
        if refused(e):  # it answered: a wrong password is an error under auto too (no fallback)
            return CheckResult("redis", False, f"{r.url} refused the connection: {type(e).__name__}: {e}")
        ok = settings.locks.backend == "auto"
        extra = " (auto: file locks will be used)" if ok else ""
        return CheckResult("redis", ok, f"{r.url} unreachable: {e}{extra}")
    return CheckResult("redis", True, f"{r.url} reachable")


def check_registry(settings: Settings) -> CheckResult:
    """The registry of record answers (PostgreSQL: reachable, the password accepted). Read-only:
    no migration, nothing created; the service itself would start and report it unavailable."""
    try:
        reg = ModelRegistry.from_settings(settings, read_only=True)
        reg.open()
        try:
            where = reg.describe()
        finally:
            reg.close()
    except (RegistryError, SettingsError, OSError) as e:  # an unreadable password_file too
        return CheckResult("registry", False, str(e))
    return CheckResult(
        "registry", True, f"{where['url']} schema v{where['schema_version']}, objects in {where['store']}"
    )


def check_torch(settings: Settings, environ: dict[str, str]) -> CheckResult:
    # In a child process: the service itself never imports torch.
    try:
        out = subprocess.run(
            [sys.executable, "-c", TORCH_PROBE], capture_output=True, text=True, timeout=120, env=environ
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return CheckResult("torch", False, f"cannot run the torch probe: {e}")
    if out.returncode != 0:
        return CheckResult("torch", False, f"torch not importable: {out.stderr.strip().splitlines()[-1:]}")
    info = json.loads(out.stdout)
    want = settings.training.device
    device = "cuda" if info["cuda"] else "cpu"
    if want == "cuda" and not info["cuda"]:
        return CheckResult(
            "torch", False, f"training.device is cuda but no GPU is visible (torch {info['torch']})"
        )
    return CheckResult("torch", True, f"torch {info['torch']}, device {device}, {info['gpus']} GPU(s)")


def run_checks(settings: Settings, environ: dict[str, str]) -> list[CheckResult]:
    results = [
        check_settings(settings),
        check_state_dir(settings),
        check_encoder(settings),
        *check_databases(settings),
        *check_secrets(settings),
    ]
    rc = check_redis(settings)
    if rc is not None:
        results.append(rc)
    results.append(check_registry(settings))
    results.append(check_torch(settings, environ))
    return results


def cli_check(settings: Settings, *, as_json: bool, environ: dict[str, str]) -> int:
    results = run_checks(settings, environ)
    ok = all(r.ok for r in results)
    if as_json:
        print(json.dumps({"ok": ok, "checks": [asdict(r) for r in results]}))
    else:
        for r in results:
            print(f"{_LABEL[(r.ok, r.warning)]} {r.name}: {r.detail}")
    return 0 if ok else 1
