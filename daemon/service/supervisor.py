"""The asyncio service: schedule, tick, dispatch, drain, shutdown.

Three APScheduler jobs (poll the databases, decide and dispatch, evaluate
health) call the same steps that :meth:`Service.tick` runs in sequence, so tests
drive the loop one tick at a time with an explicit ``now``. Signal handlers
only set flags; the drain runs in normal code with a bound.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog
from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from daemon.pipeline import Lease, PipelineResult
from daemon.service.app import App, build_app
from daemon.service.demo import DemoData, create_demo_db, demo_settings
from daemon.service.evaluation import pending
from daemon.service.http import HttpServer
from daemon.service.httplimits import raise_nofile_limit
from daemon.service.instance import InstanceLock
from daemon.service.leftovers import INSTANCE_ENV, mark_environment, reap_leftovers
from daemon.service.notify import SystemdNotifier, Watchdog
from daemon.service.recovery import recover
from daemon.settings import Settings

log = structlog.get_logger(__name__)

EXIT_OK = 0


class ServiceStartError(Exception):
    """``run`` could not start (port in use, state directory, registry settings ...)."""


@dataclass
class TickReport:
    dispatched: list[str] = field(default_factory=list)
    decisions: dict[str, Any] = field(default_factory=dict)


class Service:
    def __init__(
        self, app: App, *, notifier: SystemdNotifier | None = None, handle_signals: bool = True
    ) -> None:
        self.app = app
        self.settings = app.settings
        self.pipeline = app.pipeline
        self.evaluator = app.evaluator
        self.notifier = notifier or SystemdNotifier(None, None, None)
        self.watchdog = Watchdog(self.notifier)
        self.handle_signals = handle_signals
        self.tasks: dict[str, asyncio.Task[PipelineResult]] = {}
        self.results: list[PipelineResult] = []
        self.should_exit = asyncio.Event()
        self.force_exit = False
        self.scheduler: AsyncIOScheduler | None = None
        self.http: HttpServer | None = None
        self._dispatching = True

    # -- lifecycle ----------------------------------------------------------------
    async def start(self) -> None:
        await self.app.start()
        await recover(self.app, datetime.now(UTC))
        s = self.settings
        if s.http.enabled:
            self.http = HttpServer(
                s.http.host,
                s.http.port,
                self.app.prom,
                lambda: self.app.view,
                max_tick_age=3 * max(s.schedule.poll_interval, s.schedule.decide_interval) + 30,
                limits=s.http.limits,
                configs=s.configs,
                models=self.app.models,
                evaluation=self.evaluation_report,
            )
            await self.http.start()
        if self.handle_signals:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.request_stop, sig)
        self.app.view.service_running = True

    def evaluation_report(self) -> dict[str, Any]:
        """``GET /evaluation``: what ``evaluation pending --json`` prints, from this tick's tests."""
        return {"pending": pending(self.app.promoter.tests), "mode": self.settings.promotion.mode}

    def start_scheduler(self) -> None:
        s = self.settings.schedule
        sched = AsyncIOScheduler(
            job_defaults={
                "max_instances": 1,
                "coalesce": True,
                "misfire_grace_time": int(s.misfire_grace) or 1,
            }
        )
        now = datetime.now(UTC)
        sched.add_job(self.poll_job, "interval", seconds=s.poll_interval, id="poll", next_run_time=now)
        sched.add_job(self.decide_job, "interval", seconds=s.decide_interval, id="decide", next_run_time=now)
        sched.add_job(self.health_job, "interval", seconds=s.health_interval, id="health", next_run_time=now)
        if self.notifier.watchdog_enabled:
            every = max(0.5, (self.notifier.watchdog_interval or 10.0) / 2)
            sched.add_job(self.watchdog_job, "interval", seconds=every, id="watchdog")
        sched.add_listener(self._job_event, EVENT_JOB_ERROR | EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES)
        sched.start()
        self.scheduler = sched

    def _job_event(self, event: JobExecutionEvent) -> None:
        kind = {
            EVENT_JOB_ERROR: "error",
            EVENT_JOB_MISSED: "missed",
            EVENT_JOB_MAX_INSTANCES: "max_instances",
        }
        name = kind.get(event.code, "error")
        self.app.metrics.scheduler_events.labels(name).inc()
        log.warning(f"scheduler.job_{name}", job=event.job_id, error=str(getattr(event, "exception", "")))

    def request_stop(self, sig: int | None = None) -> None:
        """Signal handler: flags only. A second signal forces."""
        if self.should_exit.is_set():
            self.force_exit = True
        self.should_exit.set()

    # -- jobs -------------------------------------------------------------------
    async def poll_job(self) -> None:
        self.watchdog.beat(time.monotonic())
        t = time.monotonic()
        poll = await asyncio.to_thread(self.app.sources.poll)
        self.app.metrics.poll_duration.observe(time.monotonic() - t)
        now = datetime.now(UTC)
        self.evaluator.apply_poll(poll, now)
        await self.evaluator.ingest(now)
        await self.app.promoter.tick(now, self.app.view)

    async def decide_job(self) -> None:
        await self.decide(datetime.now(UTC))

    async def health_job(self) -> None:
        self.evaluator.evaluate_health(datetime.now(UTC))

    async def watchdog_job(self) -> None:
        self.watchdog.maybe_ping(time.monotonic())

    async def decide(self, now: datetime) -> TickReport:
        t = time.monotonic()
        report = TickReport()
        await self.evaluator.refresh_cluster()
        decisions = self.evaluator.decide(now, running=set(self.tasks))
        report.decisions = decisions
        if self._dispatching and not self.should_exit.is_set():
            slots = self.settings.training.max_concurrent - len(self.tasks)
            ready = sorted(
                (d for d in decisions.values() if d.should_train and d.key not in self.tasks),
                key=lambda d: -d.priority,
            )
            # Highest priority first; a config locked by another node is passed over, so
            # several nodes spread over the ready configs instead of queueing on one.
            for d in ready:
                if slots <= 0:
                    break
                lease = await self.pipeline.acquire(d.key)
                if isinstance(lease, str):
                    d.reason = f"{lease}; {d.reason}"
                    continue
                again = await self.evaluator.still_due(d.key, now, set(self.tasks))  # time is an argument
                if not again.should_train:  # trained elsewhere since this tick's read
                    await self.pipeline.release(lease)
                    decisions[d.key] = again
                    continue
                self._dispatch(d.key, d.reason, lease)
                report.dispatched.append(d.key)
                slots -= 1
        self.evaluator.publish(now, decisions, running=set(self.tasks))
        self.app.view.last_tick_ts = now.timestamp()
        self.watchdog.beat(time.monotonic())
        self.app.metrics.tick_duration.observe(time.monotonic() - t)
        log.debug("tick.finished", dispatched=report.dispatched)
        return report

    async def tick(self, now: datetime) -> TickReport:
        """One full pass (poll, health, decide and dispatch) for tests and ``--once``."""
        poll = await asyncio.to_thread(self.app.sources.poll)
        self.evaluator.apply_poll(poll, now)
        await self.evaluator.ingest(now)
        await self.app.promoter.tick(now, self.app.view)
        self.evaluator.evaluate_health(now)
        return await self.decide(now)

    def _dispatch(self, key: str, reason: str, lease: Lease) -> None:
        usable = self.app.view.configs[key].usable_games
        task = asyncio.create_task(
            self.pipeline.run_training(key, usable_games=usable, reason=reason, lease=lease),
            name=f"run:{key}",
        )
        self.tasks[key] = task
        task.add_done_callback(lambda t, k=key: self._done(k, t))  # type: ignore[misc]

    def _done(self, key: str, task: asyncio.Task[PipelineResult]) -> None:
        self.tasks.pop(key, None)
        if not task.cancelled() and task.exception() is None:
            self.results.append(task.result())
        elif not task.cancelled():  # run_training reports its failures; this is a bug, never silent
            log.error("run.crashed", config=key, error=repr(task.exception()))
        self.evaluator.publish(datetime.now(UTC), None, running=set(self.tasks))

    async def wait_runs(self) -> list[PipelineResult]:
        while self.tasks:
            await asyncio.wait(list(self.tasks.values()))
        return self.results

    # -- shutdown ---------------------------------------------------------------
    async def drain(self) -> None:
        """Stop dispatching; let runs finish within drain_timeout; then stop their trainers."""
        self._dispatching = False
        self.notifier.stopping(status=f"draining {len(self.tasks)} run(s)")
        # Keep systemd's stop timeout ahead of the drain and the trainers' grace.
        bound = self.settings.schedule.drain_timeout + self.settings.training.grace + 15
        self.notifier.extend_timeout(int(bound * 1_000_000))
        log.info("service.stopping", running=list(self.tasks))
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=False)
            self.scheduler = None
        deadline = time.monotonic() + self.settings.schedule.drain_timeout
        while self.tasks and not self.force_exit and time.monotonic() < deadline:
            await asyncio.wait(list(self.tasks.values()), timeout=0.2)
        for key in list(self.tasks):
            self.pipeline.stop(key)  # trainer gets SIGTERM -> checkpoint -> exit; then SIGKILL after grace
        if self.tasks:
            await asyncio.wait(list(self.tasks.values()), timeout=self.settings.training.grace + 10)

    async def close(self) -> None:
        if self.http is not None:
            await self.http.close()
        self.app.view.service_running = False
        await self.app.close()
        log.info("service.stopped")


async def run_service(
    settings: Settings, *, once: bool = False, demo: bool = False, environ: dict[str, str] | None = None
) -> int:
    env = dict(environ or {})
    # Before anything that reads or writes the state: recovery would end a live service's runs.
    instance = InstanceLock(settings.state_dir)
    instance.acquire()  # InstanceLockedError: the CLI prints it and exits EXIT_ALREADY_RUNNING
    try:
        soft, hard = raise_nofile_limit()  # systemd's soft default (1024) is too low for a burst
        log.info("service.nofile", soft=soft, hard=hard)
        # Export helpers a previous service of this data directory left (the lock proves it is gone).
        reaped = await asyncio.to_thread(reap_leftovers, settings.state_dir)
        if reaped:
            log.warning("recovery.leftovers_ended", pids=reaped)
        # This process's environment is what multiprocessing hands its helpers: mark them as ours
        # while the service runs (restored after: an in-process caller's children stay unmarked).
        previous = os.environ.get(INSTANCE_ENV)
        mark_environment(os.environ, settings.state_dir)
        try:
            return await _run_locked(settings, once=once, demo=demo, env=env)
        finally:
            if previous is None:
                os.environ.pop(INSTANCE_ENV, None)
            else:
                os.environ[INSTANCE_ENV] = previous
    finally:
        instance.release()


async def _run_locked(settings: Settings, *, once: bool, demo: bool, env: dict[str, str]) -> int:
    if demo:
        settings = demo_settings(settings)
        create_demo_db(settings)
    demo_task: asyncio.Task[None] | None = None
    demo_stop = asyncio.Event()
    notifier = SystemdNotifier.from_environ(env, pid=os.getpid())
    notifier.open()
    service = Service(build_app(settings, env), notifier=notifier)
    try:
        await service.start()
    except Exception as e:
        log.error("service.startup_failed", error=str(e))
        raise ServiceStartError(str(e)) from e  # the CLI prints it and exits EXIT_STARTUP_FAILURE
    if demo:
        demo_task = asyncio.create_task(DemoData(settings, service.app.models).run(demo_stop))
    try:
        log.info(
            "service.started",
            configs=len(settings.configs),
            backend=service.app.locks.backend,
            http=f"{settings.http.host}:{service.http.bound_port if service.http else '-'}",
        )
        if once:
            await service.tick(datetime.now(UTC))
            await service.wait_runs()
        else:
            service.start_scheduler()
            notifier.ready(status=f"{len(settings.configs)} configs, {service.app.locks.backend} locks")
            await service.should_exit.wait()
    finally:
        demo_stop.set()
        if demo_task is not None:
            await asyncio.gather(demo_task, return_exceptions=True)
        await service.drain()
        await service.close()
        notifier.close()
    return EXIT_OK
