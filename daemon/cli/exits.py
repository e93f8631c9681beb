"""The CLI's exit codes (stable: scripts and systemd's ``RestartPreventExitStatus`` use them)."""

EXIT_OK = 0
EXIT_FAILURE = 1  # the command ran and failed; the reason is printed
EXIT_BAD_SETTINGS = 2  # bad settings file, environment override or arguments
EXIT_BAD_ARGS = 2
EXIT_STARTUP_FAILURE = 3  # ``run``: the service could not start (port in use, state dir ...)
EXIT_ALREADY_RUNNING = 4  # ``run``: another service holds this data directory's instance lock
