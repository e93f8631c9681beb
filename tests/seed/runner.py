"""Runs one chain of the design document's blocks in this process: ``python -m tests.seed.runner SPEC``.

The working directory is the chain's fresh directory. The blocks run one after another in one
namespace (a later block uses the names an earlier one made, as a reader's script would), each
exactly as the test wrote it (the document's text, only the import lines mapped). Names the
document leaves to its reader (``export_data``, ``run_training``) are stand-ins installed as
builtins: they do the real thing and note what they saw in the outcome. The block's names are
written to the outcome file as plain JSON for the test's assertions.
"""

from __future__ import annotations

import builtins
import dataclasses
import json
import runpy
import sys
from pathlib import Path
from typing import Any

SEEN: dict[str, Any] = {"export_data_calls": 0, "run_training_calls": []}
DB = Path("data/games/selfplay.db")


def export_data(*_args: Any, **_kwargs: Any) -> None:
    """The reader's export: this project's, of the block's database into data/training."""
    from daemon.api import script_settings
    from daemon.export.job import run_export

    SEEN["export_data_calls"] += 1
    run_export(script_settings(), "square8_2p", db_paths=[DB.absolute()], force=True)


def run_training(*_args: Any, **_kwargs: Any) -> None:
    """The reader's training, run while the block holds its lock: a second holder must be refused."""
    from daemon.api import DistributedLock, script_settings
    from daemon.locks.names import file_stem, redis_keys

    name = "training:square8_2p"
    other = DistributedLock(name)
    got = other.acquire(timeout=0)
    if got:
        other.release()
    seen: dict[str, Any] = {"second_holder_acquired": got, "backend": other.backend}
    settings = script_settings()
    if settings.redis is not None:
        import redis

        client = redis.Redis.from_url(settings.redis.url)
        try:
            seen["redis_lease_exists"] = bool(client.exists(redis_keys(settings.redis.key_prefix, name)[0]))
        finally:
            client.close()
    seen["lock_file_exists"] = (settings.lock_dir / f"{file_stem(name)}.lock").exists()
    SEEN["run_training_calls"].append(seen)


def plain(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return repr(value)


def main(argv: list[str]) -> int:
    spec = json.loads(Path(argv[0]).read_text())
    builtins.export_data = export_data  # type: ignore[attr-defined]
    builtins.run_training = run_training  # type: ignore[attr-defined]
    ns: dict[str, Any] = {}
    for path in spec["blocks"]:
        ns = runpy.run_path(path, init_globals=ns, run_name="__main__")
    names = {k: plain(v) for k, v in ns.items() if not k.startswith("__") and not callable(v)}
    Path(spec["outcome"]).write_text(json.dumps({"names": names, "seen": SEEN}, default=repr))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
