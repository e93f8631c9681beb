"""``ringrift-daemon``: the command line, the only place that prints.

:func:`main` builds the one ``Settings`` object and configures logging; each command
lives in a module of its own and returns an exit code (:mod:`daemon.cli.exits`).
"""

from daemon.cli.exits import EXIT_BAD_ARGS, EXIT_BAD_SETTINGS, EXIT_FAILURE, EXIT_OK, EXIT_STARTUP_FAILURE
from daemon.cli.main import build_parser, main

__all__ = [
    "EXIT_BAD_ARGS",
    "EXIT_BAD_SETTINGS",
    "EXIT_FAILURE",
    "EXIT_OK",
    "EXIT_STARTUP_FAILURE",
    "build_parser",
    "main",
]
