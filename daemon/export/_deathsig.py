"""First module the export's forkserver imports (its preload): it and its workers die with the service.

Set before :mod:`daemon.export.workers` and its imports (numpy, the encoder) load, so a
service killed during that import does not leave the forkserver behind. The kernel signals
when the thread that started the forkserver exits (the service's export thread, which lives
as long as the service's executor). The setting is not inherited across fork, so every child
the forkserver forks sets its own at once (an at-fork hook): a worker still waiting for its
start-up data from a service that died would otherwise wait forever, before the pool's
initializer ever runs. Never imported by the service itself.
"""

import os

from daemon.training.pdeathsig import set_parent_death_signal

_forker = [0]


def _before_fork() -> None:
    _forker[0] = os.getpid()


def _in_child() -> None:
    set_parent_death_signal()
    if os.getppid() != _forker[0]:  # the forkserver died before the signal was set
        os._exit(1)


set_parent_death_signal()
os.register_at_fork(before=_before_fork, after_in_child=_in_child)
