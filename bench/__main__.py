"""``python -m bench NAME`` runs ``bench/NAME.py``'s ``main()``; ``--all`` runs every bench in BENCHES.

Each bench prints (here: returns) one JSON object; ``--all`` also writes the list of
them to ``bench/results.json``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import traceback
from pathlib import Path
from typing import Any

BENCHES: tuple[str, ...] = ("gamedb_refresh",)
RESULTS = Path(__file__).resolve().parent / "results.json"


def run(name: str) -> dict[str, Any]:
    if not name.replace("_", "").isalnum():
        raise SystemExit(f"bad bench name {name!r}")
    module = importlib.import_module(f"bench.{name}")
    result: dict[str, Any] = module.main()
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench")
    p.add_argument("name", nargs="?", help="bench module under bench/ (e.g. gamedb_refresh)")
    p.add_argument("--all", action="store_true", help=f"run {', '.join(BENCHES)} and write {RESULTS.name}")
    args = p.parse_args(argv)
    if args.all == bool(args.name):
        p.error("give one bench NAME or --all")
    if args.name:
        print(json.dumps(run(args.name)))
        return 0
    results: list[dict[str, Any]] = []
    failed = False
    for name in BENCHES:
        try:
            result = run(name)
        except Exception as e:  # one broken bench must not hide the others' numbers
            traceback.print_exc()
            result, failed = {"bench": name, "error": f"{type(e).__name__}: {e}"}, True
        print(json.dumps(result), flush=True)
        results.append(result)
    tmp = RESULTS.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    tmp.replace(RESULTS)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
