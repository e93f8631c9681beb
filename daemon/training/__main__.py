"""``python -m daemon.training``."""

from daemon.training.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
