"""``python -m daemon.training``: argument parsing, signals, error -> exit code.

The supervisor's death stops the trainer, from the first line on: the parent-death
signal (:mod:`daemon.training.pdeathsig`, Linux) is set by ``__main__`` before anything
else is imported, and the
supervisor-pid watcher (portable backstop; also covers torchrun workers, whose parent
is torchrun) starts before ``import torch``. Both deliver SIGTERM: during the import
its default action ends the process (nothing to save yet); once the handlers are in,
the trainer finishes the step, saves and exits.

Test-only flag (hidden from --help): ``--debug-nan-at-step N`` multiplies the loss
by NaN from global step N so the DIVERGED path can be exercised on real data.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from daemon.training.args import TrainerArgs
from daemon.training.exitcodes import ExitCode, TrainerError
from daemon.training.pdeathsig import SUPERVISOR_PID_ENV
from daemon.training.pidrecords import proc_start_time


def build_parser() -> argparse.ArgumentParser:
    """The trainer's flags, from :class:`TrainerArgs` (the one definition); errors also go to stdout
    as a JSON ``error`` line, so the supervisor reads the reason."""
    p = TrainerArgs.parser()

    def error(message: str) -> Any:  # argparse exits 2 == BAD_ARGS already
        _print_json({"event": "error", "code": ExitCode.BAD_ARGS.name, "message": message})
        p.print_usage(sys.stderr)
        p.exit(int(ExitCode.BAD_ARGS), f"{p.prog}: error: {message}\n")

    p.error = error  # type: ignore[method-assign]
    return p


def _clean(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    return obj


def _print_json(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(_clean(obj)) + "\n")
    sys.stdout.flush()


def watch_supervisor(pid: int, on_gone: Callable[[], None], period: float = 1.0) -> threading.Thread:
    """Stop (like SIGTERM: finish the step, save, exit) when the supervising daemon dies.

    A daemon killed with SIGKILL cannot stop its trainer's process group; without
    this the trainer would keep the GPU busy for a run nobody will register.
    """
    start = proc_start_time(pid)

    def loop() -> None:
        while True:
            time.sleep(period)
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            except PermissionError:
                pass
            if start is not None and proc_start_time(pid) != start:  # the pid was reused
                break
        on_gone()

    t = threading.Thread(target=loop, name="supervisor-watch", daemon=True)
    t.start()
    return t


def _terminate_self() -> None:
    """SIGTERM to this process: the default action before the handlers are in, a clean stop after."""
    os.kill(os.getpid(), signal.SIGTERM)


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    env = os.environ if environ is None else environ
    try:
        cfg = TrainerArgs.from_namespace(ns)
    except ValueError as e:
        _print_json({"event": "error", "code": "BAD_ARGS", "message": str(e)})
        return int(ExitCode.BAD_ARGS)
    supervisor = env.get(SUPERVISOR_PID_ENV, "")
    if supervisor.isdigit():
        watch_supervisor(int(supervisor), _terminate_self)
    # torch is imported only here, after argument checks (fast --help, fast BAD_ARGS).
    import torch

    from daemon.training.trainer import ddp
    from daemon.training.trainer.train import StopFlag, Trainer

    if cfg.threads is not None:  # before any op: intra-op threads are fixed at first use
        torch.set_num_threads(cfg.threads)

    info = ddp.dist_info_from_env(env)
    stop = StopFlag()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda _s, _f: stop.set())

    def emit(obj: dict[str, Any]) -> None:
        if info.is_main:
            _print_json(obj)

    trainer: Trainer | None = None
    finished = False
    try:
        trainer = Trainer(cfg, info=info, emit=emit, stop=stop)
        trainer.setup()
        code = trainer.run()
        finished = True
        return int(code)
    except TrainerError as exc:
        print(f"trainer: {exc.code.name}: {exc.message}", file=sys.stderr, flush=True)
        emit({"event": "error", "code": exc.code.name, "message": exc.message})
        return int(exc.code)
    except Exception as exc:
        traceback.print_exc()
        emit({"event": "error", "code": "INTERNAL_ERROR", "message": f"{type(exc).__name__}: {exc}"})
        return int(ExitCode.INTERNAL_ERROR)
    finally:
        sys.stdout.flush()
        ddp.close(info, getattr(trainer, "device", None), finished=finished)
