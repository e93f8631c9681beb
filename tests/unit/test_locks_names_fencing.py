"""Lock names (validation, injective file names) and the durable fence ceiling."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from daemon.keys import ALL_CONFIG_KEYS
from daemon.locks.fencing import FenceCeiling
from daemon.locks.names import FenceStateError, InvalidLockName, file_stem, redis_keys, validate_lock_name


def test_training_names_map_to_spec_paths() -> None:
    assert file_stem("training:square8_2p") == "training_square8_2p"
    assert redis_keys("ringrift:", "training:square8_2p")[0] == "ringrift:lock:training:square8_2p"


@pytest.mark.parametrize(
    "bad",
    ["training:../x_2p", "training:square8_5p", "training", "training:square8:2p", "a/b", "", "A", "x:", 3],
)
def test_bad_names_rejected(bad: object) -> None:
    with pytest.raises(InvalidLockName):
        validate_lock_name(bad)


def _valid(name: str) -> bool:
    try:
        validate_lock_name(name)
    except InvalidLockName:
        return False
    return True


NAME = st.one_of(
    st.sampled_from([f"training:{k}" for k in ALL_CONFIG_KEYS]),
    # {purpose}:{config} (export:, selfplay: ...); "a:square8:2p", its strict look-alike, is refused
    st.builds("{}:{}".format, st.sampled_from(["export", "selfplay", "a"]), st.sampled_from(ALL_CONFIG_KEYS)),
    st.from_regex(r"\A[a-z0-9][a-z0-9-]{0,8}(:[a-z0-9][a-z0-9-]{0,8}){0,2}\Z").filter(
        lambda n: not n.startswith("training") and _valid(n)
    ),
)


@given(a=NAME, b=NAME)
def test_file_stems_are_injective(a: str, b: str) -> None:
    assert (file_stem(a) == file_stem(b)) == (a == b)


def test_ceiling_reserves_blocks(tmp_path: Path) -> None:
    c = FenceCeiling(tmp_path / "fence" / "x.fence", reserve=10)
    assert c.read() == 0
    assert c.ensure_above(1) == 11
    assert c.ensure_above(5) == 11  # inside the reservation: no write
    assert c.ensure_above(11) == 21
    assert FenceCeiling(c.path, reserve=10).read() == 21  # durable, visible to other objects


def test_ceiling_cache_is_a_lower_bound(tmp_path: Path) -> None:
    a = FenceCeiling(tmp_path / "x.fence", reserve=10)
    b = FenceCeiling(a.path, reserve=10)
    assert a.known == 0 and a.ensure_above(1) == 11 and a.known == 11
    assert b.ensure_above(11) == 21  # another process raises it
    assert a.known == 11  # stale-low, never above the file
    assert a.ensure_above(5) == 11  # below the cached bound: no file I/O needed
    assert a.ensure_above(11) == 21 and a.known == 21  # at the bound: re-read, already raised


def test_corrupt_ceiling_is_a_typed_error(tmp_path: Path) -> None:
    p = tmp_path / "x.fence"
    p.write_text("garbage")
    with pytest.raises(FenceStateError, match=r"x\.fence"):
        FenceCeiling(p).read()
