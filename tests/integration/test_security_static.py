"""Security properties checked on the source and on real objects (no service process).

* /metrics and /status bind to 127.0.0.1 by default (the Settings default and a
  started ``HttpServer``'s socket);
* no pickle on untrusted input: ``allow_pickle=True`` only in the legacy loader,
  reached only with ``--allow-legacy-pickle``; every ``numpy.load`` says
  ``allow_pickle=False``; ``torch.load`` uses ``weights_only=True``; no
  ``pickle``/``marshal``/``yaml.load``;
* no shell strings: no ``shell=True``, ``os.system``, ``os.popen``,
  ``create_subprocess_shell``; subprocess argv is a list;
* the systemd unit's exposure score stays <= 2.5.
"""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from daemon.npz import open_training_file
from daemon.service.http import HttpServer
from daemon.settings import Settings
from daemon.training.exitcodes import ExitCode, TrainerError
from tests.support.system_deps import requires

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted((ROOT / "daemon").rglob("*.py"))
SUBPROCESS_CALLS = {"run", "Popen", "call", "check_call", "check_output", "create_subprocess_exec"}


def _calls() -> list[tuple[Path, ast.Call, list[str]]]:
    """Every call in daemon/ with the chain of enclosing function names."""
    out: list[tuple[Path, ast.Call, list[str]]] = []

    def visit(path: Path, node: ast.AST, scope: list[str]) -> None:
        for child in ast.iter_child_nodes(node):
            inner = scope
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                inner = [*scope, child.name]
            if isinstance(child, ast.Call):
                out.append((path, child, inner))
            visit(path, child, inner)

    for path in SOURCES:
        visit(path, ast.parse(path.read_text(), str(path)), [])
    return out


CALLS = _calls()


def _name(func: ast.expr) -> str:
    if isinstance(func, ast.Attribute):
        return f"{_name(func.value)}.{func.attr}"
    if isinstance(func, ast.Name):
        return func.id
    return "?"


def _kw(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _where(path: Path, call: ast.Call) -> str:
    return f"{path.relative_to(ROOT)}:{call.lineno}"


def test_sources_found() -> None:
    assert len(SOURCES) > 30 and len(CALLS) > 1000


# -- loopback by default ---------------------------------------------------------------------


def test_http_default_is_loopback() -> None:
    assert Settings().http.host == "127.0.0.1"


async def test_started_http_server_listens_on_loopback_only() -> None:
    s = Settings()
    server = HttpServer(s.http.host, 0, CollectorRegistry(), view=lambda: None, max_tick_age=60)  # type: ignore[arg-type,return-value]
    await server.start()
    try:
        addresses = server.addresses
        assert addresses, "no listening socket"
        assert all(a[0] == "127.0.0.1" for a in addresses), addresses
    finally:
        await server.close()


# -- no pickle on untrusted input ------------------------------------------------------------


def test_allow_pickle_true_only_in_the_legacy_loader() -> None:
    hits = []
    for path, call, scope in CALLS:
        v = _kw(call, "allow_pickle")
        if v is not None and not (isinstance(v, ast.Constant) and v.value is False):
            hits.append((_where(path, call), scope))
    assert [s[-1] for _, s in hits] == ["_load_legacy"], hits


def test_legacy_loader_only_behind_the_flag() -> None:
    src = (ROOT / "daemon/npz/reader.py").read_text()
    tree = ast.parse(src)
    callers = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and _name(n.func) == "_load_legacy"]
    assert len(callers) == 1
    # The single call sits after "if not allow_legacy_pickle: raise".
    before = src.splitlines()[: callers[0].lineno]
    assert any(re.search(r"if not allow_legacy_pickle:", ln) for ln in before[-10:]), before[-10:]
    assert "allow_legacy_pickle: bool = False" in src


def test_legacy_pickle_file_refused_by_default(legacy_npz: Path) -> None:
    with pytest.raises(TrainerError) as info:
        open_training_file(legacy_npz)
    assert info.value.code == ExitCode.BAD_DATA and "--allow-legacy-pickle" in info.value.message


def test_trainer_flag_defaults_off() -> None:
    from daemon.training.trainer.cli import build_parser

    args = build_parser().parse_args(["--data", "x", "--out", "y", "--epochs", "1", "--batch-size", "1"])
    assert args.allow_legacy_pickle is False


def test_numpy_load_says_allow_pickle_false_and_torch_load_weights_only() -> None:
    for path, call, scope in CALLS:
        name = _name(call.func)
        if name in ("np.load", "numpy.load", "np.lib.format.read_array") and scope[-1:] != ["_load_legacy"]:
            v = _kw(call, "allow_pickle")
            assert isinstance(v, ast.Constant) and v.value is False, _where(path, call)
        if name.endswith("torch.load"):
            v = _kw(call, "weights_only")
            assert isinstance(v, ast.Constant) and v.value is True, _where(path, call)


# The one pickle use: the registry reads checkpoint metadata without torch through an
# Unpickler whose find_class allows only OrderedDict and inert torch stubs.
PICKLE_ALLOWED = {"daemon/registry/records.py"}


def test_no_pickle_marshal_or_unsafe_yaml() -> None:
    banned = {"pickle", "cPickle", "marshal", "shelve", "dill"}
    for path in SOURCES:
        rel = str(path.relative_to(ROOT))
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import | ast.ImportFrom):
                mods = {a.name for a in node.names} | {getattr(node, "module", None) or ""}
                if banned & mods:
                    assert rel in PICKLE_ALLOWED, f"{rel}:{node.lineno}"
            if (
                isinstance(node, ast.Attribute)
                and node.attr in ("load", "loads")
                and _name(node)
                in (
                    "pickle.load",
                    "pickle.loads",
                )
            ):
                raise AssertionError(f"{rel}:{node.lineno} unrestricted pickle.load")
            if isinstance(node, ast.ClassDef) and any(_name(b).endswith("Unpickler") for b in node.bases):
                methods = {n.name for n in node.body if isinstance(n, ast.FunctionDef)}
                assert "find_class" in methods, f"{rel}:{node.lineno} Unpickler without find_class"
    for path, call, _ in CALLS:
        assert _name(call.func) not in ("yaml.load", "yaml.unsafe_load", "yaml.full_load"), _where(path, call)


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        import os

        return (os.system, (f"touch {self.marker}",))


def test_registry_metadata_reader_refuses_a_malicious_checkpoint(tmp_path: Path) -> None:
    import pickle
    import zipfile

    from daemon.registry.records import read_checkpoint_metadata

    marker = tmp_path / "pwned"
    ckpt = tmp_path / "model.pt"
    with zipfile.ZipFile(ckpt, "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps({"metadata": _Evil(marker)}))
    assert read_checkpoint_metadata(ckpt) is None
    assert not marker.exists()


# -- no shell strings ------------------------------------------------------------------------


def test_no_shell_true_os_system_or_popen() -> None:
    bad = []
    for path, call, _ in CALLS:
        name = _name(call.func)
        shell = _kw(call, "shell")
        if shell is not None and not (isinstance(shell, ast.Constant) and shell.value is False):
            bad.append(f"{_where(path, call)} shell=")
        if name in ("os.system", "os.popen", "os.execl", "os.spawnl", "commands.getoutput") or name.endswith(
            "create_subprocess_shell"
        ):
            bad.append(f"{_where(path, call)} {name}")
    assert bad == []


def test_subprocess_arguments_are_lists() -> None:
    seen = 0
    for path, call, _ in CALLS:
        name = _name(call.func)
        if name.split(".")[-1] not in SUBPROCESS_CALLS or not name.startswith(("subprocess", "asyncio")):
            continue
        seen += 1
        if name.endswith("create_subprocess_exec"):
            continue  # argv is *args by construction
        assert call.args, _where(path, call)
        first = call.args[0]
        assert not isinstance(first, ast.Constant | ast.JoinedStr | ast.BinOp), _where(path, call)
    assert seen >= 1


# -- systemd ---------------------------------------------------------------------------------


@requires("systemd-analyze")
def test_systemd_exposure_score_is_low() -> None:
    unit = ROOT / "systemd" / "ringrift-training-daemon.service"
    p = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    m = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", p.stdout + p.stderr)
    assert m, p.stdout + p.stderr
    assert float(m.group(1)) <= 2.5
