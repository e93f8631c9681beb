"""Reading a settings file that may be hostile: bounded, strict YAML, one-line errors.

A settings file is small, hand-written text. Everything beyond that is refused before it can
cost time or memory: a file over :data:`MAX_SETTINGS_BYTES`, a path that is not a regular file
(a FIFO would block), bytes that are not UTF-8, aliases (``*name``: the "billion laughs" bomb
expands to gigabytes), nesting deeper than :data:`MAX_DEPTH` (the composer recurses), an
integer outside int64 (Python refuses 4,301+ digit integers with a ``ValueError`` YAML does
not wrap), and duplicate keys (silently last-wins otherwise). :func:`check_tree` bounds the
parsed values the same way whatever their source (file, environment, an API mapping).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError

MAX_SETTINGS_BYTES = 1 << 20
MAX_DEPTH = 32
INT_MIN, INT_MAX = -(1 << 63), (1 << 63) - 1
MAX_INT_CHARS = 24  # int64 needs 19 digits; room for a sign, underscores, a 0x prefix
MAX_STRING = 4096  # a path, URL or name; nothing in the settings is longer
MAX_ITEMS = 10_000  # entries in one list or mapping
ERROR_CHARS = 300  # an error line quotes at most this much


class SettingsFileError(Exception):
    """The file could not be read or parsed; the message is one line (no path prefix)."""


def one_line(text: str, limit: int = ERROR_CHARS) -> str:
    """``text`` on one line, at most ``limit`` characters (an error must never flood a log)."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 15] + f"... ({len(flat)} chars)"


class StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` without aliases, with a depth bound, int64 ints, no duplicate keys."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
            raise ComposerError(None, None, "aliases (*name) are not allowed in settings", mark)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise ComposerError(None, None, f"nested deeper than {MAX_DEPTH} levels", mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: set[str] = set()
        if isinstance(node, yaml.MappingNode):
            if len(node.value) > MAX_ITEMS:
                raise ConstructorError(None, None, f"more than {MAX_ITEMS} keys", node.start_mark)
            for key_node, _ in node.value:
                if isinstance(key_node, yaml.ScalarNode):
                    if key_node.value in seen:
                        key = one_line(repr(key_node.value), 80)
                        raise ConstructorError(None, None, f"duplicate key {key}", key_node.start_mark)
                    seen.add(key_node.value)
        return super().construct_mapping(node, deep)

    def construct_yaml_int(self, node: Any) -> int:
        text = str(node.value)
        if len(text) > MAX_INT_CHARS:
            raise ConstructorError(None, None, f"integer too large ({len(text)} characters)", node.start_mark)
        value = int(super().construct_yaml_int(node))
        if not INT_MIN <= value <= INT_MAX:
            raise ConstructorError(None, None, "integer outside the 64-bit range", node.start_mark)
        return value


StrictLoader.add_constructor("tag:yaml.org,2002:int", StrictLoader.construct_yaml_int)


def parse_yaml(text: str) -> Any:
    """Parse one YAML document strictly; :class:`SettingsFileError` with the line on failure."""
    loader: StrictLoader | None = None
    try:
        loader = StrictLoader(text)  # the reader already refuses control characters here
        return loader.get_single_data()
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = one_line(str(getattr(e, "problem", None) or e))
        raise SettingsFileError(f"{where}invalid YAML: {problem}") from None
    except (ValueError, RecursionError, MemoryError) as e:  # a constructor the bounds above missed
        raise SettingsFileError(f"invalid YAML: {type(e).__name__}: {one_line(str(e))}") from None
    finally:
        if loader is not None:
            loader.dispose()


def read_settings_text(path: Path) -> str | None:
    """The file's text; None when it does not exist. Refuses special files, size, non-UTF-8."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:  # ValueError: a NUL byte in the path
        raise SettingsFileError(f"cannot read settings file: {getattr(e, 'strerror', None) or e}") from None
    if not stat.S_ISREG(st.st_mode):
        raise SettingsFileError("not a regular file")
    if st.st_size > MAX_SETTINGS_BYTES:
        raise SettingsFileError(f"larger than {MAX_SETTINGS_BYTES} bytes ({st.st_size})")
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_SETTINGS_BYTES + 1)
    except OSError as e:
        raise SettingsFileError(f"cannot read settings file: {e.strerror}") from None
    if len(raw) > MAX_SETTINGS_BYTES:  # grew since the stat
        raise SettingsFileError(f"larger than {MAX_SETTINGS_BYTES} bytes")
    try:
        return raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as e:
        raise SettingsFileError(f"not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start})") from None


def check_tree(value: Any, path: str = "", depth: int = 0) -> str | None:
    """The first bound a settings value breaks, as ``"path: reason"``; None when all hold.

    No string setting (path, URL, name) may hold a NUL byte (the OS refuses it with a
    ``ValueError`` deep in the service) or be longer than :data:`MAX_STRING`; integers are int64.
    """
    where = path or "<root>"
    if depth > MAX_DEPTH:
        return f"{where}: nested deeper than {MAX_DEPTH} levels"
    if isinstance(value, str):
        if "\x00" in value:
            return f"{where}: contains a NUL byte"
        if len(value) > MAX_STRING:
            return f"{where}: longer than {MAX_STRING} characters ({len(value)})"
    elif isinstance(value, bool):
        return None
    elif isinstance(value, int):
        if not INT_MIN <= value <= INT_MAX:
            return f"{where}: integer outside the 64-bit range"
    elif isinstance(value, Mapping | list | tuple):
        if len(value) > MAX_ITEMS:
            return f"{where}: more than {MAX_ITEMS} entries"
        items = value.items() if isinstance(value, Mapping) else enumerate(value)
        for k, v in items:
            name = str(k) if str(k).isprintable() else repr(k)
            found = check_tree(v, f"{path}.{name}" if path else name, depth + 1)
            if found is not None:
                return found
    elif isinstance(value, os.PathLike):
        return check_tree(os.fspath(value), path, depth)
    return None
