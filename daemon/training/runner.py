"""Asyncio supervisor for one trainer subprocess (never imports torch).

The trainer runs in its own session (pgid == pid) so timeout, cancel (lease lost)
and heartbeat loss end the whole group: SIGTERM, ``grace`` seconds for the trainer
to checkpoint, then SIGKILL; the child is always reaped. stdout carries one JSON
progress object per line; anything else is logged and ignored. stderr is logged
and its tail kept for the outcome (:mod:`daemon.training.outcome` classifies it).

The trainer sets a parent-death signal (:mod:`daemon.training.pdeathsig`): the kernel sends
it when the thread that forked the trainer exits, i.e. this runner's event-loop thread, so
run the loop in a thread that lives as long as the service (``asyncio.run`` in the main
thread does).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import orjson
import structlog

from daemon.training.args import TrainerArgs
from daemon.training.exitcodes import exit_name
from daemon.training.outcome import Reason, TrainerOutcome, classify
from daemon.training.pdeathsig import SUPERVISOR_PID_ENV
from daemon.training.pidrecords import group_alive, pids_of_run, reap_orphans, record_path, write_record

__all__ = ["Reason", "TrainerArgs", "TrainerOutcome", "TrainerRunner", "reap_orphans"]

log = structlog.get_logger(__name__)

_DROP_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
_POLL = 0.05


class TrainerRunner:
    def __init__(
        self,
        *,
        python: str = sys.executable,
        timeout: float,
        grace: float,
        heartbeat_timeout: float,
        state_dir: Path,
        env: Mapping[str, str] | None = None,
        omp_num_threads: int | None = None,
        nproc_per_node: int = 1,
        launcher: Literal["auto", "torchrun"] = "auto",
        cwd: Path | None = None,
        line_limit: int = 8 * 1024 * 1024,
        stderr_tail_lines: int = 40,
    ) -> None:
        self.python = python
        self.timeout = timeout
        self.grace = grace
        self.heartbeat_timeout = heartbeat_timeout
        self.state_dir = state_dir
        self.base_env = dict(env or {})
        self.omp_num_threads = omp_num_threads
        self.nproc_per_node = nproc_per_node
        # auto: torchrun only for several processes; "torchrun" also for one (the GPU check).
        self.launcher = launcher
        self.cwd = cwd
        self.line_limit = line_limit
        self.stderr_tail_lines = stderr_tail_lines

    def command(self, args: TrainerArgs) -> list[str]:
        if self.nproc_per_node > 1 or self.launcher == "torchrun":
            launcher = [
                self.python,
                "-m",
                "torch.distributed.run",
                "--standalone",
                "--nproc-per-node",
                str(self.nproc_per_node),
                "-m",
                "daemon.training",
            ]
        else:
            launcher = [self.python, "-m", "daemon.training"]
        return [*launcher, *args.to_argv()]

    def child_env(self, run_id: str) -> dict[str, str]:
        env = {k: v for k, v in self.base_env.items() if k not in _DROP_ENV}
        env["PYTHONUNBUFFERED"] = "1"
        env["TQDM_DISABLE"] = "1"
        env["RINGRIFT_RUN_ID"] = run_id
        # The trainer stops itself (checkpoint, exit) if this process dies without stopping it.
        env[SUPERVISOR_PID_ENV] = str(os.getpid())
        if self.omp_num_threads is not None:
            env["OMP_NUM_THREADS"] = str(self.omp_num_threads)
        return env

    async def run(
        self,
        args: TrainerArgs,
        *,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
        cancel: asyncio.Event | None = None,
        run_id: str,
        argv: Sequence[str] | None = None,
    ) -> TrainerOutcome:
        """Run one trainer to the end; ``argv`` replaces the whole command (tests)."""
        cmd = list(argv) if argv is not None else self.command(args)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        proc = await asyncio.create_subprocess_exec(
            *cmd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self.child_env(run_id),
            cwd=self.cwd,
            start_new_session=True,
            limit=self.line_limit,
        )
        pid = pgid = proc.pid  # new session: the child leads its own group
        rec = write_record(self.state_dir, run_id, pid, pgid, cmd, datetime.now(UTC).isoformat())
        log.info("trainer.started", run_id=run_id, pid=pid, argv=cmd)
        state = _StreamState(loop.time(), collections.deque(maxlen=self.stderr_tail_lines))
        assert proc.stdout is not None and proc.stderr is not None
        readers = [
            asyncio.create_task(self._read_stdout(proc.stdout, state, on_progress, run_id)),
            asyncio.create_task(self._read_stderr(proc.stderr, state, run_id)),
        ]
        reason: Reason | None = None
        try:
            reason = await self._supervise(proc, state, cancel, t0)
            if reason is not None:
                await self._stop_group(proc, pgid, run_id, reason)
        finally:
            if proc.returncode is None:  # cancelled by our caller: never leave the group running
                await self._stop_group(proc, pgid, run_id, "cancelled")
            await self._kill_stragglers(pgid)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.gather(*readers, return_exceptions=True), 5.0)
            for task in readers:
                task.cancel()
            rec.unlink(missing_ok=True)
        rc = proc.returncode if proc.returncode is not None else -signal.SIGKILL
        return self._outcome(rc, reason, loop.time() - t0, state, pid, run_id, args)

    async def _supervise(
        self, proc: asyncio.subprocess.Process, state: _StreamState, cancel: asyncio.Event | None, t0: float
    ) -> Reason | None:
        """Wait for exit; return why we must stop the trainer (None: it exited by itself)."""
        loop = asyncio.get_running_loop()
        waiter = asyncio.ensure_future(proc.wait())
        cancel_task = asyncio.ensure_future(cancel.wait()) if cancel is not None else None
        try:
            while True:
                now = loop.time()
                if now >= t0 + self.timeout:
                    return "timeout"
                if now >= state.last_activity + self.heartbeat_timeout:
                    return "heartbeat"
                wake = min(t0 + self.timeout, state.last_activity + self.heartbeat_timeout) - now
                pending = {waiter} | ({cancel_task} if cancel_task else set())
                done, _ = await asyncio.wait(
                    pending, timeout=max(wake, _POLL), return_when=asyncio.FIRST_COMPLETED
                )
                if waiter in done:
                    return None
                if cancel_task is not None and cancel_task in done:
                    return "cancelled"
        finally:
            if cancel_task is not None:
                cancel_task.cancel()
            if not waiter.done():
                waiter.cancel()

    async def _stop_group(self, proc: asyncio.subprocess.Process, pgid: int, run_id: str, why: str) -> None:
        log.warning("trainer.stopping", run_id=run_id, pgid=pgid, reason=why, grace=self.grace)
        _killpg(pgid, signal.SIGTERM)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.grace
        while loop.time() < deadline and (proc.returncode is None or group_alive(pgid)):
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(proc.wait(), _POLL)
        if proc.returncode is None or group_alive(pgid):
            log.warning("trainer.killed", run_id=run_id, pgid=pgid)
            _killpg(pgid, signal.SIGKILL)
        for pid in pids_of_run(run_id):  # workers that left the group (torchrun's own sessions)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        # Bounded: proc.wait() also waits for the pipes, which an escaped process may hold open.
        deadline = loop.time() + 10.0
        while proc.returncode is None and loop.time() < deadline:
            await asyncio.sleep(_POLL)

    async def _kill_stragglers(self, pgid: int) -> None:
        """Processes left in the group after the leader exited (forked helpers) are killed."""
        if group_alive(pgid):
            _killpg(pgid, signal.SIGKILL)
            for _ in range(100):
                if not group_alive(pgid):
                    break
                await asyncio.sleep(_POLL)

    async def _read_stdout(
        self,
        stream: asyncio.StreamReader,
        state: _StreamState,
        on_progress: Callable[[dict[str, Any]], None] | None,
        run_id: str,
    ) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                raw = await stream.readline()
            except ValueError:  # a line beyond line_limit: the reader drops it
                log.warning("trainer.output_overlong", run_id=run_id, limit=self.line_limit)
                continue
            if not raw:
                return
            text = raw.decode(errors="replace").rstrip("\r\n")
            try:
                event = orjson.loads(text) if text.startswith("{") else None
            except orjson.JSONDecodeError:
                event = None
            if not isinstance(event, dict):
                if text.strip():
                    log.info("trainer.output", run_id=run_id, line=text[:2000])
                continue
            state.last_activity = loop.time()
            state.last_progress = event
            kind = event.get("event")
            if kind == "done":
                state.done = event
            elif kind == "error":
                state.error = event
            elif kind == "start":
                state.started_at = loop.time()
            if kind == "epoch":
                _log_epoch(run_id, event, loop.time() - (state.started_at or loop.time()))
            else:
                log.debug("trainer.progress", run_id=run_id, progress=event)
            if on_progress is not None:
                try:
                    on_progress(event)
                except Exception:
                    log.exception("trainer.progress_callback_failed", run_id=run_id)

    async def _read_stderr(self, stream: asyncio.StreamReader, state: _StreamState, run_id: str) -> None:
        while True:
            try:
                raw = await stream.readline()
            except ValueError:
                log.warning("trainer.stderr_overlong", run_id=run_id, limit=self.line_limit)
                continue
            if not raw:
                return
            line = raw.decode(errors="replace").rstrip("\r\n")
            state.stderr_tail.append(line[:2000])
            log.info("trainer.stderr", run_id=run_id, line=line[:2000])

    def _outcome(
        self,
        rc: int,
        stopped: Reason | None,
        duration: float,
        state: _StreamState,
        pid: int,
        run_id: str,
        args: TrainerArgs,
    ) -> TrainerOutcome:
        code, name, reason, checkpoint = classify(rc, stopped, state.done, state.error, args.out / "model.pt")
        outcome = TrainerOutcome(
            code, name, duration, state.last_progress, checkpoint, reason, pid, pid,
            list(state.stderr_tail), process_exit=rc,
        )  # fmt: skip
        if reason == "teardown_crash":
            # The run finished (done + complete checkpoint); a process died tearing down after it.
            log.warning(
                "trainer.teardown_crash",
                run_id=run_id,
                process_exit=rc,
                process_exit_name=exit_name(rc),
                checkpoint=str(checkpoint),
                stderr_tail=list(state.stderr_tail)[-5:],
            )
        log.info(
            "trainer.exited",
            run_id=run_id,
            exit_code=code,
            exit_name=name,
            reason=reason,
            process_exit=rc,
            duration=round(duration, 3),
            checkpoint=str(checkpoint) if checkpoint else None,
        )
        return outcome


def _log_epoch(run_id: str, e: dict[str, Any], since_start: float) -> None:
    """One INFO line per epoch (the operator's progress view; the full event goes to DEBUG)."""
    epoch, epochs = e.get("epoch"), e.get("epochs")
    eta: float | None = None
    if isinstance(epoch, int) and isinstance(epochs, int) and epoch > 0 and since_start > 0:
        eta = round(since_start / epoch * max(0, epochs - epoch), 1)  # an upper bound: early stop ends sooner
    sps = e.get("samples_per_second")
    log.info(
        "trainer.epoch",
        run_id=run_id,
        epoch=epoch,
        epochs=epochs,
        train_loss=_round(e.get("train_loss")),
        val_loss=_round(e.get("val_loss")),
        policy_accuracy=_round(e.get("policy_accuracy")),
        samples_per_second=round(sps, 1) if isinstance(sps, int | float) else None,
        eta_seconds=eta,
    )
    log.debug("trainer.progress", run_id=run_id, progress=e)


def _round(v: Any) -> Any:
    return round(v, 4) if isinstance(v, float) else v


@dataclass
class _StreamState:
    last_activity: float
    stderr_tail: collections.deque[str]
    last_progress: dict[str, Any] | None = None
    done: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    started_at: float | None = None  # loop time of the ``start`` event (the ETA's origin)


def _killpg(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


__all__ += ["record_path"]
