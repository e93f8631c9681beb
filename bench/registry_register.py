"""Registration cost vs. a bare durable copy (tmp + fsync + rename + dir fsync) of the same files.

``python -m bench registry_register`` -> one JSON object; ``ratio`` = registry / baseline time.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from daemon.registry import ModelRegistry
from daemon.registry.stores.file import fsync_dir

N_FILES = 40
FILE_BYTES = 1 << 20


def _baseline(files: list[Path], out: Path) -> float:
    out.mkdir()
    t = time.perf_counter()
    for i, f in enumerate(files):
        tmp = out / f".tmp-{i}"
        with f.open("rb") as src, tmp.open("wb") as dst:
            dst.write(src.read())
            dst.flush()
            os.fsync(dst.fileno())
        os.replace(tmp, out / f"{i}.pt")
        fsync_dir(out)
    return time.perf_counter() - t


def main() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        files = []
        for i in range(N_FILES):
            f = root / f"m{i}.pt"
            f.write_bytes(os.urandom(FILE_BYTES))
            files.append(f)
        base = _baseline(files, root / "plain")
        with ModelRegistry(root / "reg") as reg:
            t = time.perf_counter()
            for f in files:
                reg.register(f, "square8", 2, {}, {}, [], None, fencing_token=1)
            took = time.perf_counter() - t
            t = time.perf_counter()
            for _ in range(200):
                reg.get_latest("square8_2p")
            read = (time.perf_counter() - t) / 200
    return {
        "bench": "registry_register",
        "files": N_FILES,
        "file_bytes": FILE_BYTES,
        "registry_seconds": round(took, 4),
        "baseline_seconds": round(base, 4),
        "ratio": round(took / base, 3) if base > 0 else None,
        "per_registration_ms": round(1000 * took / N_FILES, 2),
        "get_latest_ms": round(1000 * read, 3),
    }


if __name__ == "__main__":
    print(json.dumps(main()))
