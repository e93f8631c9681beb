"""Every CLI error is one line on stderr with a documented exit code, and creates nothing."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import yaml

from daemon.cli import main


def _config(tmp_path: Path, **extra: object) -> Path:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"data_dir": str(tmp_path / "data"), "configs": ["square8_2p"], **extra}))
    return cfg


@pytest.mark.parametrize("cmd", ["train", "export"])
@pytest.mark.parametrize("as_json", [False, True])
def test_config_not_enabled(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, cmd: str, as_json: bool
) -> None:
    argv = [cmd, "hex8_2p", "--config", str(_config(tmp_path)), *(["--json"] if as_json else [])]
    assert main(argv, environ={}) == 2
    out = capsys.readouterr()
    err = [line for line in out.err.splitlines() if line.startswith("error:")]
    assert err == [
        "error: hex8_2p is not enabled in the settings (enabled: square8_2p); add it to configs:"
    ], out.err
    if as_json:
        assert json.loads(out.out.strip().splitlines()[-1])["error"].startswith("hex8_2p is not enabled")
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("args", [["registry", "list"], ["registry", "show", "square8_2p-v1"], ["health"]])
def test_unusable_data_dir_is_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, args: list[str]
) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("")  # a regular file where data_dir's parent should be
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"data_dir": str(blocker / "data")}))
    rc = main([*args, "--config", str(cfg)], environ={})
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    if args[0] == "registry" and args[1] == "show":
        assert rc == 1 and out.err.count("\n") == 1 and "not found" in out.err, out.err
    else:  # nothing there yet: an empty answer, not an error
        assert rc == 0, out
    assert blocker.is_file()


def test_run_with_its_port_in_use_is_one_line_exit_3(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    with socket.socket() as taken:  # a real listener on a free loopback port
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg = _config(tmp_path, http={"host": "127.0.0.1", "port": port}, game_dbs=[])
        rc = main(["run", "--once", "--config", str(cfg)], environ={})
    out = capsys.readouterr()
    errors = [line for line in out.err.splitlines() if line.startswith("error:")]
    assert rc == 3, out
    assert len(errors) == 1 and errors[0].startswith("error: could not start: "), out.err
    assert "Traceback" not in out.err
    assert "RINGRIFT_INSTANCE" not in os.environ  # the caller's environment as it was
