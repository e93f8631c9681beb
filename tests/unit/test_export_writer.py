"""The streaming NPZ writer: format, atomicity, free-disk check, leftovers."""

from __future__ import annotations

import hashlib
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest

from daemon.npz.writer import (
    ArraySpec,
    DiskFull,
    ExportWriteError,
    HashingSink,
    NpzStreamWriter,
    remove_stale_parts,
)

SPECS = {
    "features": ArraySpec(np.dtype(np.uint8), (3, 4, 4)),
    "values": ArraySpec(np.dtype(np.float32), ()),
}


def write(out: Path, blocks: int, **kw: object) -> NpzStreamWriter:
    w = NpzStreamWriter(out, SPECS, min_free_bytes=0)
    w.start(10)
    for i in range(blocks):
        w.append(
            {"features": np.full((i + 1, 3, 4, 4), i, np.uint8), "values": np.full(i + 1, i, np.float32)}
        )
    return w


def test_roundtrip_stored_members_no_pickle(tmp_path: Path) -> None:
    out = tmp_path / "x.npz"
    size, digest = write(out, 4).finish({"board_type": "square8", "num_players": 2, "ratio": 0.5})
    # The digest is taken while streaming; it must be exactly the file's.
    assert out.stat().st_size == size and digest == hashlib.sha256(out.read_bytes()).hexdigest()
    with np.load(out, allow_pickle=False) as z:
        assert z["features"].shape == (10, 3, 4, 4) and z["features"].dtype == np.uint8
        assert z["values"].tolist() == [0, 1, 1, 2, 2, 2, 3, 3, 3, 3]
        assert str(z["board_type"]) == "square8" and z["board_type"].dtype.kind == "U"
        assert int(z["num_players"]) == 2 and float(z["ratio"]) == 0.5
    with zipfile.ZipFile(out) as zf:
        assert all(i.compress_type == zipfile.ZIP_STORED for i in zf.infolist())
        assert zf.testzip() is None  # every member's CRC (from the central directory) checks
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.npz"]


def test_whole_arrays_are_stored_beside_rows_and_objects_refused(tmp_path: Path) -> None:
    out = tmp_path / "x.npz"
    const = np.arange(48, dtype=np.uint8).reshape(3, 4, 4) % 2
    write(out, 2).finish({"format_version": 3}, {"feature_constant": const})
    with np.load(out, allow_pickle=False) as z:
        assert np.array_equal(z["feature_constant"], const) and z["features"].shape == (3, 3, 4, 4)
    before = out.read_bytes()
    w = write(out, 1)
    with pytest.raises(ExportWriteError, match="'bad'"):
        w.finish({}, {"bad": np.array([{"x": 1}], dtype=object)})
    assert out.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["x.npz"]


def test_zero_rows(tmp_path: Path) -> None:
    out = tmp_path / "x.npz"
    write(out, 0).finish({})
    with np.load(out, allow_pickle=False) as z:
        assert z["features"].shape == (0, 3, 4, 4)


def test_failure_leaves_previous_file(tmp_path: Path) -> None:
    out = tmp_path / "x.npz"
    write(out, 2).finish({})
    before = out.read_bytes()
    w = write(out, 3)
    with pytest.raises(Exception, match="only int, float and str"):
        w.finish({"bad": [1, 2]})
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.npz"]


def test_bad_rows_rejected(tmp_path: Path) -> None:
    w = write(tmp_path / "x.npz", 0)
    with pytest.raises(Exception, match="shape"):
        w.append({"features": np.zeros((1, 2, 4, 4), np.uint8), "values": np.zeros(1, np.float32)})
    w.abort()


def test_free_disk_check(tmp_path: Path) -> None:
    w = NpzStreamWriter(tmp_path / "x.npz", SPECS, min_free_bytes=1 << 60)
    with pytest.raises(DiskFull, match="min_free_bytes"):
        w.start(1)
    assert list(tmp_path.iterdir()) == []


def test_stale_parts_of_dead_writers_removed(tmp_path: Path) -> None:
    out = tmp_path / "x.npz"
    dead = tmp_path / ".x.npz.999999999.abcd.features.part"
    dead.write_bytes(b"junk")
    other = tmp_path / ".y.npz.999999999.abcd.features.part"
    other.write_bytes(b"junk")
    assert remove_stale_parts(out) == [dead]
    assert other.exists()


def test_hashing_sink_streams_and_stops_its_thread(tmp_path: Path) -> None:
    path = tmp_path / "h.bin"
    chunks = [b"x" * 5, bytearray(b"yz"), memoryview(b"0123456789")[2:6], b"", b"q" * (5 << 20)]
    with open(path, "wb") as fh, HashingSink(fh) as sink:
        assert not sink.seekable()
        for c in chunks:
            sink.write(c)
        assert sink.tell() == sum(len(bytes(c)) for c in chunks)
        digest = sink.hexdigest()
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    assert not any(t.name == "npz-sha256" for t in threading.enumerate())
    with open(path, "wb") as fh, pytest.raises(RuntimeError), HashingSink(fh) as sink:
        sink.write(b"abc")
        raise RuntimeError("a failed export")  # closing the sink still stops its thread
    assert not any(t.name == "npz-sha256" for t in threading.enumerate())
