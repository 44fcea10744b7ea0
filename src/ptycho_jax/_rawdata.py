"""RawData: scan positions, diffraction amplitudes, probe and object, with upstream-compatible NPZ I/O (pipeline.md §2)."""

import dataclasses
import functools
import json
import logging
import os
import struct
import zipfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from numpy.typing import DTypeLike

from ._atomic import write_npz_atomic
from ._errors import RawDataError

logger = logging.getLogger(__name__)

COORD_FIELDS = ("xcoords", "ycoords", "xcoords_start", "ycoords_start")
NPZ_KEYS = (*COORD_FIELDS, "diff3d", "probeGuess", "objectGuess", "scan_index")
REQUIRED_NPZ_KEYS = ("xcoords", "ycoords", "diff3d", "probeGuess")
ALIGNMENT = 64
"""Byte alignment of the frame arrays (`diff3d`, `Y`): JAX's CPU client aliases a host array so
aligned in `device_put` instead of copying it (NumPy's large arrays start 16 bytes past a page)."""
FRAME_KEYS = ("diff3d", "Y")


def aligned_empty(shape: tuple[int, ...], dtype: DTypeLike) -> np.ndarray:
    dtype = np.dtype(dtype)
    n = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    buf = np.empty(n + ALIGNMENT, np.uint8)
    skip = -buf.ctypes.data % ALIGNMENT
    return buf[skip : skip + n].view(dtype).reshape(shape)


HOST_ROWS_PER_TASK = 64
"""Rows per task of the host kernels that run on `host_map`'s threads."""


@functools.cache
def _host_pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(
        max(1, min(4, os.cpu_count() or 1)), thread_name_prefix="ptycho_jax-host"
    )


def host_map(work: Callable[[slice], None], rows: int, per_task: int = HOST_ROWS_PER_TASK) -> None:
    """`work(block)` for consecutive row blocks covering `rows`, on a few threads (NumPy releases the GIL)."""
    list(
        _host_pool().map(
            work, [slice(i, min(i + per_task, rows)) for i in range(0, rows, per_task)]
        )
    )


def aligned(a: np.ndarray) -> np.ndarray:
    """`a` itself when C-contiguous and `ALIGNMENT`-byte aligned, else such a copy of it."""
    if a.flags.c_contiguous and a.ctypes.data % ALIGNMENT == 0:
        return a
    out = aligned_empty(a.shape, a.dtype)
    np.copyto(out, a)
    return out


def _describe(a: Any) -> str:
    if a is None:
        return "None"
    a = np.asarray(a)
    return f"shape {tuple(a.shape)} dtype {a.dtype}"


COORD_LIMIT = float(2**24)
"""Largest |coordinate| accepted, in object pixels: beyond it float32 (where upstream casts patch
centres) no longer holds whole pixels, and an object that large would not fit in any memory."""


def _check_finite(name: str, a: np.ndarray) -> None:
    finite = np.isfinite(a)
    if not finite.all():
        bad = np.argwhere(~finite)
        raise RawDataError(
            f"RawData.{name}: expected finite values, got {bad.shape[0]} NaN/Inf entries "
            f"(first at index {tuple(int(i) for i in bad[0])})"
        )


SOURCE_DTYPES = ("float32", "uint16", "float64")
"""The `diff3d` dtypes RawData takes; the last two converted exactly to float32 (bad-input.md §2.1)."""


def _frames_as_float32(d: np.ndarray, source: str) -> tuple[np.ndarray, str]:
    """`diff3d` as float32 and the dtype it came in; RawDataError for a dtype or value that has
    no exact float32 form.

    uint16 (legacy detector counts, stored as amplitudes by upstream's convention): every value is
    a float32 integer, so the cast is exact; upstream main casts the same way (in float64 first, in
    `normalize_data`) and treats the values as amplitudes, so does this port. float64: accepted only
    when every value is exactly a float32 (upstream main would otherwise derive its gain from
    values the float32 chain no longer holds).
    """
    if source not in SOURCE_DTYPES:
        raise RawDataError(
            f"RawData.diff3d_source_dtype: expected one of {list(SOURCE_DTYPES)}, got {source!r}"
        )
    how = "convert with diff3d.astype(np.float32) before building RawData"
    if d.dtype == np.uint16:
        return d.astype(np.float32), "uint16"
    if d.dtype == np.float64:
        _check_finite("diff3d", d)
        f = d.astype(np.float32)
        inexact = f.astype(np.float64) != d
        if inexact.any():
            i = tuple(int(k) for k in np.argwhere(inexact)[0])
            raise RawDataError(
                f"RawData.diff3d: float64 frames are taken only when every value is exactly a "
                f"float32, got {int(inexact.sum())} values that are not (first at index {i}: "
                f"{d[i]!r}); upstream main would derive its normalisation gain from the float64 "
                f"values while this port holds float32 frames: {how} (the gain then comes from "
                "the rounded values, on both sides)"
            )
        return f, "float64"
    if d.dtype != np.float32:
        raise RawDataError(
            f"RawData.diff3d: expected dtype float32 (amplitudes), uint16 or float64 (converted "
            f"exactly), got {d.dtype}; {how} if the values fit"
        )
    if (
        source == "uint16"
    ):  # float32 frames said to come from uint16 (a RawData rebuilt or replaced)
        bad = (d != np.round(d)) | (d < 0) | (d > 65535)
        if bad.any():
            i = tuple(int(k) for k in np.argwhere(bad)[0])
            raise RawDataError(
                f"RawData.diff3d: expected whole values in [0, 65535] for diff3d_source_dtype "
                f"'uint16', got {d[i]!r} at index {i} (leave diff3d_source_dtype out for float32 "
                "frames)"
            )
    return d, source


def frames_as_given(raw: "RawData") -> np.ndarray:
    """`raw.diff3d` in the dtype it was given in (exact: the conversion to float32 was)."""
    if raw.diff3d_source_dtype == "float32":
        return raw.diff3d
    return raw.diff3d.astype(raw.diff3d_source_dtype)


def _checked_coordinate(name: str, a: Any) -> np.ndarray:
    """One coordinate field as float64 (M,): finite, within the float32-exact pixel range."""
    if a is None:
        raise RawDataError(f"RawData.{name}: expected a 1-D float array, got None")
    a = np.asarray(a)
    if a.ndim != 1 or not np.issubdtype(a.dtype, np.floating):
        raise RawDataError(f"RawData.{name}: expected a 1-D float array (M,), got {_describe(a)}")
    a = a.astype(np.float64, copy=False)  # float32 -> float64 is exact
    _check_finite(name, a)
    if a.size and np.abs(a).max() > COORD_LIMIT:
        i = int(np.argmax(np.abs(a)))
        raise RawDataError(
            f"RawData.{name}: expected object-pixel coordinates within +-2**24 = {COORD_LIMIT:.0f}, "
            f"got {a[i]:.6g} at index {i} (coordinates in metres or a corrupt file?)"
        )
    return a


def _scan_length(raw: "RawData") -> int:
    """M, the one length of the four coordinate fields (at least one position)."""
    lengths = {name: getattr(raw, name).shape[0] for name in COORD_FIELDS}
    if len(set(lengths.values())) != 1:
        raise RawDataError(
            f"RawData coordinates: expected xcoords, ycoords, xcoords_start, ycoords_start of one "
            f"length, got lengths {lengths}"
        )
    m = lengths["xcoords"]
    if m == 0:
        raise RawDataError("RawData.xcoords: expected at least one scan position, got 0")
    return m


def _checked_frames(d: Any, m: int, source_dtype: str) -> tuple[np.ndarray, str]:
    """diff3d as float32 (M, N, N) amplitudes, finite and >= 0, with the dtype it was given in."""
    if d is None:
        raise RawDataError("RawData.diff3d: expected a (M, N, N) float32 array, got None")
    d = np.asarray(d)
    if d.ndim != 3 or d.shape[1] != d.shape[2]:
        raise RawDataError(
            f"RawData.diff3d: expected a 3-D array of square frames (M, N, N), got {_describe(d)}"
        )
    if d.shape[0] != m:
        raise RawDataError(
            f"RawData.diff3d: expected {m} frames (one per coordinate), got {d.shape[0]}"
        )
    d, source = _frames_as_float32(d, source_dtype)
    _check_finite("diff3d", d)
    if (d < 0).any():
        raise RawDataError(
            f"RawData.diff3d: expected amplitudes >= 0, got minimum {float(d.min())}"
        )
    return d, source


def _checked_probe(p: Any, n: int) -> np.ndarray:
    """probeGuess: a finite, non-zero (N, N) complex64 array."""
    if p is None:
        raise RawDataError(f"RawData.probeGuess: expected a ({n}, {n}) complex64 array, got None")
    p = np.asarray(p)
    if p.ndim != 2 or p.shape != (n, n):
        raise RawDataError(
            f"RawData.probeGuess: expected shape ({n}, {n}) matching the frames, got {_describe(p)}"
        )
    if p.dtype != np.complex64:
        raise RawDataError(f"RawData.probeGuess: expected dtype complex64, got {p.dtype}")
    _check_finite("probeGuess", p)
    if not p.any():
        raise RawDataError(
            f"RawData.probeGuess: expected a probe with non-zero values, got all {n}x{n} entries zero "
            "(nothing would be illuminated)"
        )
    return p


def _checked_scan_index(s: Any, m: int) -> np.ndarray:
    """scan_index: 1-D integers of length M (zeros when absent)."""
    s = np.zeros(m, np.int64) if s is None else np.asarray(s)
    if s.ndim != 1 or s.shape[0] != m or not np.issubdtype(s.dtype, np.integer):
        raise RawDataError(
            f"RawData.scan_index: expected a 1-D integer array of length {m}, got {_describe(s)}"
        )
    return s


def _checked_object(o: Any) -> np.ndarray:
    """objectGuess: a finite 2-D complex64 array."""
    o = np.asarray(o)
    if o.ndim != 2:
        raise RawDataError(
            f"RawData.objectGuess: expected a 2-D complex64 array (H, W), got {_describe(o)}"
        )
    if o.dtype != np.complex64:
        raise RawDataError(f"RawData.objectGuess: expected dtype complex64, got {o.dtype}")
    _check_finite("objectGuess", o)
    return o


def _checked_truth(y: Any, m: int, n: int) -> np.ndarray:
    """Y: the (M, N, N, 1) complex64 ground-truth patches ((M, N, N) gains its channel)."""
    y = np.asarray(y)
    if y.ndim == 3:
        y = y[..., None]
    if y.shape != (m, n, n, 1) or y.dtype != np.complex64:
        raise RawDataError(f"RawData.Y: expected ({m}, {n}, {n}, 1) complex64, got {_describe(y)}")
    _check_finite("Y", y)
    return y


@dataclasses.dataclass(frozen=True, eq=False, kw_only=True)
class RawData:
    """One scan: positions, diffraction amplitudes, probe and (optionally) object, as host NumPy arrays.

    Field names follow the upstream NPZ keys. Coordinates are object-grid pixels ([x] = columns,
    [y] = rows), converted losslessly to float64; `diff3d` holds amplitudes (square roots of
    counts), never intensities.

    Deliberate divergences from upstream (specs/pipeline.md §2): `diff3d` and `probeGuess` are
    required; the frame count must equal the coordinate count; frames and coordinates must be
    finite; the probe must be (N, N) with N equal to the frame size.

    Raises:
        RawDataError: a field is missing or has the wrong shape, dtype or values.
    """

    xcoords: np.ndarray
    ycoords: np.ndarray
    xcoords_start: np.ndarray
    ycoords_start: np.ndarray
    diff3d: np.ndarray
    probeGuess: np.ndarray
    scan_index: np.ndarray | None = None  # None: zeros, as upstream
    objectGuess: np.ndarray | None = None
    Y: np.ndarray | None = None
    norm_Y_I: float | None = None
    metadata: dict | None = None
    # the dtype `diff3d` was given in, before its exact conversion to float32 (specs/bad-input.md
    # §2.1): "uint16" or "float64" travel back to upstream as given (to_npz, the crosscheck workers)
    diff3d_source_dtype: str = "float32"

    def __post_init__(self):
        # each field in turn, in the order its errors are documented (specs/bad-input.md §2)
        set_ = lambda k, v: object.__setattr__(self, k, v)
        for name in COORD_FIELDS:
            set_(name, _checked_coordinate(name, getattr(self, name)))
        m = _scan_length(self)
        d, source = _checked_frames(self.diff3d, m, self.diff3d_source_dtype)
        set_("diff3d_source_dtype", source)
        set_("diff3d", aligned(d))
        n = d.shape[1]
        set_("probeGuess", _checked_probe(self.probeGuess, n))
        set_("scan_index", _checked_scan_index(self.scan_index, m))
        if self.objectGuess is not None:
            set_("objectGuess", _checked_object(self.objectGuess))
        if self.Y is not None:
            set_("Y", aligned(_checked_truth(self.Y, m, n)))

    # -- derived sizes -------------------------------------------------------------------------
    @functools.cached_property
    def smallest_positive_amplitude(self) -> np.float32:
        """The smallest amplitude > 0 in `diff3d` (inf when all are 0), computed once per RawData.

        Tells whether a scaled copy of the frames can meet a subnormal float32, which XLA on CPU
        flushes to zero where NumPy keeps it (`_normalize.scale_on_host`). Cached: a RawData's
        arrays are treated as read-only once built (change frames by building a new RawData).
        """
        # Amplitudes are >= 0 (checked), so as int32 bits the positive ones keep their order; bits - 1
        # as uint32 sends +0 to the top and -0 (0x80000000) above every finite positive value.
        bits = self.diff3d.reshape(-1).view(np.uint32)
        step = 1 << 22
        low = (
            min(int((bits[i : i + step] - np.uint32(1)).min()) for i in range(0, bits.size, step))
            + 1
        )
        return np.float32(np.inf) if low >= 0x7F800000 else np.uint32(low).view(np.float32)

    @functools.cached_property
    def frame_energies(self) -> np.ndarray:
        """(M,) float64 `Σ_hw diff3d[i]²` of every frame, computed once per RawData (read-only, cached).

        The main variant's normalisation energy of any grouping is then `Σ_bc frame_energies[nn]`
        (pipeline.md §6), so the one-device CPU chain knows its gain before it gathers and scales in
        one pass over the frames. A float64 sum in another order than the grouped reduction: the
        float32 gain it gives is the same (the orders differ by ~1e-16 relative).
        """
        out = np.empty(len(self.diff3d), np.float64)
        frames = self.diff3d.reshape(len(self.diff3d), -1)

        def work(block: slice) -> None:
            f = frames[block].astype(np.float64)
            np.einsum("ij,ij->i", f, f, out=out[block])

        host_map(work, len(out))
        out.setflags(write=False)
        return out

    @property
    def N(self) -> int:
        """Frame (and probe) size in pixels."""
        return int(self.diff3d.shape[1])

    def __len__(self) -> int:
        return int(self.xcoords.shape[0])

    def positions(self, *, start: bool = False) -> np.ndarray:
        """The (M, 2) float64 array of [x, y] positions (nominal/start ones if `start`)."""
        if start:
            return np.stack([self.xcoords_start, self.ycoords_start], axis=1)
        return np.stack([self.xcoords, self.ycoords], axis=1)

    def subset(self, indices: np.ndarray | Sequence[int]) -> "RawData":
        """A RawData holding the positions `indices` (in that order); probe, object and metadata shared."""
        idx = np.asarray(indices)
        if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
            raise RawDataError(
                f"RawData.subset: expected 1-D integer indices, got {_describe(idx)}"
            )
        if idx.size and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise RawDataError(
                f"RawData.subset: indices must lie in [0, {len(self)}), got [{idx.min()}, {idx.max()}]"
            )
        return RawData(
            xcoords=self.xcoords[idx],
            ycoords=self.ycoords[idx],
            xcoords_start=self.xcoords_start[idx],
            ycoords_start=self.ycoords_start[idx],
            diff3d=self.diff3d[idx],
            probeGuess=self.probeGuess,
            scan_index=self.scan_index[idx],
            objectGuess=self.objectGuess,
            Y=None if self.Y is None else self.Y[idx],
            norm_Y_I=self.norm_Y_I,
            metadata=self.metadata,
            diff3d_source_dtype=self.diff3d_source_dtype,
        )

    # -- frames on a device --------------------------------------------------------------------
    def on_device(self, device: Any = None) -> "RawData":
        """This RawData with its frames also placed once on `device` (default: JAX's first device).

        The returned RawData shares every host array (validated once, here not again) and holds
        `device_frames`, a committed (M, N, N) float32 `jax.Array` equal to `diff3d`: the one-device
        chain (`group`, `run_chain`) gathers from it instead of transferring `diff3d` on every call;
        outputs are bit-identical. Several devices, a mesh over other devices or streaming
        (`chunk_groups`) place the host frames as before. `dataclasses.replace` and `subset` return
        host-only RawData (their frames are new arrays). The host copy stays (the gain checks and
        NPZ output read it).
        """
        import copy

        import jax

        target = jax.devices()[0] if device is None else device
        if not isinstance(target, jax.Device):
            raise RawDataError(
                f"RawData.on_device: device: expected a jax.Device or None, got {type(target).__name__}"
            )
        placed = jax.device_put(self.diff3d, target)
        placed.block_until_ready()
        out = copy.copy(self)  # the cached energies and smallest amplitude hold for the same frames
        object.__setattr__(out, "_device_frames", placed)
        return out

    @property
    def device_frames(self) -> Any:
        """The frames placed by `on_device` (a committed `jax.Array`), or None for a host RawData."""
        return self.__dict__.get("_device_frames")

    # -- I/O -----------------------------------------------------------------------------------
    @classmethod
    def from_npz(cls, path: str | os.PathLike) -> "RawData":
        """Load an upstream-format RawData NPZ file (pipeline.md §2.4).

        Missing `*_start` keys default to the positions, a missing `scan_index` to zeros, a missing
        `objectGuess` to None. A `Y` key (simulation patches) and a `_metadata` JSON string are read
        when present. Pickled entries are refused (upstream's `objectGuess=None` placeholder among them).

        Raises:
            RawDataError: the file is missing, truncated, not an NPZ, lacks a required key, or a field is invalid.
        """
        path = os.fspath(path)
        try:
            fh = open(path, "rb")
        except FileNotFoundError:
            raise RawDataError(
                f"RawData file {path!r}: expected an existing .npz file, got no such file"
            ) from None
        except IsADirectoryError:
            raise RawDataError(
                f"RawData file {path!r}: expected a .npz file, got a folder"
            ) from None
        except OSError as e:
            raise RawDataError(
                f"RawData file {path!r}: expected a readable .npz file, could not open it ({e.strerror or e})"
            ) from None
        with fh:  # our own handle, so a failed parse never leaks the file
            data = _read_npz_entries(fh, path)
        metadata = None
        if "_metadata" in data:
            try:
                metadata = json.loads(str(data.pop("_metadata")))
            except json.JSONDecodeError:
                logger.warning("RawData file %r: _metadata is not valid JSON; ignored", path)
        x, y = data["xcoords"], data["ycoords"]
        return cls(
            xcoords=x,
            ycoords=y,
            xcoords_start=data.get("xcoords_start", x),
            ycoords_start=data.get("ycoords_start", y),
            diff3d=data["diff3d"],
            probeGuess=data["probeGuess"],
            scan_index=data.get("scan_index", np.zeros(np.shape(x)[:1], np.int64)),
            objectGuess=data.get("objectGuess"),
            Y=data.get("Y"),
            metadata=metadata,
        )

    def to_npz(self, path: str | os.PathLike, *, include_Y: bool = False) -> None:
        """Write an upstream-compatible, uncompressed NPZ (pipeline.md §2.3), atomically.

        Keys: `xcoords, ycoords, xcoords_start, ycoords_start, diff3d, probeGuess, objectGuess,
        scan_index` (`objectGuess` omitted when None, where upstream writes a pickled placeholder
        it cannot reload). `Y` only with `include_Y=True`.
        """
        arrays = {k: getattr(self, k) for k in NPZ_KEYS if getattr(self, k) is not None}
        arrays["diff3d"] = frames_as_given(self)  # uint16 / float64 files round-trip as given
        if include_Y and self.Y is not None:
            arrays["Y"] = self.Y
        write_npz_atomic(path, arrays)


# What NumPy and zipfile raise on a damaged archive is open-ended: bad structure (BadZipFile,
# struct.error, EOFError, OSError), garbled headers and names (ValueError, UnicodeDecodeError,
# tokenize.TokenError from NumPy's header parser), a flipped version or compression field
# (NotImplementedError), a member that does not inflate (zlib.error), a header that claims an
# impossible shape (OverflowError, MemoryError) -- all found by tests/test_fuzz.py. Only the parsing
# calls sit inside these `try` blocks, so any exception there means the file cannot be parsed.
_CORRUPT = Exception


def _one_line(e: BaseException) -> str:
    return " ".join(f"{type(e).__name__}: {e}".split())


def _read_npz_entries(fh, path: str) -> dict[str, Any]:
    magic = fh.read(6)
    fh.seek(0)
    if not magic.startswith(b"PK") and magic != b"\x93NUMPY":
        # np.load reads anything else as a pickle and says so: a text or other file is neither
        raise RawDataError(
            f"RawData file {path!r}: expected an NPZ archive (a zip file, starting with b'PK'), "
            f"got a file starting with {magic!r}" + (" (empty)" if not magic else "")
        )
    try:
        npz = np.load(fh, allow_pickle=False)
    except _CORRUPT as e:
        raise RawDataError(
            f"RawData file {path!r}: expected an NPZ archive, could not read it ({_one_line(e)})"
        ) from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise RawDataError(
            f"RawData file {path!r}: expected an NPZ archive, got a single .npy array"
        )
    with npz:
        try:
            keys = set(npz.files)
        except _CORRUPT as e:  # pragma: no cover - NpzFile lists names when it opens
            raise RawDataError(
                f"RawData file {path!r}: corrupt archive directory ({_one_line(e)})"
            ) from None
        missing = [k for k in REQUIRED_NPZ_KEYS if k not in keys]
        if missing:
            raise RawDataError(
                f"RawData file {path!r}: missing required key(s) {missing}; found keys {sorted(keys)}"
            )
        data: dict[str, Any] = {}
        for k in sorted(keys & {*NPZ_KEYS, "Y", "_metadata"}):
            try:
                data[k] = _read_aligned(npz, k) if k in FRAME_KEYS else None
                if data[k] is None:
                    data[k] = npz[k]
            except ValueError as e:
                if "allow_pickle" in str(e):
                    raise RawDataError(
                        f"RawData file {path!r}: entry {k!r} needs pickle to load; upstream writes "
                        "objectGuess=None that way - re-save the file without it"
                    ) from None
                raise RawDataError(
                    f"RawData file {path!r}: entry {k!r} is truncated or corrupt ({_one_line(e)})"
                ) from None
            except _CORRUPT as e:
                raise RawDataError(
                    f"RawData file {path!r}: entry {k!r} is truncated or corrupt ({_one_line(e)})"
                ) from None
    return data


def _read_aligned(npz: np.lib.npyio.NpzFile, key: str) -> np.ndarray | None:
    """Entry `key` of a stored (uncompressed) member read from the file straight into an
    `ALIGNMENT`-byte aligned array, or None where that does not apply (deflated members, object or
    Fortran-order arrays, anything unexpected): NumPy's reader then reads it and reports what is wrong."""
    try:
        info = npz.zip.getinfo(key + ".npy")
        if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
            return None
        fp = npz.zip.fp
        fp.seek(info.header_offset)
        local = fp.read(30)
        if len(local) != 30 or local[:4] != b"PK\x03\x04":
            return None
        name_len, extra_len = struct.unpack("<HH", local[26:30])
        fp.seek(info.header_offset + 30 + name_len + extra_len)
        version = np.lib.format.read_magic(fp)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fp)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fp)
        else:
            return None
        if fortran or dtype.hasobject:
            return None
        out = aligned_empty(shape, dtype)
        view = memoryview(out.reshape(-1).view(np.uint8))
        got = 0
        while got < len(view):
            n = fp.readinto(view[got:])
            if not n:
                return None  # truncated: NumPy's reader names it
            got += n
        return out
    except Exception:  # noqa: BLE001 - any damage is reported by NumPy's reader on the fallback
        return None
