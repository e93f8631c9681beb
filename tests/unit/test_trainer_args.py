"""``TrainerArgs`` is the one definition of the trainer's flags: argv round-trips exactly."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from daemon.training.args import TrainerArgs, trainer_default
from daemon.training.trainer.cli import build_parser

paths = st.builds(Path, st.text(st.characters(min_codepoint=48, max_codepoint=122), min_size=1, max_size=12))
pos = st.integers(min_value=1, max_value=10**9)


@given(
    data=paths,
    out=paths,
    epochs=pos,
    batch_size=pos,
    init=st.none() | paths,
    device=st.sampled_from(["auto", "cpu", "cuda"]),
    fencing_token=st.none() | st.integers(min_value=0, max_value=2**53),
    legacy=st.booleans(),
    run_id=st.none() | st.text(st.characters(min_codepoint=97, max_codepoint=122), min_size=1, max_size=20),
    channels=st.none() | pos,
    lr=st.floats(min_value=1e-9, max_value=10.0),
    threads=st.none() | st.integers(min_value=1, max_value=256),
)
def test_round_trip(
    data: Path,
    out: Path,
    epochs: int,
    batch_size: int,
    init: Path | None,
    device: str,
    fencing_token: int | None,
    legacy: bool,
    run_id: str | None,
    channels: int | None,
    lr: float,
    threads: int | None,
) -> None:
    args = TrainerArgs(
        data=data, out=out, epochs=epochs, batch_size=batch_size, init=init, device=device,
        fencing_token=fencing_token, allow_legacy_pickle=legacy, run_id=run_id, channels=channels,
        lr=lr, threads=threads,
    )  # fmt: skip
    assert TrainerArgs.from_argv(args.to_argv()) == args
    # The trainer's own parser is the same definition.
    ns = build_parser().parse_args(args.to_argv())
    assert TrainerArgs.from_namespace(ns) == args


def test_design_flags() -> None:
    """DESIGN 8's flags, spelled exactly."""
    args = TrainerArgs(
        data=Path("d.npz"), out=Path("o"), epochs=3, batch_size=64, init=Path("p.pt"), device="cpu",
        fencing_token=7, allow_legacy_pickle=True,
    )  # fmt: skip
    assert args.to_argv() == [
        "--data", "d.npz", "--out", "o", "--epochs", "3", "--batch-size", "64", "--init", "p.pt",
        "--device", "cpu", "--fencing-token", "7", "--allow-legacy-pickle",
    ]  # fmt: skip


def test_every_field_has_a_flag_and_help() -> None:
    parser = TrainerArgs.parser()
    dests = {a.dest: a for a in parser._actions}
    for f in dataclasses.fields(TrainerArgs):
        assert f.name in dests, f.name
        assert dests[f.name].help, f.name


@pytest.mark.parametrize("flag", ["--epochs", "--batch-size", "--threads", "--patience"])
def test_out_of_range(flag: str) -> None:
    base = ["--data", "d", "--out", "o", "--epochs", "1", "--batch-size", "1"]
    with pytest.raises(ValueError, match=flag):
        TrainerArgs.from_argv([*base, flag, "0"])


@given(
    amp=st.sampled_from(["auto", "bf16", "fp16", "off"]),
    channels_last=st.booleans(),
    compile_=st.booleans(),
    prefetch=st.integers(min_value=0, max_value=64),
    sync_every=pos,
)
def test_gpu_knobs_round_trip(
    amp: str, channels_last: bool, compile_: bool, prefetch: int, sync_every: int
) -> None:
    args = TrainerArgs(
        data=Path("d"), out=Path("o"), epochs=1, batch_size=2, amp=amp, channels_last=channels_last,
        compile=compile_, prefetch=prefetch, sync_every=sync_every,
    )  # fmt: skip
    assert TrainerArgs.from_argv(args.to_argv()) == args


def test_knob_ranges_and_choices() -> None:
    base = ["--data", "d", "--out", "o", "--epochs", "1", "--batch-size", "1"]
    with pytest.raises(ValueError, match="--prefetch must be >= 0"):
        TrainerArgs.from_argv([*base, "--prefetch", "-1"])
    with pytest.raises(ValueError, match="--sync-every must be > 0"):
        TrainerArgs.from_argv([*base, "--sync-every", "0"])
    with pytest.raises(SystemExit):
        TrainerArgs.from_argv([*base, "--amp", "fp8"])
    assert TrainerArgs.from_argv([*base, "--prefetch", "0"]).prefetch == 0


def test_training_settings_take_the_trainer_defaults() -> None:
    from pydantic import ValidationError

    from daemon.settings import TrainingSettings

    t = TrainingSettings()
    for name in ("amp", "channels_last", "compile", "prefetch"):
        assert getattr(t, name) == trainer_default(name), name
    assert t.threads is None
    assert TrainingSettings(amp="bf16", threads=3, prefetch=0).amp == "bf16"
    for bad in ({"amp": "fp8"}, {"threads": 0}, {"prefetch": -1}):
        with pytest.raises(ValidationError):
            TrainingSettings(**bad)  # type: ignore[arg-type]
