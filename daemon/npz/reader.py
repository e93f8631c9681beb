"""Open a training NPZ without copying it: memory-map each stored ``.npy`` member (torch-free).

The export writes members with ZIP_STORED, so each array's bytes sit contiguously
in the zip: the member's local header gives the data offset, the ``.npy`` header
gives dtype/shape, and ``np.memmap`` maps the rest. Compressed members cannot be
mapped and are refused with BAD_DATA.

Features come in one of three layouts (``feature_layout`` metadata; the helpers that
convert between them live in ``layouts.py``):

* ``dense``: member ``features`` (N, C, H, W) uint8. Files without ``feature_layout``
  (format_version 1) are dense.
* ``packbits`` (format_version 2): member ``features_packed`` (N, C, ceil(H*W/8)) uint8,
  exactly ``np.packbits(dense.reshape(N, C, H*W), axis=-1)``; H and W come from the
  ``feature_height`` / ``feature_width`` metadata. The memmap stays packed (8x fewer
  bytes to read); the trainer unpacks per batch on its device (``data.unpack_bits``).
  Padding bits past H*W are ignored, not checked: checking them would read the file.
* ``cells`` (format_version 3): member ``feature_cells`` (N, C) int16, the flat index
  ``row * W + col`` of each plane's single set cell or -1 for an empty plane, and member
  ``feature_constant`` (C, H, W) uint8 0/1, planes OR'ed into every sample (read into
  memory and checked here: it is small). The memmap stays as cells (2 bytes per plane);
  the trainer unpacks per batch on its device (``data.unpack_cells``). The cell range is
  checked per batch window by the loader, not here: checking it would read the file.

Legacy upstream files (object arrays -> pickle) load only with
``allow_legacy_pickle=True``; they are small and are converted in memory:

* policy target = ``policy_indices[argmax(policy_values)]``; an empty policy gives
  target -1 (ignored by the policy loss);
* ``values_mp``: seat 1 = v, seat 2 = -v (two-player file, mover = seat 1 as stored);
* the file has no game ids: consecutive blocks of ``LEGACY_GAME_BLOCK`` samples
  (8 positions x 8 symmetries in the upstream writer) count as one game, so the
  symmetric copies of a position never straddle the train/validation split;
* policy size = largest index + 1.
"""

from __future__ import annotations

import lzma
import math
import struct
import tokenize
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from daemon.npz import format as fmt
from daemon.npz.format import (
    FEATURE_CONSTANT,
    FEATURE_MEMBER,
    LAYOUT_CELLS,
    LAYOUT_DENSE,
    LAYOUT_PACKBITS,
    LAYOUTS,
    REQUIRED_ROW_MEMBERS,
    packed_width,
)
from daemon.training.exitcodes import ExitCode, TrainerError

LEGACY_GAME_BLOCK = 64
_ROW_ARRAYS = REQUIRED_ROW_MEMBERS
_FEATURE_MEMBER = FEATURE_MEMBER
_CONSTANT = FEATURE_CONSTANT
_LOCAL_HEADER = b"PK\x03\x04"
# What opening a corrupt zip or member raises: zipfile and the decompressors (RuntimeError and its
# NotImplementedError: a flipped encryption flag, method or version), numpy's header parser (ast).
_ZIP_ERRORS = (zipfile.BadZipFile, RuntimeError, zlib.error, lzma.LZMAError)
_READ_ERRORS = (ValueError, OSError, EOFError, SyntaxError, tokenize.TokenError, *_ZIP_ERRORS)


@dataclass
class TrainingArrays:
    path: Path
    # As stored (see ``layout``): dense (N, C, H, W) uint8 memmap (float32 for legacy),
    # packbits (N, C, P) uint8 memmap or cells (N, C) int16 memmap.
    features: np.ndarray
    input_shape: tuple[int, int, int]  # (C, H, W) of the dense planes the model sees, either layout
    globals: np.ndarray  # (N, G) float32
    values: np.ndarray  # (N,) mover's perspective
    values_mp: np.ndarray  # (N, 4) per seat
    policy_index: np.ndarray  # (N,) integer, -1 = no policy target
    game_ids: np.ndarray  # (N,) int64
    player_to_move: np.ndarray  # (N,) seat 1..4
    meta: dict[str, Any] = field(default_factory=dict)
    legacy: bool = False
    layout: str = LAYOUT_DENSE  # packbits / cells rows must be unpacked before use
    constant: np.ndarray | None = None  # cells layout: (C, H, W) uint8 0/1 planes OR'ed into every sample

    @property
    def n(self) -> int:
        return int(self.features.shape[0])

    @property
    def packed(self) -> bool:
        return self.layout == LAYOUT_PACKBITS

    @property
    def num_globals(self) -> int:
        return int(self.globals.shape[1])


def _bad(path: Path, msg: str) -> TrainerError:
    return TrainerError(ExitCode.BAD_DATA, f"{path}: {msg}")


@dataclass(frozen=True)
class _Member:
    info: zipfile.ZipInfo
    shape: tuple[int, ...]
    fortran: bool
    dtype: np.dtype[Any]
    header_len: int


def _read_headers(path: Path, zf: zipfile.ZipFile) -> dict[str, _Member]:
    members: dict[str, _Member] = {}
    for info in zf.infolist():
        if not info.filename.endswith(".npy"):
            continue
        name = info.filename[: -len(".npy")]
        try:
            with zf.open(info) as fh:
                version = np.lib.format.read_magic(fh)
                if version == (1, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
                else:
                    shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
                header_len = fh.tell()
        except _READ_ERRORS as exc:
            raise _bad(path, f"member {info.filename!r} is not a valid .npy array ({exc})") from exc
        members[name] = _Member(info, tuple(int(s) for s in shape), bool(fortran), dtype, header_len)
    return members


def open_training_file(path: Path, *, allow_legacy_pickle: bool = False) -> TrainingArrays:
    """Open and validate ``path``; raise TrainerError(BAD_DATA) naming the file on any problem."""
    path = Path(path)
    if not path.is_file():
        raise _bad(path, "training data file not found")
    try:
        zf = zipfile.ZipFile(path)
    except _READ_ERRORS as exc:
        raise _bad(path, f"not a readable NPZ (zip) file, corrupt or truncated ({exc})") from exc
    with zf:
        members = _read_headers(path, zf)
        objects = sorted(k for k, m in members.items() if m.dtype.hasobject)
        if objects:
            if not allow_legacy_pickle:
                raise _bad(
                    path,
                    f"contains object arrays ({', '.join(objects)}) that need pickle to load; this is a "
                    "legacy upstream NPZ - pass --allow-legacy-pickle to load it (trusted files only)",
                )
            return _load_legacy(path)
        meta = _read_scalars(path, zf, members)
        missing = [k for k in _ROW_ARRAYS if k not in members]
        if not any(k in members for k in _FEATURE_MEMBER.values()):
            cells = meta.get(fmt.META_FEATURE_LAYOUT) == LAYOUT_CELLS  # only format 3 has cells: it says so
            missing.insert(0, _FEATURE_MEMBER[LAYOUT_CELLS] if cells else "features (or features_packed)")
        if missing:
            raise _bad(path, f"missing arrays: {', '.join(missing)}")
        layout = _layout(path, meta, members)
        m = {k: _memmap(path, members[k]) for k in (_FEATURE_MEMBER[layout], *_ROW_ARRAYS)}
        features = m[_FEATURE_MEMBER[layout]]
        input_shape = _check_features(path, features, layout, meta)
        constant = None
        if layout == LAYOUT_CELLS:
            constant = _read_constant(path, zf, members[_CONSTANT], input_shape)
    out = TrainingArrays(
        path=path,
        features=features,
        input_shape=input_shape,
        globals=m[fmt.GLOBALS],
        values=m[fmt.VALUES],
        values_mp=m[fmt.VALUES_MP],
        policy_index=m[fmt.POLICY_INDEX],
        game_ids=m[fmt.GAME_IDS],
        player_to_move=m[fmt.PLAYER_TO_MOVE],
        meta=meta,
        layout=layout,
        constant=constant,
    )
    _validate(out)
    return out


def _layout(path: Path, meta: dict[str, Any], members: dict[str, _Member]) -> str:
    """The file's feature layout; without ``feature_layout`` (format 1) the member present decides."""
    layout = meta.get(fmt.META_FEATURE_LAYOUT)
    if layout is None:
        if fmt.FEATURES in members:
            return LAYOUT_DENSE
        if fmt.FEATURES_PACKED in members:
            return LAYOUT_PACKBITS
        raise _bad(path, "feature_cells needs the metadata feature_layout='cells' (format_version 3)")
    if layout not in _FEATURE_MEMBER:
        expected = ", ".join(map(repr, LAYOUTS))
        raise _bad(path, f"unknown feature_layout {layout!r} (expected one of {expected})")
    needed = [_FEATURE_MEMBER[layout], *([_CONSTANT] if layout == LAYOUT_CELLS else [])]
    missing = [k for k in needed if k not in members]
    if missing:
        raise _bad(path, f"missing arrays: {', '.join(missing)} (feature_layout={layout!r})")
    return str(layout)


def _dim(path: Path, meta: dict[str, Any], key: str) -> int:
    value = meta.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise _bad(path, f"metadata {key!r} missing or not a positive integer (got {value!r})")
    return value


def _check_features(path: Path, feats: np.ndarray, layout: str, meta: dict[str, Any]) -> tuple[int, int, int]:
    """Validate the feature array against its layout and metadata; return the dense (C, H, W)."""
    if layout != LAYOUT_DENSE:
        h, w = _dim(path, meta, fmt.META_FEATURE_HEIGHT), _dim(path, meta, fmt.META_FEATURE_WIDTH)
        name = _FEATURE_MEMBER[layout]
        packbits = layout == LAYOUT_PACKBITS
        dtype, ndim, shape = (np.uint8, 3, "(N, C, ceil(H*W/8))") if packbits else (np.int16, 2, "(N, C)")
        if feats.dtype != dtype:
            raise _bad(path, f"{name} dtype {feats.dtype} not supported ({np.dtype(dtype)} expected)")
        if feats.ndim != ndim:
            raise _bad(path, f"{name} must be {shape}, got {feats.shape}")
        if packbits and feats.shape[2] != packed_width(h, w):
            raise _bad(
                path,
                f"features_packed has {feats.shape[2]} bytes per plane, expected "
                f"ceil({h}*{w}/8) = {packed_width(h, w)} for feature_height={h} feature_width={w}",
            )
        c = int(feats.shape[1])
        if h != w:  # the model (RingNet) is built for a square grid
            raise _bad(path, f"feature_height={h} != feature_width={w}: only square grids are supported")
    else:
        if feats.ndim != 4 or feats.shape[2] != feats.shape[3]:
            raise _bad(path, f"features must be (N, C, H, H), got {feats.shape}")
        if feats.dtype not in (np.uint8, np.float32, np.float16):
            raise _bad(path, f"features dtype {feats.dtype} not supported (uint8 expected)")
        c, h, w = (int(s) for s in feats.shape[1:])
        for key, size in ((fmt.META_FEATURE_HEIGHT, h), (fmt.META_FEATURE_WIDTH, w)):
            if key in meta and meta[key] != size:
                raise _bad(path, f"metadata {key}={meta[key]!r} but features are {feats.shape}")
    planes = meta.get(fmt.META_NUM_PLANES)
    if isinstance(planes, int) and planes != c:
        raise _bad(path, f"num_planes={planes} but features have {c} planes")
    return c, h, w


def _read_constant(
    path: Path, zf: zipfile.ZipFile, m: _Member, input_shape: tuple[int, int, int]
) -> np.ndarray:
    """The cells layout's ``feature_constant``, checked against its header before it is read."""
    c, h, w = input_shape
    if m.dtype != np.uint8:
        raise _bad(path, f"{_CONSTANT} dtype {m.dtype} not supported (uint8 expected)")
    if len(m.shape) != 3 or m.shape[1:] != (h, w):
        raise _bad(
            path,
            f"{_CONSTANT} must be (C, H, W) = ({c}, {h}, {w}) for feature_height={h} "
            f"feature_width={w}, got {m.shape}",
        )
    if m.shape[0] != c:
        raise _bad(path, f"{_CONSTANT} has {m.shape[0]} planes but feature_cells has {c}")
    if m.info.compress_type != zipfile.ZIP_STORED:  # like every other member (see _memmap)
        raise _bad(path, f"member {m.info.filename!r} is compressed; re-export with ZIP_STORED members")
    try:
        with zf.open(m.info) as fh:
            const = np.lib.format.read_array(fh, allow_pickle=False)
    except _READ_ERRORS as exc:
        raise _bad(path, f"{_CONSTANT} unreadable ({exc})") from exc
    if not np.isin(const, (0, 1)).all():
        raise _bad(path, f"{_CONSTANT} values must be 0/1 (max {int(const.max())})")
    return np.ascontiguousarray(const)


def _read_scalars(path: Path, zf: zipfile.ZipFile, members: dict[str, _Member]) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    for name, m in members.items():
        if m.shape != ():
            continue
        try:
            with zf.open(m.info) as fh:
                value = np.lib.format.read_array(fh, allow_pickle=False)
        except _READ_ERRORS as exc:
            raise _bad(path, f"metadata {name!r} unreadable ({exc})") from exc
        meta[name] = value.item()
    return meta


def _memmap(path: Path, m: _Member) -> np.ndarray:
    info = m.info
    if info.compress_type != zipfile.ZIP_STORED:
        raise _bad(
            path,
            f"member {info.filename!r} is compressed and cannot be memory-mapped; "
            "re-export with uncompressed (ZIP_STORED) members",
        )
    nbytes = math.prod(m.shape) * m.dtype.itemsize
    if nbytes == 0:
        raise _bad(path, f"array {info.filename!r} is empty (no samples)")
    with path.open("rb") as fh:
        fh.seek(info.header_offset)
        local = fh.read(30)
        file_size = fh.seek(0, 2)
    if len(local) < 30 or local[:4] != _LOCAL_HEADER:
        raise _bad(path, f"bad zip local header for {info.filename!r}")
    name_len, extra_len = struct.unpack("<HH", local[26:30])
    offset = info.header_offset + 30 + name_len + extra_len + m.header_len
    if m.header_len + nbytes > info.file_size or offset + nbytes > file_size:
        raise _bad(path, f"array {info.filename!r} is truncated")
    mapped: np.ndarray = np.memmap(
        path, dtype=m.dtype, mode="r", offset=int(offset), shape=m.shape, order="F" if m.fortran else "C"
    )
    return mapped


def _validate(a: TrainingArrays) -> None:
    """Row arrays and metadata; the features were checked by ``_check_features``."""
    p = a.path
    n = a.n
    if n == 0:
        raise _bad(p, "no samples (N == 0)")
    expect = {
        fmt.GLOBALS: 2,
        fmt.VALUES: 1,
        fmt.VALUES_MP: 2,
        fmt.POLICY_INDEX: 1,
        fmt.GAME_IDS: 1,
        fmt.PLAYER_TO_MOVE: 1,
    }
    for name, ndim in expect.items():
        arr: np.ndarray = getattr(a, name)
        if arr.ndim != ndim or arr.shape[0] != n:
            raise _bad(p, f"array {name!r} has shape {arr.shape}, expected {ndim}-d with {n} rows")
    if a.values_mp.shape[1] != fmt.NUM_SEATS:
        raise _bad(p, f"values_mp must be (N, 4), got {a.values_mp.shape}")
    if not np.issubdtype(a.policy_index.dtype, np.integer):
        raise _bad(p, f"policy_index must be integer, got {a.policy_index.dtype}")
    for key in (fmt.META_POLICY_SIZE, fmt.META_NUM_PLAYERS):
        if not isinstance(a.meta.get(key), int):
            raise _bad(p, f"metadata {key!r} missing or not an integer")
    policy_size = int(a.meta[fmt.META_POLICY_SIZE])
    players = int(a.meta[fmt.META_NUM_PLAYERS])
    if not 1 <= players <= fmt.NUM_SEATS or policy_size <= 0:
        raise _bad(p, f"bad metadata num_players={players} policy_size={policy_size}")
    lo, hi = int(a.policy_index.min()), int(a.policy_index.max())
    if lo < -1 or hi >= policy_size:
        raise _bad(p, f"policy_index out of range [0, {policy_size}): min {lo}, max {hi}")
    # Small float arrays: one pass is cheap, and a NaN target would train silently to garbage.
    for name in (fmt.VALUES, fmt.VALUES_MP, fmt.GLOBALS):
        arr = np.asarray(getattr(a, name))
        if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
            raise _bad(p, f"array {name!r} contains NaN or inf")


def _load_legacy(path: Path) -> TrainingArrays:
    try:
        with np.load(path, allow_pickle=True) as d:
            features = np.ascontiguousarray(d["features"], dtype=np.float32)
            globals_ = np.ascontiguousarray(d["globals"], dtype=np.float32)
            values = np.asarray(d["values"], dtype=np.float32)
            p_idx = d["policy_indices"]
            p_val = d["policy_values"]
    except (KeyError, ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise _bad(path, f"legacy NPZ unreadable ({exc})") from exc
    n = features.shape[0]
    if n == 0 or features.ndim != 4 or len(p_idx) != n or len(p_val) != n or len(values) != n:
        raise _bad(path, "legacy NPZ arrays have inconsistent shapes")
    policy = np.full(n, -1, dtype=np.int64)
    for i in range(n):
        idx = np.asarray(p_idx[i]).ravel()
        if idx.size:
            policy[i] = int(idx[int(np.argmax(np.asarray(p_val[i]).ravel()))])
    values_mp = np.zeros((n, 4), dtype=np.float32)
    values_mp[:, 0] = values
    values_mp[:, 1] = -values
    grid = int(features.shape[-1])
    board = "square8" if grid == 8 else "square19" if grid == 19 else f"grid{grid}"
    meta: dict[str, Any] = {
        "board_type": board,
        "config_key": f"{board}_2p",
        "num_players": 2,
        "policy_size": int(policy.max()) + 1 if (policy >= 0).any() else 1,
        "encoder_name": "legacy",
        "num_planes": int(features.shape[1]),
        "num_globals": int(globals_.shape[1]),
    }
    out = TrainingArrays(
        path=path,
        features=features,
        input_shape=_check_features(path, features, LAYOUT_DENSE, meta),
        globals=globals_,
        values=values,
        values_mp=values_mp,
        policy_index=policy,
        game_ids=np.arange(n, dtype=np.int64) // LEGACY_GAME_BLOCK,
        player_to_move=np.ones(n, dtype=np.int8),
        meta=meta,
        legacy=True,
    )
    _validate(out)
    return out
