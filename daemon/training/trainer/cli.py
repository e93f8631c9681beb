"""``python -m daemon.training``: argument parsing, signals, error -> exit code.

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
from pathlib import Path
from typing import Any

from daemon.training.exitcodes import ExitCode, TrainerError
from daemon.training.pidrecords import proc_start_time


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse exits 2 == BAD_ARGS already; add the JSON line
        _print_json({"event": "error", "code": ExitCode.BAD_ARGS.name, "message": message})
        super().error(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m daemon.training", description="Train one model from one NPZ file.")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True, help="output directory (model.pt)")
    p.add_argument("--epochs", type=int, required=True)
    p.add_argument("--batch-size", type=int, required=True)
    p.add_argument("--init", type=Path, help="parent checkpoint to warm-start from")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--fencing-token", type=int)
    p.add_argument(
        "--allow-legacy-pickle",
        action="store_true",
        help="allow legacy NPZ files with object arrays (uses pickle: trusted files only)",
    )
    p.add_argument("--run-id")
    p.add_argument("--data-hash")
    p.add_argument("--parent", help="parent model id (lineage)")
    p.add_argument("--channels", type=int)
    p.add_argument("--blocks", type=int)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--patience", type=int, default=3)
    p.add_argument("--heartbeat-interval", type=float, default=30.0)
    p.add_argument("--debug-nan-at-step", type=int, help=argparse.SUPPRESS)
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


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    env = os.environ if environ is None else environ
    for name in ("epochs", "batch_size", "patience"):
        if getattr(args, name) <= 0:
            _print_json({"event": "error", "code": "BAD_ARGS", "message": f"--{name} must be > 0"})
            return int(ExitCode.BAD_ARGS)
    # torch is imported only here, after argument checks (fast --help, fast BAD_ARGS).
    from daemon.training.trainer import ddp
    from daemon.training.trainer.train import StopFlag, TrainConfig, Trainer

    info = ddp.dist_info_from_env(env)
    stop = StopFlag()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda _s, _f: stop.set())
    supervisor = env.get("RINGRIFT_SUPERVISOR_PID", "")
    if supervisor.isdigit():
        watch_supervisor(int(supervisor), stop.set)

    def emit(obj: dict[str, Any]) -> None:
        if info.is_main:
            _print_json(obj)

    cfg = TrainConfig(
        data=args.data,
        out=args.out,
        epochs=args.epochs,
        batch_size=args.batch_size,
        init=args.init,
        device=args.device,
        fencing_token=args.fencing_token,
        allow_legacy_pickle=args.allow_legacy_pickle,
        run_id=args.run_id,
        data_hash=args.data_hash,
        parent=args.parent,
        channels=args.channels,
        blocks=args.blocks,
        lr=args.lr,
        seed=args.seed,
        patience=args.patience,
        heartbeat_interval=args.heartbeat_interval,
        debug_nan_at_step=args.debug_nan_at_step,
    )
    try:
        trainer = Trainer(cfg, info=info, emit=emit, stop=stop)
        trainer.setup()
        return int(trainer.run())
    except TrainerError as exc:
        print(f"trainer: {exc.code.name}: {exc.message}", file=sys.stderr, flush=True)
        emit({"event": "error", "code": exc.code.name, "message": exc.message})
        return int(exc.code)
    except Exception as exc:
        traceback.print_exc()
        emit({"event": "error", "code": "INTERNAL_ERROR", "message": f"{type(exc).__name__}: {exc}"})
        return int(ExitCode.INTERNAL_ERROR)
    finally:
        ddp.close(info)
