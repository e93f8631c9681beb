"""``ringrift-daemon``: the composition root.

Settings are loaded here once (file + environment) and passed down; this is the
only module that reads ``os.environ``.

Exit codes (stable): 0 ok; 1 failure (the reasons are printed); 2 bad settings
or bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from daemon import __version__
from daemon.api.settings import CONFIG_ENV
from daemon.cli.exits import (
    EXIT_ALREADY_RUNNING,
    EXIT_BAD_SETTINGS,
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_STARTUP_FAILURE,
)
from daemon.cli.output import print_error, print_json
from daemon.cli.registry import add_registry_arguments
from daemon.keys import InvalidConfigKey, validate_config_key
from daemon.logs import configure_logging
from daemon.settings import Settings, SettingsError, load_settings

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse's own exit code is 2 as well
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_SETTINGS)


def _config_key(value: str) -> str:
    try:
        return validate_config_key(value)
    except InvalidConfigKey as e:
        raise argparse.ArgumentTypeError(str(e)) from None


CONFIG_HELP = "settings file (default: config.yaml if present, else built-in defaults)"
JSON_HELP = 'print one JSON object on stdout (errors as {"error": ...})'


def common_options() -> argparse.ArgumentParser:
    """Options every command and action accepts in any position (``status --config X`` and
    ``--config X status`` alike). SUPPRESS: an option not given here keeps the value given
    before the command, instead of resetting it to a default."""
    common = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    common.add_argument("--config", type=Path, default=argparse.SUPPRESS, help=CONFIG_HELP)
    common.add_argument(
        "--log-level", default=argparse.SUPPRESS, choices=LOG_LEVELS, help="log level (default INFO)"
    )
    return common


def build_parser() -> argparse.ArgumentParser:
    common = common_options()
    p = _Parser(prog="ringrift-daemon", description="RingRift training daemon", allow_abbrev=False)
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument("--config", type=Path, default=None, help=CONFIG_HELP)
    p.add_argument("--log-level", default="INFO", choices=LOG_LEVELS, help="log level (default INFO)")
    sub: Any = p.add_subparsers(
        dest="command", required=True, parser_class=_Parser, metavar="COMMAND", help="the command to run"
    )

    def cmd(name: str, help: str, *, json: bool = True) -> argparse.ArgumentParser:
        sp: argparse.ArgumentParser = sub.add_parser(
            name, help=help, description=help, parents=[common], allow_abbrev=False
        )
        if json:
            sp.add_argument("--json", action="store_true", help=JSON_HELP)
        return sp

    run = cmd("run", "run the service", json=False)
    run.add_argument("--once", action="store_true", help="one tick, wait for its runs, then exit")
    run.add_argument("--demo", action="store_true", help="also run the synthetic self-play writer")
    cmd("status", "per-config decisions, locks, runs, models and alerts")
    cmd("check", "validate settings and reachability (exit 0, or 1 when the service could not run)")
    tr = cmd("train", "run one pipeline pass for a config now")
    tr.add_argument("config_key", type=_config_key, metavar="CONFIG", help="config key, e.g. square8_2p")
    tr.add_argument("--force", action="store_true", help="export even if the cache says nothing changed")
    ex = cmd("export", "export a config's games to its NPZ file")
    ex.add_argument("config_key", type=_config_key, metavar="CONFIG", help="config key, e.g. square8_2p")
    ex.add_argument("--force", action="store_true", help="export even if the cache says nothing changed")
    ex.add_argument(
        "--output", type=Path, default=None, help="NPZ path (default data_dir/training/CONFIG.npz)"
    )
    cmd("health", "health status and active alerts")
    ev = cmd("evaluation", "evaluation work for the promotion tests", json=False)
    ev_actions = ev.add_subparsers(
        dest="evaluation_action", required=True, metavar="ACTION", help="what to list"
    )
    pend = ev_actions.add_parser(
        "pending",
        help="the candidate/production pairs whose test still needs games",
        description="the candidate/production pairs whose test still needs games",
        parents=[common],
        allow_abbrev=False,
    )
    pend.add_argument("--json", action="store_true", help=JSON_HELP)
    cmd("locks", "held training locks (holder, token, TTL left)")
    rg = cmd("registry", "model registry: list | show | lineage | promote | verify | pull", json=False)
    add_registry_arguments(rg, parents=[common])
    sim = cmd("selfplay-sim", "write synthetic self-play games at a rate (demo / tests)", json=False)
    sim.add_argument("--db", type=Path, required=True, help="game database to write (created if missing)")
    sim.add_argument(
        "--config-key",
        "--key",
        dest="keys",
        type=_config_key,
        action="append",
        required=True,
        help="config to write games for (repeat for several)",
    )
    sim.add_argument("--rate", type=float, default=20.0, help="games per second")
    sim.add_argument("--games", type=int, default=None, help="stop after this many games")
    sim.add_argument("--seed", type=int, default=0, help="random seed")
    return p


def main(argv: Sequence[str] | None = None, environ: dict[str, str] | None = None) -> int:
    env = dict(os.environ if environ is None else environ)
    args = build_parser().parse_args(argv)
    as_json = bool(getattr(args, "json", False))
    configure_logging(args.log_level)
    named = env.pop(CONFIG_ENV, None)  # the settings file's name (DESIGN 10), not a settings field
    path = args.config if args.config is not None else (Path(named) if named else None)
    try:
        settings = load_settings(path, env)
    except SettingsError as e:
        print_error(f"bad settings: {e}", as_json)
        return EXIT_BAD_SETTINGS
    handler = _HANDLERS[args.command]
    try:
        return handler(settings, args, env)
    except KeyboardInterrupt:
        return EXIT_FAILURE
    except SettingsError as e:
        print_error(f"bad settings: {e}", as_json)
        return EXIT_BAD_SETTINGS


def _run(settings: Settings, args: argparse.Namespace, env: dict[str, str]) -> int:
    from daemon.service.instance import InstanceLockedError
    from daemon.service.supervisor import ServiceStartError, run_service

    try:
        return asyncio.run(run_service(settings, once=args.once, demo=args.demo, environ=env))
    except InstanceLockedError as e:
        print_error(str(e), False)
        return EXIT_ALREADY_RUNNING
    except ServiceStartError as e:
        print_error(f"could not start: {e}", False)
        return EXIT_STARTUP_FAILURE


def _status(settings: Settings, args: argparse.Namespace, env: dict[str, str]) -> int:
    from daemon.cli.status import cli_status

    return cli_status(settings, as_json=args.json)


def _check(settings: Settings, args: argparse.Namespace, env: dict[str, str]) -> int:
    from daemon.cli.check import cli_check

    return cli_check(settings, as_json=args.json, environ=env)


def _train(settings: Settings, args: argparse.Namespace, env: dict[str, str]) -> int:
    from daemon.cli.train import cli_train

    return cli_train(settings, args.config_key, force=args.force, as_json=args.json, environ=env)


def _export(settings: Settings, args: argparse.Namespace, env: dict[str, str]) -> int:
    from daemon.cli.export import cli_export

    return cli_export(settings, args.config_key, args.force, args.output, args.json)


def _health(settings: Settings, args: argparse.Namespace, env: dict[str, str]) -> int:
    from daemon.cli.health import cli_health

    return cli_health(settings, as_json=args.json)


def _evaluation(settings: Settings, args: argparse.Namespace, env: dict[str, str]) -> int:
    from daemon.cli.evaluation import cli_evaluation

    return cli_evaluation(settings, as_json=args.json, environ=env)


def _locks(settings: Settings, args: argparse.Namespace, env: dict[str, str]) -> int:
    from daemon.cli.locks import cli_locks

    return cli_locks(settings, as_json=args.json)


def _registry(settings: Settings, args: argparse.Namespace, env: dict[str, str]) -> int:
    from daemon.cli.registry import run_registry_command

    return run_registry_command(settings, args)


def _selfplay(settings: Settings, args: argparse.Namespace, env: dict[str, str]) -> int:
    from daemon.selfplay_sim import SelfPlaySim

    sim = SelfPlaySim(args.db, args.keys, args.rate, seed=args.seed)

    async def go() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        import signal

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        return await sim.run(stop, max_games=args.games)

    written = asyncio.run(go())
    print_json({"db": str(args.db), "written": written})
    return EXIT_OK


_HANDLERS: dict[str, Callable[[Settings, argparse.Namespace, dict[str, str]], int]] = {
    "run": _run,
    "status": _status,
    "check": _check,
    "train": _train,
    "export": _export,
    "health": _health,
    "evaluation": _evaluation,
    "locks": _locks,
    "registry": _registry,
    "selfplay-sim": _selfplay,
}
