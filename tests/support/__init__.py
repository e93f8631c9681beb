"""Shared helpers for the test suite (real redis-server, synthetic databases)."""
