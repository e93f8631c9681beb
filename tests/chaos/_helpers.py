"""Shared helpers for the chaos tests: node settings, service processes, read-only views of
the journal and the registry, and the checks every scenario makes (nothing registered twice
or from a lost lease, no torn file, no orphan process, the right alert).

Everything here reads state read-only (SQLite ``mode=ro``) so a check never changes what it
checks. Waits always have a deadline; polls are short.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import yaml

from daemon.settings import Settings, settings_from_mapping

REPO = Path(__file__).resolve().parents[2]
TRAINER_MARKER = "daemon.training"
TEMP_MARKERS = (".tmp", ".part")
T = TypeVar("T")


# -- settings ----------------------------------------------------------------------------
def node_mapping(tmp: Path, db: Path, configs: list[str], **sections: dict[str, Any]) -> dict[str, Any]:
    """Fast settings for one node: file locks, no HTTP, 1 s loops, tiny CPU model."""
    data: dict[str, Any] = {
        "data_dir": str(tmp / "data"),
        "game_dbs": [str(db)],
        "configs": configs,
        "http": {"enabled": False},
        "schedule": {"poll_interval": 0.5, "decide_interval": 0.5, "health_interval": 1, "drain_timeout": 5},
        "triggers": {"bootstrap_min_games": 40, "freshness_threshold": 100000, "min_interval": 3600},
        "export": {"min_free_bytes": 0},
        "training": {
            "epochs": 1,
            "batch_size": 64,
            "channels": 4,
            "blocks": 1,
            "device": "cpu",
            "grace": 3,
            "max_concurrent": 1,
        },
    }
    for name, over in sections.items():
        data[name] = {**data.get(name, {}), **over}
    return data


def write_config(tmp: Path, data: dict[str, Any], name: str = "node.yaml") -> Path:
    path = tmp / name
    path.write_text(yaml.safe_dump(data))
    return path


def settings_of(data: dict[str, Any]) -> Settings:
    return settings_from_mapping(data, {})


def child_environ() -> dict[str, str]:
    # One torch thread per trainer: tests run several at once on a small shared machine.
    return {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


# -- service processes ---------------------------------------------------------------------
def start_service(config: Path, log: Path, *args: str) -> subprocess.Popen[bytes]:
    out = log.open("wb")
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "daemon", "run", "--config", str(config), *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=child_environ(),
            cwd=REPO,
        )
    finally:
        out.close()  # the child holds its own copy


def stop_service(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGCONT)  # in case a test left it stopped
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_cli(
    args: list[str], *, preamble: str = "", timeout: float = 90.0
) -> subprocess.CompletedProcess[str]:
    """``python -m daemon ARGS`` in a child; ``preamble`` runs first in that child (fault set-up)."""
    code = f"{preamble}\nfrom daemon.cli import main\nraise SystemExit(main({args!r}))\n"
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=child_environ(),
        cwd=REPO,
        timeout=timeout,
        check=False,
    )


def wait_until(pred: Callable[[], Any], timeout: float, interval: float = 0.05, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what or pred}")
        time.sleep(interval)


# -- read-only state -----------------------------------------------------------------------
def _ro(db: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)


def journal_runs(settings: Settings) -> list[dict[str, Any]]:
    db = settings.state_dir / "runs.db"
    if not db.exists():
        return []
    conn = _ro(db)
    try:
        cur = conn.execute(
            "SELECT run_id, config, state, fencing_token, model_id, message, pid FROM runs"
            " ORDER BY started_at"
        )
        cols = [c[0] for c in cur.description]
        return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]
    finally:
        conn.close()


def registry_rows(settings: Settings) -> list[dict[str, Any]]:
    db = settings.registry_dir / "registry.db"
    if not db.exists():
        return []
    conn = _ro(db)
    try:
        cur = conn.execute(
            "SELECT model_id, config_key, version, sha256, size, run_id, fencing_token FROM models"
            " ORDER BY config_key, version"
        )
        cols = [c[0] for c in cur.description]
        return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]
    finally:
        conn.close()


class JournalWatch:
    """High-frequency poll of the newest run's state (one read-only connection)."""

    def __init__(self, settings: Settings) -> None:
        self.db = settings.state_dir / "runs.db"
        self.conn: sqlite3.Connection | None = None

    def latest(self) -> tuple[str, str] | None:
        if self.conn is None:
            if not (self.db.exists() and self.db.with_name("runs.db-wal").exists()):
                return None
            self.conn = _ro(self.db)
        try:
            row = self.conn.execute(
                "SELECT run_id, state FROM runs ORDER BY started_at DESC LIMIT 1"
            ).fetchone()
        except sqlite3.OperationalError:  # schema not created yet
            return None
        return (row[0], row[1]) if row else None

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def stop_process(pid: int, timeout: float = 10.0) -> None:
    """SIGSTOP ``pid`` and wait until every thread of it has stopped (kill() only queues it)."""
    os.kill(pid, signal.SIGSTOP)

    def stopped() -> bool:
        states = [_proc_state(f"{pid}/task/{tid}") for tid in os.listdir(f"/proc/{pid}/task")]
        return all(st in ("T", "t", "Z", "X", None) for st in states)

    wait_until(stopped, timeout, 0.001, f"process {pid} to stop")


@contextlib.contextmanager
def journal_write_lock(settings: Settings) -> Iterator[None]:
    """Hold the journal's write lock: the service's next journal write waits (its busy timeout)."""
    conn = sqlite3.connect(settings.state_dir / "runs.db", timeout=2, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            conn.execute("ROLLBACK")
    finally:
        conn.close()


def freeze_when(
    proc: subprocess.Popen[bytes], settings: Settings, pred: Callable[[], bool], timeout: float, what: str
) -> tuple[str, str]:
    """SIGSTOP ``proc`` the moment ``pred()`` holds; return the newest run (run_id, state) then."""
    watch = JournalWatch(settings)
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    try:
        while time.monotonic() < deadline:
            if pred():
                stop_process(proc.pid)
                after = watch.latest()
                assert after is not None, f"{what}, but the journal has no run"
                return after
            got = watch.latest()
            if got is not None and (not seen or seen[-1] != got[1]):
                seen.append(got[1])
                if got[1] in ("succeeded", "failed", "interrupted"):
                    break
            assert proc.poll() is None, f"service exited early (rc {proc.returncode})"
            time.sleep(0.0005)
    finally:
        watch.close()
    raise AssertionError(f"never saw {what}; run states seen: {seen}")


def freeze_at_state(
    proc: subprocess.Popen[bytes], settings: Settings, state: str, timeout: float
) -> tuple[str, str]:
    """SIGSTOP ``proc`` the moment the newest run is in ``state``."""
    watch = JournalWatch(settings)
    try:
        return freeze_when(
            proc, settings, lambda: (watch.latest() or ("", ""))[1] == state, timeout, f"a run {state}"
        )
    finally:
        watch.close()


class RegistryWatch:
    """A fast predicate: the registry has committed a model row (one read-only connection)."""

    def __init__(self, settings: Settings) -> None:
        self.db = settings.registry_dir / "registry.db"
        self.conn: sqlite3.Connection | None = None

    def __call__(self) -> bool:
        if self.conn is None:
            if not (self.db.exists() and self.db.with_name("registry.db-wal").exists()):
                return False
            self.conn = _ro(self.db)
        try:
            return bool(self.conn.execute("SELECT count(*) FROM models").fetchone()[0])
        except sqlite3.OperationalError:
            return False

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def trainer_records(settings: Settings) -> list[dict[str, Any]]:
    out = []
    for p in sorted((settings.state_dir / "trainers").glob("trainer-*.json")):
        try:
            out.append(json.loads(p.read_text()))
        except (OSError, ValueError):
            out.append({"path": str(p), "unreadable": True})
    return out


# -- processes -----------------------------------------------------------------------------
def _proc_state(pid: str) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def live_processes(marker: str, *, exclude: set[int] | None = None) -> list[tuple[int, str]]:
    """Live (non-zombie) processes whose command line contains ``marker``."""
    out = []
    skip = {os.getpid(), *(exclude or set())}
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) in skip:
            continue
        try:
            cmd = Path(f"/proc/{name}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmd and _proc_state(name) not in (None, "Z", "X"):
            out.append((int(name), cmd.strip()))
    return out


def orphan_trainers(tmp: Path) -> list[tuple[int, str]]:
    """Trainer processes of this test still running (their argv names paths under ``tmp``)."""
    return [(pid, cmd) for pid, cmd in live_processes(str(tmp)) if TRAINER_MARKER in cmd or "fake_" in cmd]


def assert_no_orphans(tmp: Path, settings: Settings, timeout: float = 15.0) -> None:
    wait_until(
        lambda: not orphan_trainers(tmp), timeout, 0.1, f"trainer processes to end: {orphan_trainers(tmp)}"
    )
    assert trainer_records(settings) == [], trainer_records(settings)


def kill_test_processes(tmp: Path) -> list[int]:
    """Clean-up after a failed test: SIGKILL what this test started (argv names ``tmp``)."""
    pids = [pid for pid, _ in live_processes(str(tmp))]
    for pid in pids:
        for sig in (signal.SIGCONT, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
    return pids


async def bounded(aw: Awaitable[T], seconds: float, what: str, tmp: Path | None = None) -> T:
    """Await with a deadline, failing with a message (a hung step must not hang the suite)."""
    try:
        return await asyncio.wait_for(aw, seconds)
    except TimeoutError:
        left = live_processes(str(tmp)) if tmp is not None else []
        raise AssertionError(f"{what} did not finish within {seconds:.0f}s; processes left: {left}") from None


def pid_alive(pid: int) -> bool:
    return _proc_state(str(pid)) not in (None, "Z", "X")


# -- files ---------------------------------------------------------------------------------
def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def leftover_temp_files(settings: Settings) -> list[str]:
    """Temp / part files left in the directories that hold final files."""
    dirs = [
        settings.training_dir,
        settings.registry_dir,
        settings.registry_dir / "objects" / "sha256",
        settings.state_dir,
        settings.state_dir / "trainers",
    ]
    out = []
    for d in dirs:
        if not d.is_dir():
            continue
        for p in d.iterdir():
            if p.is_file() and (any(m in p.name for m in TEMP_MARKERS) or p.name.startswith(".tmp-")):
                out.append(str(p))
    return out


def assert_npz_intact(path: Path) -> int:
    """The NPZ loads without pickle and every member reads in full; returns the row count."""
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    n = len(arrays["policy_index"])
    feats = next(k for k in ("feature_cells", "features_packed", "features") if k in arrays)
    for name in (feats, "values", "game_ids"):
        assert len(arrays[name]) == n, (path, name)
    return n


def assert_no_torn_files(settings: Settings) -> None:
    for npz in sorted(settings.training_dir.glob("*.npz")):
        assert_npz_intact(npz)
    objects = settings.registry_dir / "objects" / "sha256"
    for row in registry_rows(settings):
        obj = objects / f"{row['sha256']}.pt"
        assert obj.is_file(), f"{row['model_id']}: object {obj} missing"
        assert obj.stat().st_size == row["size"], f"{row['model_id']}: size differs"
        assert sha256_of(obj) == row["sha256"], (
            f"{row['model_id']}: object bytes differ from its row's sha256"
        )
    left = leftover_temp_files(settings)
    assert left == [], f"temp files left in final dirs: {left}"


def assert_registry_matches_journal(settings: Settings) -> None:
    """No model registered twice or from a run that did not succeed (lost lease, killed, failed)."""
    rows = registry_rows(settings)
    runs = {r["run_id"]: r for r in journal_runs(settings)}
    run_ids = [r["run_id"] for r in rows]
    assert len(run_ids) == len(set(run_ids)), f"a run registered more than one model: {rows}"
    for row in rows:
        run = runs.get(row["run_id"])
        assert run is not None, f"{row['model_id']} names unknown run {row['run_id']}"
        assert run["state"] == "succeeded", (
            f"{row['model_id']} was registered by run {run['run_id']}, "
            f"which ended {run['state']}: {run['message']}"
        )
        assert run["model_id"] == row["model_id"], (row, run)
        assert row["fencing_token"] == run["fencing_token"], (row, run)
    for run in runs.values():
        if run["state"] == "succeeded":
            assert run["model_id"] in {r["model_id"] for r in rows}, f"succeeded run without a model: {run}"
    by_config: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_config.setdefault(row["config_key"], []).append(row)
    for config, models in by_config.items():
        tokens = [m["fencing_token"] for m in models]
        assert all(t is not None for t in tokens), (config, models)
        assert tokens == sorted(set(tokens)), f"{config}: fencing tokens not strictly increasing: {tokens}"


# -- alerts --------------------------------------------------------------------------------
def active_alerts(settings: Settings, now: datetime | None = None) -> list[dict[str, Any]]:
    """Active alerts from the state db (the service must not be running)."""
    from daemon.decide.health import TrainingHealthMonitor
    from daemon.service.evaluator import alert_dict

    monitor = TrainingHealthMonitor.from_settings(settings.state_dir / "decide.db", settings.health)
    monitor.open()
    try:
        report = monitor.get_health_status(now=now or datetime.now(UTC))
        return [alert_dict(a) for a in report.active_alerts]
    finally:
        monitor.close()


def failure_alert(alerts: list[dict[str, Any]], config: str) -> dict[str, Any] | None:
    for a in alerts:
        if a["config"] == config and a["kind"] == "consecutive_failures":
            return a
    return None
