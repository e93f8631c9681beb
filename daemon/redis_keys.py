"""Every Redis key the daemon uses, on one screen (arq's ``constants.py`` shape).

All keys start with the configured prefix (``redis.key_prefix``, default ``ringrift:``), so
several fleets can share one Redis and ``SCAN {prefix}*`` finds everything of one fleet.
Callers validate lock names and config keys before building keys (:mod:`daemon.locks.names`).
"""

from __future__ import annotations

DEFAULT_PREFIX = "ringrift:"

LEASE = "lock:"  # {prefix}lock:{name}        the lease: SET NX PX, value = the holder's owner token
LEASE_INFO = "lockinfo:"  # {prefix}lockinfo:{name}  hash: owner, token, info (holder JSON); same TTL
FENCE = "fence:"  # {prefix}fence:{name}       the fencing counter (INCR), never expires
RUN = "run:"  # {prefix}run:{config}         JSON of the config's last finished run on any node


def lock_keys(prefix: str, name: str) -> tuple[str, str, str]:
    """(lease key, holder-info key, fence counter key) of one lock name."""
    return f"{prefix}{LEASE}{name}", f"{prefix}{LEASE_INFO}{name}", f"{prefix}{FENCE}{name}"


def lease_pattern(prefix: str) -> str:
    """A ``SCAN MATCH`` pattern for every lease of ``prefix`` (glob characters escaped)."""
    head = f"{prefix}{LEASE}"
    return "".join("\\" + c if c in "*?[]\\" else c for c in head) + "*"


def lock_name_of(prefix: str, lease_key: str) -> str:
    """The lock name of a lease key found by :func:`lease_pattern`."""
    return lease_key[len(prefix) + len(LEASE) :]


def run_key(prefix: str, config: str) -> str:
    return f"{prefix}{RUN}{config}"
