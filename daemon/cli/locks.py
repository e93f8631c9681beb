"""``ringrift-daemon locks [--json]``: held locks; the Redis part is reported even when down."""

from __future__ import annotations

from daemon.cli.exits import EXIT_FAILURE, EXIT_OK
from daemon.cli.output import print_error, print_json
from daemon.locks.admin import list_file_locks, list_redis_locks
from daemon.locks.backends.redis import REDIS_ERRORS
from daemon.settings import Settings


def cli_locks(settings: Settings, as_json: bool) -> int:
    r = settings.redis
    error: str | None = None
    rows = list_file_locks(settings.lock_dir)
    if r is not None and settings.locks.backend != "file":
        try:
            rows += list_redis_locks(r.url, r.key_prefix, r.resolved_password(), r.connect_timeout)
        except REDIS_ERRORS as e:
            error = f"redis {r.url}: {type(e).__name__}: {e}"
    if as_json:
        print_json({"locks": rows, "error": error})
    else:
        if not rows:
            print("no locks held")
        else:
            print(f"{'NAME':28} {'BACKEND':7} {'HOLDER':28} {'TOKEN':>15} {'TTL LEFT':>9}")
            for row in rows:
                ttl = "-" if row.get("ttl_left") is None else f"{row['ttl_left']:.1f}s"
                print(
                    f"{row['name']:28} {row['backend']:7} {row.get('holder') or '?':28} "
                    f"{row.get('token') if row.get('token') is not None else '?':>15} {ttl:>9}"
                )
        if error:
            print_error(error, False)
    return EXIT_OK if error is None else EXIT_FAILURE
