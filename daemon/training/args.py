"""The trainer's arguments: one dataclass, its command line written once from its fields.

The runner (no torch) turns :class:`TrainerArgs` into argv with :meth:`TrainerArgs.to_argv`;
the trainer process parses them back with :meth:`TrainerArgs.from_argv`; the round trip is
exact. Each field's metadata names its flag and help; a field without a flag name takes
``--<field-name-with-dashes>``. DESIGN 8 fixes the first flags: ``--data PATH --out DIR
--epochs N --batch-size N [--init CKPT] [--device auto|cpu|cuda] [--fencing-token T]
[--allow-legacy-pickle]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

DEVICES = ("auto", "cpu", "cuda")
AmpMode = Literal["auto", "bf16", "fp16", "off"]
AMP_MODES: tuple[str, ...] = typing.get_args(AmpMode)
# Fields that must be > 0 when given.
_POSITIVE = (
    "epochs",
    "batch_size",
    "patience",
    "channels",
    "blocks",
    "threads",
    "lr",
    "heartbeat_interval",
    "grad_clip",
    "sync_every",
)
_NON_NEGATIVE = ("prefetch",)


def _m(help: str, *, choices: Sequence[str] | None = None, hidden: bool = False) -> dict[str, Any]:
    return {"help": help, "choices": choices, "hidden": hidden}


@dataclass(frozen=True)
class TrainerArgs:
    data: Path = field(metadata=_m("the exported NPZ training file"))
    out: Path = field(metadata=_m("output directory (the trainer writes DIR/model.pt)"))
    epochs: int = field(metadata=_m("epochs to train"))
    batch_size: int = field(metadata=_m("samples per optimiser step (per process under DDP)"))
    init: Path | None = field(default=None, metadata=_m("parent checkpoint to warm-start from"))
    device: str = field(default="auto", metadata=_m("auto: CUDA when available", choices=DEVICES))
    fencing_token: int | None = field(
        default=None, metadata=_m("the run's lock token, recorded in the checkpoint")
    )
    allow_legacy_pickle: bool = field(
        default=False,
        metadata=_m("allow legacy NPZ files with object arrays (uses pickle: trusted files only)"),
    )
    run_id: str | None = field(default=None, metadata=_m("the run's id, recorded in the checkpoint"))
    data_hash: str | None = field(
        default=None, metadata=_m("sha256 of the training file, recorded in the checkpoint")
    )
    parent: str | None = field(default=None, metadata=_m("parent model id (lineage)"))
    channels: int | None = field(
        default=None, metadata=_m("residual tower width (default: the parent's, else 32)")
    )
    blocks: int | None = field(default=None, metadata=_m("residual blocks (default: the parent's, else 2)"))
    lr: float = field(default=2e-3, metadata=_m("peak learning rate (AdamW, cosine schedule)"))
    seed: int = field(default=0, metadata=_m("random seed"))
    patience: int = field(default=3, metadata=_m("epochs without validation improvement before stopping"))
    weight_decay: float = field(default=1e-4, metadata=_m("AdamW weight decay"))
    grad_clip: float = field(default=1.0, metadata=_m("gradient norm clip"))
    warmup_fraction: float = field(default=0.05, metadata=_m("share of steps spent warming up the lr"))
    threads: int | None = field(
        default=None,
        metadata=_m(
            "CPU threads for torch (intra-op); default: torch's own choice (the service passes "
            "training.threads, else daemon.training.threads.default_threads)"
        ),
    )
    amp: str = field(
        default="auto",
        metadata=_m(
            "mixed precision: auto = bf16 on GPUs that support it, else fp16 with a GradScaler, "
            "float32 on CPU; bf16|fp16 force it (also on CPU, slowly: for tests); off = float32",
            choices=AMP_MODES,
        ),
    )
    channels_last: bool = field(
        default=False,
        metadata=_m("NHWC memory format for the model and its inputs (faster convolutions on GPUs)"),
    )
    compile: bool = field(
        default=False,
        metadata=_m(
            "torch.compile the training model: the first steps run slower while it compiles "
            "(the CPU backend needs a C++ compiler)"
        ),
    )
    prefetch: int = field(
        default=2,
        metadata=_m(
            "batches prepared ahead by a background thread (pinned host memory and a side CUDA "
            "stream on GPUs); 0 = prepare each batch in the training thread"
        ),
    )
    sync_every: int = field(
        default=50,
        metadata=_m(
            "steps between host reads of the device-side loss (the NaN check) and, under DDP, the "
            "all-reduce of the stop flag: a DDP run sees SIGTERM within this many steps"
        ),
    )
    heartbeat_interval: float = field(default=30.0, metadata=_m("seconds between heartbeat lines"))
    debug_nan_at_step: int | None = field(
        default=None, metadata=_m("tests only: poison the loss at this global step", hidden=True)
    )

    # -- the command line -------------------------------------------------------------
    def to_argv(self) -> list[str]:
        """Flags for every field that differs from its default (required ones always)."""
        argv: list[str] = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.default is not dataclasses.MISSING and value == f.default:
                continue
            flag = _flag(f)
            if _kind(f) is bool:
                if value:
                    argv.append(flag)
                continue
            argv += [flag, str(value)]
        return argv

    @classmethod
    def parser(cls, prog: str = "python -m daemon.training") -> argparse.ArgumentParser:
        p = argparse.ArgumentParser(prog=prog, description="Train one model from one NPZ file.")
        for f in dataclasses.fields(cls):
            meta = f.metadata
            help_text = argparse.SUPPRESS if meta.get("hidden") else meta.get("help")
            kind = _kind(f)
            if kind is bool:
                p.add_argument(_flag(f), dest=f.name, action="store_true", help=help_text)
                continue
            required = f.default is dataclasses.MISSING
            p.add_argument(
                _flag(f),
                dest=f.name,
                type=kind,
                required=required,
                choices=meta.get("choices"),
                default=None if required else f.default,
                help=help_text,
            )
        return p

    @classmethod
    def from_namespace(cls, ns: argparse.Namespace) -> TrainerArgs:
        args = cls(**{f.name: getattr(ns, f.name) for f in dataclasses.fields(cls)})
        args.check()
        return args

    @classmethod
    def from_argv(cls, argv: Sequence[str]) -> TrainerArgs:
        return cls.from_namespace(cls.parser().parse_args(list(argv)))

    def check(self) -> None:
        """Raise ``ValueError`` naming the flag of the first out-of-range value."""
        for name in _POSITIVE:
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"--{name.replace('_', '-')} must be > 0 (got {value})")
        for name in _NON_NEGATIVE:
            value = getattr(self, name)
            if value < 0:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 0 (got {value})")

    def replace(self, **changes: Any) -> TrainerArgs:
        return dataclasses.replace(self, **changes)


def trainer_default(name: str) -> Any:
    """A :class:`TrainerArgs` field's default (the settings sections take theirs from here)."""
    f = {f.name: f for f in dataclasses.fields(TrainerArgs)}[name]
    if f.default is dataclasses.MISSING:
        raise KeyError(f"TrainerArgs.{name} has no default")
    return f.default


def _flag(f: dataclasses.Field[Any]) -> str:
    return "--" + f.name.replace("_", "-")


def _kind(f: dataclasses.Field[Any]) -> type:
    """The scalar type argparse converts to: ``int | None`` -> int, ``Path`` -> Path."""
    hint = typing.get_type_hints(TrainerArgs)[f.name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    base = args[0] if isinstance(hint, types.UnionType) and args else hint
    if base not in (bool, int, float, str, Path):
        raise TypeError(f"TrainerArgs.{f.name}: unsupported type {hint!r}")
    return typing.cast(type, base)
