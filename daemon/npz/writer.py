"""Streaming NPZ writer: bounded memory whatever the number of samples.

Rows are appended per array to ``.part`` files next to the output (raw ``.npy``
bodies, C order). :meth:`NpzStreamWriter.finish` then builds the ``.npz`` in a
temporary file in the same directory: one ZIP_STORED (uncompressed, so the
trainer can memory-map each member), zip64 member per array, each written as a
version-2.0 ``.npy`` header for the final shape followed by a streaming copy of
the part file; then flush + fsync + ``os.replace`` + fsync of the directory.
The zip is written as a stream (never seeking back; sizes and CRCs follow each
member in a data descriptor and sit in the central directory), so its sha256 is
taken as it is written, on a helper thread, instead of re-reading the file.
Any failure (exception, ENOSPC, a kill) leaves the previous output untouched;
leftovers of a killed writer are removed by the next writer of that output.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import queue
import secrets
import shutil
import threading
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import numpy.typing as npt

from daemon.npz.format import ArraySpec

COPY_CHUNK = 4 << 20


class ExportWriteError(Exception):
    """The NPZ could not be written (names the file); the previous output is intact."""


class DiskFull(ExportWriteError):
    """Not enough free space (estimated before writing, exact before assembling)."""


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_parts(output: Path) -> list[Path]:
    """Delete temp files of ``output`` left by writers that are no longer running."""
    removed = []
    for p in output.parent.glob(f".{output.name}.*"):
        pid_text = p.name[len(output.name) + 2 :].split(".", 1)[0]
        if not pid_text.isdigit():
            continue
        pid = int(pid_text)
        if pid == os.getpid() or _pid_alive(pid):
            continue
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
            removed.append(p)
    return removed


def check_free(directory: Path, needed: int, min_free: int, what: str) -> None:
    free = shutil.disk_usage(directory).free
    if free < needed + min_free:
        raise DiskFull(
            f"{directory}: not enough free disk for {what}: need {needed:,} B + {min_free:,} B reserve "
            f"(export.min_free_bytes), have {free:,} B"
        )


@dataclass(frozen=True)
class Segment:
    """Rows written by another process: the arrays back to back, in spec order."""

    path: str
    rows: int
    sizes: tuple[int, ...]  # bytes of each array


def _block_rows(output: Path, specs: Mapping[str, ArraySpec], arrays: Mapping[str, npt.NDArray[Any]]) -> int:
    """The row count of one block (every array must have the same), checking row shapes."""
    n = None
    for name, spec in specs.items():
        a = arrays[name]
        if a.shape[1:] != spec.row_shape:
            raise ExportWriteError(
                f"{output}: array {name!r} rows have shape {a.shape[1:]}, expected {spec.row_shape}"
            )
        if n is None:
            n = a.shape[0]
        elif a.shape[0] != n:
            raise ExportWriteError(f"{output}: array {name!r} has {a.shape[0]} rows, expected {n}")
    return n or 0


def write_segment(
    path: Path, specs: Mapping[str, ArraySpec], blocks: Sequence[Mapping[str, npt.NDArray[Any]]]
) -> Segment:
    """Write blocks of rows as one segment for a writer in another process to :meth:`~NpzStreamWriter.adopt`.

    No fsync: the adopting writer copies it into the NPZ, which it fsyncs.
    """
    counts = [_block_rows(path, specs, b) for b in blocks]
    blocks = [b for b, n in zip(blocks, counts, strict=True) if n]  # e.g. games without move rows
    sizes = []
    with open(path, "xb") as f:
        for name, spec in specs.items():
            start = f.tell()
            for b in blocks:
                _write_rows(f, np.ascontiguousarray(b[name], dtype=spec.dtype))
            sizes.append(f.tell() - start)
    return Segment(str(path), sum(counts), tuple(sizes))


def _write_rows(f: IO[bytes], a: npt.NDArray[Any]) -> None:
    """Write an array's bytes; one without elements (a zero in its shape) writes none."""
    if a.size:  # memoryview.cast refuses a view with a zero in its shape
        f.write(a.data.cast("B"))


class NpzStreamWriter:
    """Append rows of named arrays, then :meth:`finish` into ``output`` atomically."""

    def __init__(self, output: Path, specs: Mapping[str, ArraySpec], *, min_free_bytes: int = 0) -> None:
        self.output = Path(output)
        self.specs = dict(specs)
        self.min_free_bytes = min_free_bytes
        self.rows = 0
        self._token = f"{os.getpid()}.{secrets.token_hex(4)}"
        self._files: dict[str, IO[bytes]] = {}
        self._paths: dict[str, Path] = {}
        self._segments: list[Segment] = []

    def _temp(self, suffix: str) -> Path:
        return self.output.parent / f".{self.output.name}.{self._token}.{suffix}"

    def start(self, estimated_rows: int = 0) -> None:
        """Create the part files; check the disk has room for about ``estimated_rows`` (x2: parts + zip)."""
        self.output.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_parts(self.output)
        per_row = sum(s.row_bytes for s in self.specs.values())
        check_free(
            self.output.parent, 2 * per_row * estimated_rows, self.min_free_bytes, f"{self.output.name}"
        )
        try:
            for name in self.specs:
                path = self._temp(f"{name}.part")
                self._paths[name] = path
                self._files[name] = open(path, "xb", buffering=1 << 20)  # noqa: SIM115 - closed in finish/abort
        except OSError as e:
            self.abort()
            raise ExportWriteError(f"{self.output}: cannot create temporary files: {e}") from e

    def append(self, arrays: Mapping[str, npt.NDArray[Any]]) -> None:
        """Append one block of rows (every array must have the same number of rows)."""
        n = _block_rows(self.output, self.specs, arrays)
        if not n:  # e.g. a game whose sampled moves were all malformed
            return
        if self._segments:
            raise ExportWriteError(f"{self.output}: rows appended after adopted segments")
        for name, spec in self.specs.items():
            a = np.ascontiguousarray(arrays[name], dtype=spec.dtype)
            try:
                _write_rows(self._files[name], a)
            except OSError as e:
                raise ExportWriteError(f"{self.output}: writing {name!r} failed: {e}") from e
        self.rows += n or 0

    def segment_path(self, tag: str) -> Path:
        """A temporary path for a segment of this writer (removed with its temporary files)."""
        return self._temp(f"seg.{tag}")

    def adopt(self, seg: Segment) -> None:
        """Take a segment's rows as the next rows (instead of :meth:`append`; not both)."""
        want = tuple(seg.rows * s.row_bytes for s in self.specs.values())
        if seg.sizes != want:
            raise ExportWriteError(f"{seg.path}: segment sizes {seg.sizes} do not match {seg.rows} rows")
        if self.rows and not self._segments:
            raise ExportWriteError(f"{self.output}: a segment adopted after appended rows")
        self._segments.append(seg)
        self.rows += seg.rows

    def finish(
        self, metadata: Mapping[str, Any], arrays: Mapping[str, npt.NDArray[Any]] | None = None
    ) -> tuple[int, str]:
        """Assemble the NPZ, fsync, rename over ``output``; return (bytes, sha256 hex).

        ``metadata`` holds scalars; ``arrays`` small whole arrays (not rows, e.g. constant planes).
        """
        tmp = self._temp("npz.tmp")
        try:
            whole = {name: _whole(name, a) for name, a in (arrays or {}).items()}
            for f in self._files.values():
                f.flush()
            parts = sum(p.stat().st_size for p in self._paths.values()) + sum(
                sum(seg.sizes) for seg in self._segments
            )
            check_free(
                self.output.parent, parts + (1 << 20), self.min_free_bytes, f"assembling {self.output.name}"
            )
            with open(tmp, "xb") as fh, HashingSink(fh) as sink:
                with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
                    for name, spec in self.specs.items():
                        self._files[name].close()
                        self._member(zf, name, spec)
                    for name, value in [*whole.items(), *metadata.items()]:
                        with zf.open(f"{name}.npy", "w") as dst:
                            arr = value if name in whole else _scalar(name, value)
                            np.lib.format.write_array(dst, arr, allow_pickle=False)
                digest = sink.hexdigest()
                fh.flush()
                os.fsync(fh.fileno())
            size = tmp.stat().st_size
            os.replace(tmp, self.output)
            fsync_dir(self.output.parent)
        except OSError as e:
            self.abort(tmp)
            raise ExportWriteError(f"{self.output}: writing the NPZ failed: {e}") from e
        except BaseException:
            self.abort(tmp)
            raise
        self._remove_parts()
        return size, digest

    def _member(self, zf: zipfile.ZipFile, name: str, spec: ArraySpec) -> None:
        header = {
            "descr": np.lib.format.dtype_to_descr(spec.dtype),
            "fortran_order": False,
            "shape": (self.rows, *spec.row_shape),
        }
        with zf.open(f"{name}.npy", "w", force_zip64=True) as dst:
            np.lib.format.write_array_header_2_0(dst, header)
            if not self._segments:
                with open(self._paths[name], "rb") as src:
                    shutil.copyfileobj(src, dst, COPY_CHUNK)
                return
            i = list(self.specs).index(name)
            for seg in self._segments:
                with open(seg.path, "rb") as src:
                    src.seek(sum(seg.sizes[:i]))
                    _copy_exactly(src, dst, seg.sizes[i], seg.path)

    def _remove_parts(self) -> None:
        # Segments too, adopted or not (a worker may have finished one the parent never took).
        prefix = self._temp("seg.").name
        segs = [p for p in self.output.parent.iterdir() if p.name.startswith(prefix)]
        for path in [*self._paths.values(), *segs]:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def abort(self, *extra: Path) -> None:
        """Close and delete every temporary file (idempotent); the output is untouched."""
        for f in self._files.values():
            with contextlib.suppress(OSError):
                f.close()
        self._remove_parts()
        for p in extra:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()


def _copy_exactly(src: IO[bytes], dst: IO[bytes], size: int, what: str) -> None:
    while size > 0:
        chunk = src.read(min(size, COPY_CHUNK))
        if not chunk:
            raise ExportWriteError(f"{what}: segment file ended early ({size:,} B missing)")
        dst.write(chunk)
        size -= len(chunk)


def _scalar(name: str, value: Any) -> npt.NDArray[Any]:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ExportWriteError(
            f"metadata {name!r}: only int, float and str scalars are stored (got {value!r})"
        )
    if isinstance(value, str):
        return np.array(value, dtype=np.str_)
    return np.array(value, dtype=np.int64 if isinstance(value, int) else np.float64)


def _whole(name: str, value: npt.NDArray[Any]) -> npt.NDArray[Any]:
    if not isinstance(value, np.ndarray) or value.dtype.hasobject:
        raise ExportWriteError(f"array {name!r}: only numeric numpy arrays are stored (got {type(value)})")
    return value


class HashingSink(io.RawIOBase):
    """A write-only, unseekable view of ``fh`` that hashes (sha256) every byte written.

    Unseekable on purpose: ``zipfile`` then streams each member and never rewrites a
    header, so the hash is exactly the file's. hashlib releases the GIL, so the
    helper thread hashes while the caller copies the next chunk.
    """

    def __init__(self, fh: IO[bytes]) -> None:
        self._fh = fh
        self._pos = 0
        self._sha = hashlib.sha256()
        self._chunks: queue.Queue[bytes | None] = queue.Queue(maxsize=8)  # bounded: <= 8 chunks held
        self._thread = threading.Thread(target=self._hash, name="npz-sha256", daemon=True)
        self._thread.start()

    def _hash(self) -> None:
        while (chunk := self._chunks.get()) is not None:
            self._sha.update(chunk)

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def tell(self) -> int:
        return self._pos

    def write(self, b: Any) -> int:
        data = b if isinstance(b, bytes) else bytes(b)  # immutable: the hashing thread reads it later
        self._fh.write(data)
        self._pos += len(data)
        self._chunks.put(data)
        return len(data)

    def hexdigest(self) -> str:
        """The sha256 of everything written; no more writes after this."""
        self._stop()
        return self._sha.hexdigest()

    def _stop(self) -> None:
        if self._thread.is_alive():
            self._chunks.put(None)
            self._thread.join()

    def close(self) -> None:  # never closes fh: its owner does
        self._stop()
        super().close()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(COPY_CHUNK):
            h.update(chunk)
    return h.hexdigest()
