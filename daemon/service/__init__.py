"""The long-running service: composition root, scheduler loop, HTTP, metrics, systemd."""
