"""Lease backends: ``redis`` (shared, fenced) and ``file`` (``flock``, one host)."""
