"""Model training: the torch trainer subprocess and its asyncio supervisor.

Importing this package never imports torch: the service imports ``exitcodes``
and ``runner`` only; ``model``, ``data``, ``train`` and ``ddp`` are for the
``python -m daemon.training`` process.
"""
