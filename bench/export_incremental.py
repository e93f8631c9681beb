"""Re-export after +5% new games (incremental, segments) vs the full export of the same data.

``python -m bench export_incremental [--games 10000] [--new 500] [--rounds 3]`` prints one JSON
object. A private copy of a cached database of ``--games`` usable ``square8_2p`` games with
moves (:func:`bench.dbcache.moves_db`); default settings (``export.workers: 2``). Each round:
the incremental exporter is brought up to date, a writer commits ``--new`` more games, then

* ``reexport``: ``run_export`` with ``export.incremental`` (encodes only the new games and
  assembles the NPZ from the segments);
* ``full``: ``run_export(force=True)`` of the same database with ``export.incremental: false``
  into another data directory (every game read and encoded);

and the two outputs must hold the same members byte for byte (all but ``created_at``). Each
round does this twice, on its own batch of new games: through the ``export`` command's path
(``cli``: a fresh snapshot of the source) and through the service's (``service``: the
snapshot of the poll's warm database, refreshed after the new games). Target: reexport <=
0.25 x full (medians) on the service's path; the command's is printed beside it.

``--window N``: the tier table scaled down in this process so every export takes the newest
``N`` games (``max_games``, as the large tiers do above 100,000 games): each round's new games
slide the window, whose oldest segments drop out (and the one it cuts is encoded again).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import orjson

from bench.dbcache import moves_db, working_copy
from daemon.data.sources import GameSources
from daemon.export import tiers
from daemon.export.job import run_export
from daemon.logs import configure_logging
from daemon.selfplay_sim import GameFactory, connect_writer, insert_game
from daemon.settings import Settings, settings_from_mapping

KEY = "square8_2p"
# cli: the ``export`` command's path (a fresh snapshot of each source); service: the
# service's (the snapshot its poll holds, refreshed incrementally: DESIGN 13, issue 22 item 1).
VARIANTS = ("cli", "service")


def settings_for(data: Path, db: Path, incremental: bool) -> Settings:
    return settings_from_mapping(
        {
            "data_dir": str(data),
            "game_dbs": [str(db)],
            "configs": [KEY],
            "export": {"min_free_bytes": 0, "incremental": incremental},
        }
    )


def members(npz: Path) -> dict[str, str]:
    """sha256 of every member but ``created_at`` (streamed: the file is large)."""
    out = {}
    with zipfile.ZipFile(npz) as z:
        for info in z.infolist():
            if info.filename == "created_at.npy":
                continue
            h = hashlib.sha256()
            with z.open(info) as f:
                while chunk := f.read(1 << 22):
                    h.update(chunk)
            out[info.filename] = h.hexdigest()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--games", type=int, default=10_000)
    p.add_argument("--new", type=int, default=500)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--window", type=int, default=None, help="max_games of every export")
    a = p.parse_args(argv)
    if a.window is not None:
        tiers.TIERS = (tiers.Tier("window", 0, a.window, 1, 100, 128),)
    configure_logging("WARNING", json=True)
    t = time.perf_counter()
    src = moves_db(a.games)
    build_s = time.perf_counter() - t
    load_before = os.getloadavg()
    times: dict[str, dict[str, list[float]]] = {v: {"re": [], "full": []} for v in VARIANTS}
    same, rounds = True, []
    with tempfile.TemporaryDirectory(prefix="bench_export_inc_") as d:
        tmp = Path(d)
        db = working_copy(src, tmp / "games.db")
        inc, full = settings_for(tmp / "inc", db, True), settings_for(tmp / "full", db, False)
        writer = connect_writer(db)
        factory = GameFactory(KEY, 4242, source="bench-new")
        warm = GameSources([str(db)], [KEY])  # the service's poll: one warm GameDB per source
        try:
            warm.poll()
            run_export(full, KEY, force=True)  # warm the page cache and the worker forkserver
            for _ in range(a.rounds):
                for variant in VARIANTS:  # each on its own batch of new games
                    base = run_export(inc, KEY)  # up to date before the new games
                    for _ in range(a.new):
                        insert_game(writer, factory.make("completed"))
                    refresh = None
                    if variant == "service":
                        warm.poll()  # the poll that saw the new games, as in the service
                        refresh = warm.snapshot_readable
                    t = time.perf_counter()
                    r = run_export(inc, KEY, refresh=refresh)
                    times[variant]["re"].append(time.perf_counter() - t)
                    t = time.perf_counter()
                    f = run_export(full, KEY, force=True, refresh=refresh)
                    times[variant]["full"].append(time.perf_counter() - t)
                    ok = (r.games, r.samples) == (f.games, f.samples) and members(r.output) == members(
                        f.output
                    )
                    same = same and ok
                    rounds.append(
                        {
                            "path": variant,
                            "games_before": base.games,
                            "games": r.games,
                            "samples": r.samples,
                            "same": ok,
                            "ratio": round(times[variant]["re"][-1] / times[variant]["full"][-1], 3),
                        }
                    )
        finally:
            writer.close()
            warm.close()
    ratio = {}
    result: dict[str, Any] = {
        "bench": "export_incremental",
        "games": a.games,
        "new_per_round": a.new,
        "window_max_games": a.window,
        "build_or_cache_seconds": round(build_s, 1),
        "rounds": rounds,
    }
    for variant in VARIANTS:
        re_m, full_m = statistics.median(times[variant]["re"]), statistics.median(times[variant]["full"])
        ratio[variant] = re_m / full_m
        result[variant] = {
            "reexport_seconds": round(re_m, 3),
            "reexport_all_seconds": [round(x, 3) for x in times[variant]["re"]],
            "full_export_seconds": round(full_m, 3),
            "full_all_seconds": [round(x, 3) for x in times[variant]["full"]],
            "ratio_reexport_to_full": round(re_m / full_m, 3),
        }
    result.update(
        {
            "ratio_reexport_to_full": round(ratio["service"], 3),
            "same_samples": same,
            "load_avg_before": [round(x, 2) for x in load_before],
            "load_avg_after": [round(x, 2) for x in os.getloadavg()],
            "targets": {"ratio_reexport_to_full": "<= 0.25 (service path)", "same_samples": True},
            "targets_met": ratio["service"] <= 0.25 and same,
        }
    )
    print(orjson.dumps(result).decode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
