"""``python -m daemon.training`` (orphan detection matches this in command lines)."""

from daemon.training.trainer.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
