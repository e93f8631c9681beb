"""``python -m daemon.training`` (orphan detection matches this in command lines).

The parent-death signal is set first, before the imports (``import torch`` takes seconds):
see :mod:`daemon.training.pdeathsig`.
"""

from daemon.training.pdeathsig import set_parent_death_signal

set_parent_death_signal()

from daemon.training.trainer.cli import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
