"""``ringrift-daemon registry list|show|lineage|promote|verify|pull [--json]``.

Exit codes: 0 ok; 1 not found / refused (fencing, corrupt model, lineage) / ``verify`` found a
damaged object / ``pull`` had nothing verified to write; 2 bad arguments.
With ``--json`` exactly one JSON object is printed on stdout (``{"error": ...}`` on failure).
``promote`` from the CLI is a manual operator action: it carries no fencing token unless
``--fencing-token`` is given.
"""

from __future__ import annotations

import argparse
import enum
import json
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from daemon.cli.output import print_error
from daemon.keys import InvalidConfigKey, validate_config_key
from daemon.registry import STAGES, ModelNotFound, ModelRecord, ModelRegistry, RegistryError
from daemon.settings import Settings

ACTIONS = ("list", "show", "lineage", "promote", "verify", "pull")
# Reads work on a copy of the rows (a listing never creates a registry that is not there);
# these change state: a stage, a status found by verification, a pulled file.
WRITES = frozenset({"promote", "verify", "pull"})
NEEDS_MODEL = frozenset({"show", "lineage", "promote"})


class RegistryExit(enum.IntEnum):
    OK = 0
    FAILED = 1  # not found, or the registry refused the operation
    BAD_ARGS = 2


def _config_key(value: str) -> str:
    try:
        return validate_config_key(value)
    except InvalidConfigKey as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_registry_arguments(
    parser: argparse.ArgumentParser, parents: Sequence[argparse.ArgumentParser] = ()
) -> None:
    """Add the ``list|show|lineage|promote`` actions to the ``registry`` sub-command's parser;
    ``parents`` carry the options every action accepts (``--config`` ...)."""
    actions = parser.add_subparsers(
        dest="registry_action", required=True, metavar="ACTION", help="what to do with the registry"
    )

    def action(name: str, help: str) -> argparse.ArgumentParser:
        sp: argparse.ArgumentParser = actions.add_parser(
            name, help=help, description=help, parents=list(parents), allow_abbrev=False
        )
        sp.add_argument("--json", action="store_true", help="print one JSON object")
        return sp

    ls = action("list", "models, optionally of one config / stage")
    ls.add_argument(
        "--config-key", "--key", dest="config_key", type=_config_key, default=None, help="only this config"
    )
    ls.add_argument("--stage", choices=STAGES, default=None, help="only models in this stage")
    show = action("show", "one model with its stage history")
    lin = action("lineage", "a model and its ancestors with exact versions")
    pr = action("promote", "make a model its config's production model")
    for sp in (show, lin, pr):
        sp.add_argument("model_id", metavar="MODEL_ID", help="e.g. square8_2p-v3")
    pr.add_argument("--reason", default="manual promotion", help="recorded in the stage history")
    pr.add_argument(
        "--fencing-token", type=int, default=None, help="fence the promotion with this lock token"
    )
    ver = action("verify", "re-hash every model object; mark a damaged one corrupt (exit 1 if any)")
    ver.add_argument("--stage", choices=STAGES, default=None, help="only models in this stage")
    pull = action("pull", "write a config's model to a file, verified and atomically (self-play)")
    pull.add_argument("config_key", type=_config_key, metavar="CONFIG", help="config key, e.g. square8_2p")
    pull.add_argument(
        "--stage", choices=STAGES, default="production", help="production (default) or the newest of a stage"
    )
    pull.add_argument("--out", type=Path, required=True, help="where to write the model file")


def add_registry_parser(subparsers: Any) -> argparse.ArgumentParser:
    """For a caller holding ``ArgumentParser.add_subparsers()``: adds and returns ``registry``."""
    parser: argparse.ArgumentParser = subparsers.add_parser("registry", help="model registry")
    add_registry_arguments(parser)
    return parser


def run_registry_command(target: Path | Settings, args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Handler for parsed ``registry`` arguments (``target``: the settings, or a registry dir)."""
    return cli_registry(
        target,
        getattr(args, "registry_action", None) or "",
        model_id=getattr(args, "model_id", None),
        config=getattr(args, "config_key", None),
        stage=getattr(args, "stage", None),
        as_json=bool(getattr(args, "json", False)),
        reason=getattr(args, "reason", "manual promotion"),
        fencing_token=getattr(args, "fencing_token", None),
        pull_to=getattr(args, "out", None),
        out=out,
    )


def _open(target: Path | Settings, read_only: bool) -> ModelRegistry:
    if isinstance(target, Settings):
        return ModelRegistry.from_settings(target, read_only=read_only)
    return ModelRegistry(target, read_only=read_only)


def cli_registry(
    target: Path | Settings,
    action: str,
    *,
    model_id: str | None = None,
    config: str | None = None,
    stage: str | None = None,
    as_json: bool = False,
    reason: str = "manual promotion",
    fencing_token: int | None = None,
    pull_to: Path | None = None,
    out: TextIO | None = None,
) -> int:
    stream = sys.stdout if out is None else out
    if (
        action not in ACTIONS
        or (action in NEEDS_MODEL and not model_id)
        or (action == "pull" and (config is None or pull_to is None))
        or (stage is not None and stage not in STAGES)
    ):
        return _fail(
            stream, as_json, f"bad arguments: action={action!r} model_id={model_id!r}", RegistryExit.BAD_ARGS
        )
    try:
        if config is not None:
            validate_config_key(config)
        with _open(target, read_only=action not in WRITES) as reg:
            if action == "verify":
                return _verify(reg, stage, as_json, stream)
            if action == "pull":
                assert config is not None and pull_to is not None
                rec = reg.pull(config, out=pull_to, stage=stage or "production")
                obj = {"config": config, "model": rec.as_dict(), "out": str(pull_to)}
                text = f"{rec.model_id} ({rec.stage}, sha256 {rec.sha256[:12]}, {rec.size:,} B) -> {pull_to}"
            else:
                obj, text = _act(reg, action, model_id or "", config, stage, reason, fencing_token)
    except InvalidConfigKey as e:
        return _fail(stream, as_json, str(e), RegistryExit.BAD_ARGS)
    except (ModelNotFound, RegistryError, OSError, sqlite3.Error) as e:
        return _fail(stream, as_json, str(e), RegistryExit.FAILED)
    print(json.dumps(obj, sort_keys=True) if as_json else text, file=stream)
    return RegistryExit.OK


def _act(
    reg: ModelRegistry, action: str, model_id: str, config: str | None, stage: str | None, reason: str,
    token: int | None,
) -> tuple[dict[str, Any], str]:  # fmt: skip
    if action == "list":
        models = reg.list_models(config=config, stage=stage)
        obj = {
            "config": config,
            "stage": stage,
            "count": len(models),
            "models": [m.as_dict() for m in models],
        }
        return obj, _table(models) if models else "no models"
    if action == "show":
        rec = reg.require_model(model_id)
        history = [e.as_dict() for e in reg.get_history(model_id=model_id)]
        lines = [f"{k:<20} {_human(v)}" for k, v in rec.as_dict().items()]
        lines.append("history:")
        lines += [f"  {e['at']}  {_event_text(e)}" for e in history]
        return {"model": rec.as_dict(), "history": history}, "\n".join(lines)
    if action == "lineage":
        chain = reg.get_lineage(model_id)
        keys = ("model_id", "version", "parent_model_id", "parent_version", "stage", "data_hash", "run_id")
        # How each model left "candidate": the promotion test's numbers are in that event's reason.
        decided = {
            e.model_id: e.reason
            for e in reg.get_history(config=chain[0].config_key)
            if e.from_stage == "candidate" and e.to_stage in ("production", "rejected")
        }
        entries = [{**{k: getattr(r, k) for k in keys}, "created_at": r.created_at.isoformat(),
                    "fencing_token": r.fencing_token, "promotion": decided.get(r.model_id)}
                   for r in chain]  # fmt: skip
        text = "\n".join(
            f"{'  ' * i}{r.model_id} (v{r.version}, {r.stage}, data {(r.data_hash or '-')[:12]})"
            + (f": {decided[r.model_id]}" if r.model_id in decided else "")
            for i, r in enumerate(chain)
        )
        return {"model_id": model_id, "lineage": entries}, text
    p = reg.promote(model_id, reason=reason, fencing_token=token)
    obj = {"promoted": p.model_id, "config": p.config_key, "previous": p.previous, "changed": p.changed}
    text = f"{p.model_id} is production for {p.config_key}" + (
        f" (archived {p.previous})" if p.previous else ""
    )
    return obj, text


def _verify(reg: ModelRegistry, stage: str | None, as_json: bool, stream: TextIO) -> int:
    checked = len(reg.list_models(stage=stage))
    problems = reg.verify(stage=stage)
    if as_json:
        found = [{"model_id": p.model_id, "problem": p.problem} for p in problems]
        print(json.dumps({"checked": checked, "problems": found}), file=stream)
    else:
        for p in problems:
            print(f"CORRUPT {p.model_id}: {p.problem}", file=stream)
        print(f"{checked} model(s) checked, {len(problems)} damaged", file=stream)
    return RegistryExit.FAILED if problems else RegistryExit.OK


def _human(value: Any) -> str:
    """A field as people read it: ``-`` for nothing, ``k=v, k=v`` for a mapping, JSON for the rest."""
    if value is None:
        return "-"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_human(v)}" for k, v in value.items()) or "-"
    if isinstance(value, list):
        return ", ".join(_human(v) for v in value) or "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _event_text(e: dict[str, Any]) -> str:
    if e["event"] == "registered":
        what = f"registered as {e['to_stage']}"
    elif e["event"] == "status":
        what = f"status check ({e['from_stage']})"
    else:
        what = f"{e['from_stage']} -> {e['to_stage']}"
    token = f" [token {e['fencing_token']}]" if e.get("fencing_token") is not None else ""
    reason = f": {e['reason']}" if e.get("reason") and e["reason"] != e["event"] else ""
    return f"{what}{reason}{token}"


def _table(models: Sequence[ModelRecord]) -> str:
    head = ("MODEL", "STAGE", "STATUS", "CREATED", "PARENT", "TOKEN", "SHA256", "SIZE")
    rows = [head] + [
        (m.model_id, m.stage, m.status, m.created_at.strftime("%Y-%m-%d %H:%M:%S"), m.parent_model_id or "-",
         "-" if m.fencing_token is None else str(m.fencing_token), m.sha256[:12], str(m.size))
        for m in models
    ]  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def _fail(stream: TextIO, as_json: bool, message: str, code: RegistryExit) -> int:
    print_error(message, as_json, stream)
    return code
