"""First module the export's forkserver imports (its preload): it dies with the service.

Set before :mod:`daemon.export.workers` and its imports (numpy, the encoder) load, so a
service killed during that import does not leave the forkserver behind. The kernel signals
when the thread that started the forkserver exits (the service's export thread, which lives
as long as the service's executor). Workers forked from it set their own (the pool's
initializer): the setting is not inherited across fork. Never imported by the service itself.
"""

from daemon.training.pdeathsig import set_parent_death_signal

set_parent_death_signal()
