"""Every command accepts ``--config`` (and ``--log-level``) before or after the command and its action."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.cli import build_parser

# command words, then the command's own required arguments
COMMANDS: list[tuple[list[str], list[str]]] = [
    (["run"], ["--once"]),
    (["status"], ["--json"]),
    (["check"], []),
    (["train"], ["square8_2p", "--force"]),
    (["export"], ["hex8_3p", "--output", "x.npz"]),
    (["health"], []),
    (["evaluation", "pending"], ["--json"]),
    (["locks"], []),
    (["registry", "list"], ["--key", "square8_2p"]),
    (["registry", "show"], ["square8_2p-v1"]),
    (["registry", "lineage"], ["square8_2p-v1", "--json"]),
    (["registry", "promote"], ["square8_2p-v1"]),
    (["registry", "verify"], ["--stage", "production"]),
    (["registry", "pull"], ["square8_2p", "--out", "m.pt"]),
    (["selfplay-sim"], ["--db", "g.db", "--key", "square8_2p"]),
]


def _positions(words: list[str], rest: list[str], opt: list[str]) -> list[list[str]]:
    out = [opt + words + rest, words + rest + opt]
    for i in range(1, len(words) + 1):  # after the command, after its action
        out.append(words[:i] + opt + words[i:] + rest)
    return out


@pytest.mark.parametrize(("words", "rest"), COMMANDS, ids=[" ".join(w) for w, _ in COMMANDS])
def test_config_anywhere(words: list[str], rest: list[str]) -> None:
    parser = build_parser()
    for argv in _positions(words, rest, ["--config", "conf/x.yaml", "--log-level", "DEBUG"]):
        args = parser.parse_args(argv)
        assert args.config == Path("conf/x.yaml"), argv
        assert args.log_level == "DEBUG", argv
        assert args.command == words[0], argv


@pytest.mark.parametrize(("words", "rest"), COMMANDS, ids=[" ".join(w) for w, _ in COMMANDS])
def test_defaults_without_config(words: list[str], rest: list[str]) -> None:
    args = build_parser().parse_args(words + rest)
    assert args.config is None and args.log_level == "INFO"


def test_no_abbreviations() -> None:
    # "--config" must never be taken as an abbreviation of "--config-key" (registry list).
    args = build_parser().parse_args(["registry", "list", "--config", "c.yaml"])
    assert args.config == Path("c.yaml") and args.config_key is None


def test_every_option_has_help() -> None:
    parser = build_parser()

    def walk(p: object) -> list[tuple[str, object]]:
        found = []
        for action in getattr(p, "_actions", []):
            if action.help is None and action.dest not in ("help",):
                found.append((getattr(p, "prog", "?"), action.dest))
            for sub in getattr(action, "choices", None) or {}:
                choices = action.choices
                if isinstance(choices, dict):
                    found += walk(choices[sub])
        return found

    assert walk(parser) == []
