"""DDP teardown order on a real 2-process gloo group: after a finished run no rank tears down early.

Rank 0 arrives late at teardown (it writes the checkpoint); with ``finished=True`` rank 1's
``close`` returns only after rank 0 got there (barrier, then ``destroy_process_group``).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

RANK = """
    import json, os, sys, time
    import torch
    from daemon.training.trainer import ddp
    info = ddp.dist_info_from_env(os.environ)
    dev = torch.device("cpu")
    ddp.init(info, dev)
    total = ddp.all_reduce_sum(torch.ones(1) * (info.rank + 1), info, dev)
    if info.rank == 0:
        time.sleep(1.5)  # writing the checkpoint
    arrived = time.time()
    ddp.close(info, dev, finished=sys.argv[1] == "finished")
    print(json.dumps({"rank": info.rank, "sum": float(total[0]), "arrived": arrived, "closed": time.time()}))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run_pair(tmp_path: Path, mode: str) -> dict[int, dict[str, float]]:
    script = tmp_path / "rank.py"
    script.write_text(textwrap.dedent(RANK))
    port = _free_port()
    procs = []
    for rank in range(2):
        env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
        env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2")
        env["LOCAL_RANK"] = str(rank)
        procs.append(
            subprocess.Popen(
                [sys.executable, str(script), mode], stdout=subprocess.PIPE, text=True, env=env, cwd=REPO
            )
        )
    results = {}
    for p in procs:
        out, _ = p.communicate(timeout=90)
        assert p.returncode == 0, out
        r = json.loads(out.strip().splitlines()[-1])
        results[int(r["rank"])] = r
    return results


def test_finished_ranks_wait_for_each_other_before_destroying_the_group(tmp_path: Path) -> None:
    r = _run_pair(tmp_path, "finished")
    assert r[0]["sum"] == r[1]["sum"] == 3.0
    assert r[1]["closed"] >= r[0]["arrived"]


@pytest.mark.slow
def test_without_the_barrier_rank_1_would_leave_first(tmp_path: Path) -> None:
    """The ordering above is the barrier's doing (an erroring rank skips it: no collective mismatch)."""
    r = _run_pair(tmp_path, "error")
    assert r[1]["closed"] < r[0]["arrived"]
