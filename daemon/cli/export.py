"""``ringrift-daemon export CONFIG [--force] [--output PATH] [--json]``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

from daemon.cli.exits import EXIT_BAD_ARGS, EXIT_FAILURE, EXIT_OK
from daemon.cli.output import not_enabled, print_error, print_json
from daemon.export.job import ExportError, run_export
from daemon.keys import InvalidConfigKey, validate_config_key
from daemon.settings import Settings


class ProgressBar:
    """A one-line progress bar on a terminal (stderr)."""

    def __init__(self, stream: TextIO, label: str) -> None:
        self.stream, self.label = stream, label

    def __call__(self, done: int, total: int) -> None:
        frac = done / total if total else 1.0
        filled = int(30 * frac)
        self.stream.write(f"\r{self.label} [{'#' * filled}{'.' * (30 - filled)}] {done}/{total} games")
        if done >= total:
            self.stream.write("\n")
        self.stream.flush()


def cli_export(settings: Settings, config_key: str, force: bool, output: Path | None, as_json: bool) -> int:
    try:
        validate_config_key(config_key)
    except InvalidConfigKey as e:
        print_error(str(e), as_json)
        return EXIT_BAD_ARGS
    problem = not_enabled(config_key, settings.configs)
    if problem is not None:
        print_error(problem, as_json)
        return EXIT_BAD_ARGS
    bar = ProgressBar(sys.stderr, config_key) if sys.stderr.isatty() and not as_json else None
    try:
        result = run_export(settings, config_key, force=force, output=output, progress=bar)
    except ExportError as e:
        print_error(f"export {config_key} failed: {e}", as_json, config=config_key)
        return EXIT_FAILURE
    if as_json:
        print_json(result.as_dict())
    else:
        state = "cache hit" if result.cache_hit else "exported"
        print(
            f"{result.config}: {state}: {result.games} games, {result.samples} samples, {result.bytes:,} B "
            f"-> {result.output} in {result.seconds:.2f}s ({result.reason})"
        )
    return EXIT_OK
