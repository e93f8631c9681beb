"""The trainer process (``python -m daemon.training``): the only code that imports torch."""
