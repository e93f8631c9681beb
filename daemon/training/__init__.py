"""Model training: the trainer subprocess and its asyncio supervisor.

Importing this package never imports torch: the service imports ``exitcodes``,
``runner`` and ``pidrecords`` only; :mod:`daemon.training.trainer` is for the
``python -m daemon.training`` process.
"""
