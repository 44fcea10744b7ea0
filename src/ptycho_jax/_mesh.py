"""The device mesh and data layout of the chain: mesh axis "groups", blocks, placement, the ring exchange (specs/scaling.md).

Groups are cut into D equal contiguous blocks of `ceil(B/D)` rows, the padding at the end; scan
frames into D balanced contiguous blocks, each padded to `ceil(M/D)` rows, so every process holds
only the frames of its own devices. A device fetches the frames its groups need from the devices
that hold them in D − 1 `ppermute` rounds around the ring (round k: device o sends to o + k what it
needs), then gathers its block; exact, it only moves data.
"""

import dataclasses
import functools as ft
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from ._errors import PtychoInputError
from ._grouping import gather_and_scale, gather_frames, gather_frames_host
from ._rawdata import RawData

AXIS = "groups"
"""Name of the mesh axis the group (and frame) axis is sharded over."""


# -- mesh ----------------------------------------------------------------------------------------
def make_mesh(devices: int | Sequence | None = None) -> Mesh:
    """A 1-D mesh with axis `"groups"` over the given devices.

    Args:
        devices: None — every device of every process (`jax.devices()`); an int n — the first n of
            them; a sequence — exactly those devices, in that order.

    Raises:
        PtychoInputError: n outside [1, len(jax.devices())], an empty or repeated device list, or
            an entry that is not a `jax.Device`.
    """
    everything = jax.devices()
    if devices is None:
        chosen = list(everything)
    elif isinstance(devices, (int, np.integer)) and not isinstance(devices, bool):
        if not 1 <= int(devices) <= len(everything):
            raise PtychoInputError(
                f"make_mesh: devices: expected an int in [1, {len(everything)}] (the devices JAX sees), got {devices}; "
                "on CPU, more devices need XLA_FLAGS=--xla_force_host_platform_device_count=<n> before JAX starts"
            )
        chosen = list(everything[: int(devices)])
    else:
        if isinstance(devices, (bool, str)) or not isinstance(devices, Sequence):
            raise PtychoInputError(
                f"make_mesh: devices: expected None, an int or a sequence of jax.Device, got {type(devices).__name__}"
            )
        chosen = list(devices)
        if not chosen:
            raise PtychoInputError(
                "make_mesh: devices: expected at least one device, got an empty sequence"
            )
        bad = [d for d in chosen if not isinstance(d, jax.Device)]
        if bad:
            raise PtychoInputError(
                f"make_mesh: devices: expected jax.Device entries, got {type(bad[0]).__name__}"
            )
        if len(set(chosen)) != len(chosen):
            raise PtychoInputError(f"make_mesh: devices: expected distinct devices, got {chosen}")
    return Mesh(np.asarray(chosen, dtype=object), (AXIS,))


def check_mesh(mesh, where: str) -> Mesh:
    if not isinstance(mesh, Mesh):
        raise PtychoInputError(
            f"{where}: mesh: expected a jax.sharding.Mesh (see make_mesh), got {type(mesh).__name__}"
        )
    if tuple(mesh.axis_names) != (AXIS,):
        raise PtychoInputError(
            f"{where}: mesh: expected one axis named {AXIS!r}, got axes {tuple(mesh.axis_names)}"
        )
    return mesh


def mesh_devices(mesh: Mesh) -> list:
    return list(mesh.devices.flat)


def is_local(mesh: Mesh) -> bool:
    me = jax.process_index()
    return all(d.process_index == me for d in mesh_devices(mesh))


def process_blocks(mesh: Mesh) -> dict[int, range]:
    """Mesh positions of each process's devices; each must be one contiguous run."""
    runs: dict[int, list[int]] = {}
    for i, d in enumerate(mesh_devices(mesh)):
        runs.setdefault(d.process_index, []).append(i)
    out = {}
    for p, idx in runs.items():
        if idx != list(range(idx[0], idx[-1] + 1)):
            raise PtychoInputError(
                f"mesh: the devices of process {p} must be contiguous in the mesh (they sit at positions {idx}); "
                "build the mesh with make_mesh() or from jax.devices() in order"
            )
        out[p] = range(idx[0], idx[-1] + 1)
    return out


# -- layouts -------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Blocks:
    """`total` rows in D contiguous blocks (block d: rows starts[d] .. starts[d]+counts[d]), each padded to `size`."""

    total: int
    starts: np.ndarray
    counts: np.ndarray
    size: int

    @property
    def devices(self) -> int:
        return len(self.starts)

    @property
    def padded(self) -> int:
        return self.devices * self.size

    def valid(self) -> np.ndarray:
        """(D·size,) bool: which padded slots hold a real row."""
        return (np.arange(self.size)[None, :] < self.counts[:, None]).reshape(-1)

    def scatter(self, rows: np.ndarray, fill=0) -> np.ndarray:
        """Place `rows` (total, ...) into the padded layout (D·size, ...)."""
        out = np.full((self.padded, *rows.shape[1:]), fill, rows.dtype)
        for d in range(self.devices):
            out[d * self.size : d * self.size + self.counts[d]] = rows[
                self.starts[d] : self.starts[d] + self.counts[d]
            ]
        return out


def tail_padded_blocks(total: int, D: int) -> Blocks:
    """Equal blocks of ceil(total/D) rows, the padding at the end (so slicing [:total] undoes it)."""
    size = max(1, -(-total // D))
    starts = np.minimum(np.arange(D) * size, total)
    counts = np.clip(total - np.arange(D) * size, 0, size)
    return Blocks(total, starts, counts, size)


def balanced_blocks(total: int, D: int) -> Blocks:
    """Blocks of floor/ceil(total/D) rows (every block non-empty when total >= D)."""
    starts = (np.arange(D + 1) * total) // D
    return Blocks(total, starts[:-1], np.diff(starts), max(1, -(-total // D)))


def process_frame_range(n_positions: int, *, mesh: Mesh) -> tuple[int, int]:
    """The scan positions `[lo, hi)` whose frames this process loads for `run_chain(..., mesh=mesh)`.

    Frames are split over the mesh devices in balanced contiguous blocks; a process loads the
    blocks of its own devices (with one process: all of them, `(0, n_positions)`). Each process
    then passes `RawData` holding exactly those positions (coordinates and frames) in order.

    Raises:
        PtychoInputError: no device of this process in the mesh, or its devices not contiguous in it.
    """
    check_mesh(mesh, "process_frame_range")
    if (
        isinstance(n_positions, bool)
        or not isinstance(n_positions, (int, np.integer))
        or n_positions < 1
    ):
        raise PtychoInputError(
            f"process_frame_range: n_positions must be an int >= 1, got {n_positions!r}"
        )
    n = int(n_positions)
    blocks = process_blocks(mesh)
    me = jax.process_index()
    if me not in blocks:
        raise PtychoInputError(
            f"process_frame_range: mesh: no device of process {me} is in the mesh"
        )
    frames = balanced_blocks(n, mesh.size)
    first, last = blocks[me][0], blocks[me][-1]
    return int(frames.starts[first]), int(frames.starts[last] + frames.counts[last])


@dataclasses.dataclass(frozen=True)
class Exchange:
    """Ring exchange plan: round k moves frames from device o to device (o + k) mod D."""

    sizes: tuple[int, ...]  # frames per round (max over devices), k = 0..D-1
    sends: tuple[
        np.ndarray, ...
    ]  # per round with size > 0: (D, size) local slots the sender o reads
    local_nn: (
        np.ndarray
    )  # (D·Bs, C) int32: index into the receiver's buffer; padding -> the zero row


def plan_exchange(nn: np.ndarray, groups: Blocks, frames: Blocks) -> Exchange:
    """For every device, which frames it needs from which owner and where they land in its buffer."""
    D = groups.devices
    C = nn.shape[1]
    owner_counts = np.zeros((D, D), np.int64)  # [receiver, owner]
    needed = []
    for r in range(D):
        rows = nn[groups.starts[r] : groups.starts[r] + groups.counts[r]]
        uniq, inverse = np.unique(rows.reshape(-1), return_inverse=True)
        owner = np.searchsorted(frames.starts, uniq, side="right") - 1
        owner_counts[r] = np.bincount(owner, minlength=D)
        needed.append((uniq, inverse.reshape(rows.shape), owner))
    o = np.arange(D)
    sizes = tuple(int(owner_counts[(o + k) % D, o].max()) for k in range(D))
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    sends = [np.zeros((D, q), np.int32) for q in sizes]
    local_nn = np.full((groups.padded, C), offsets[-1], np.int32)
    for r, (uniq, inverse, owner) in enumerate(needed):
        if uniq.size == 0:
            continue
        run_start = np.searchsorted(owner, np.arange(D))  # owners are sorted with the frame indices
        slot = offsets[(r - owner) % D] + np.arange(uniq.size) - run_start[owner]
        local_nn[r * groups.size : r * groups.size + groups.counts[r]] = slot[inverse]
        for ow in np.flatnonzero(owner_counts[r]):
            k = (r - ow) % D
            part = uniq[run_start[ow] : run_start[ow] + owner_counts[r, ow]]
            sends[k][ow, : part.size] = part - frames.starts[ow]
    return Exchange(sizes, tuple(s for s, q in zip(sends, sizes, strict=True) if q), local_nn)


# -- placing host data on the mesh ---------------------------------------------------------------
def put(host: np.ndarray, mesh: Mesh, spec: P) -> jax.Array:
    """A global array from host data every process holds in full (multi-process safe)."""
    host = np.asarray(host)
    return jax.make_array_from_callback(
        host.shape, NamedSharding(mesh, spec), lambda idx: host[idx]
    )


def put_local_blocks(local_rows: np.ndarray, lo: int, frames: Blocks, mesh: Mesh) -> jax.Array:
    """A (D·size, ...) global array sharded over the mesh from the rows this process holds (`lo` onwards)."""
    blocks = process_blocks(mesh)[jax.process_index()]
    parts = []
    for d in blocks:
        part = np.zeros((frames.size, *local_rows.shape[1:]), local_rows.dtype)
        a = frames.starts[d] - lo
        part[: frames.counts[d]] = local_rows[a : a + frames.counts[d]]
        parts.append(part)
    return jax.make_array_from_process_local_data(
        NamedSharding(mesh, P(AXIS)), np.concatenate(parts), (frames.padded, *local_rows.shape[1:])
    )


def to_host(a: jax.Array) -> np.ndarray:
    """The whole global array as NumPy on this process (an all-gather across processes when needed)."""
    if a.is_fully_addressable:
        return np.asarray(a)
    if a.is_fully_replicated:
        return np.asarray(a.addressable_data(0))
    return np.asarray(multihost_utils.process_allgather(a, tiled=True))


@ft.partial(jax.jit, static_argnames=("n", "mesh"))
def _leading_rows(a: jax.Array, *, n: int, mesh: Mesh) -> jax.Array:
    # B rows do not divide over the mesh: JAX has no uneven shardings, so the result is replicated.
    return jax.lax.with_sharding_constraint(a[:n], NamedSharding(mesh, P()))


def unpad(a, n: int, mesh: Mesh):
    if a is None or a.shape[0] == n:
        return a
    return _leading_rows(a, n=n, mesh=mesh)


# -- the frame exchange --------------------------------------------------------------------------
def _ring(D: int, k: int) -> list[tuple[int, int]]:
    return [(o, (o + k) % D) for o in range(D)]


@ft.partial(jax.jit, static_argnames=("mesh", "sizes"))
def exchange_frames(frames, sends, local_nn, *, mesh: Mesh, sizes: tuple[int, ...]):
    """(Bs, N, N, C) per device: its groups' frames, fetched over the ring and gathered (exact)."""
    D = mesh.size
    rounds = [k for k, q in enumerate(sizes) if q]

    def local(frames, sends, local_nn):
        chunks = []
        for k, idx in zip(rounds, sends, strict=True):
            chunk = frames[idx[0]]
            if k:
                chunk = jax.lax.ppermute(chunk, AXIS, perm=_ring(D, k))
            chunks.append(chunk)
        chunks.append(jnp.zeros((1, *frames.shape[1:]), frames.dtype))
        return gather_frames(jnp.concatenate(chunks, axis=0), local_nn)

    spec = P(AXIS)
    return jax.shard_map(
        local, mesh=mesh, in_specs=(spec, tuple(spec for _ in sends), spec), out_specs=spec
    )(frames, tuple(sends), local_nn)


def place_frames(rows: np.ndarray, lo: int, frames: Blocks, mesh: Mesh) -> jax.Array:
    """This process's frames (global rows `lo` onwards) on the mesh in `frames` blocks (one device: one copy, no padding)."""
    if mesh.size == 1:
        return jax.device_put(rows, mesh_devices(mesh)[0])
    return put_local_blocks(rows, lo, frames, mesh)


def group_frames(
    placed: jax.Array,
    nn: np.ndarray,
    *,
    groups: Blocks,
    frames: Blocks,
    mesh: Mesh,
    gain: np.float32 | None = None,
) -> jax.Array | tuple[jax.Array, jax.Array]:
    """The (groups.padded, N, N, C) grouped frames `placed[nn]` on the mesh, channels last, padding rows zero.

    One device: a plain gather (on a CPU device NumPy's, into an aligned buffer the device aliases: the
    same copy, faster there). Several: each device's frames arrive over the ring (`exchange_frames`).
    `gain` (one device only; on a CPU the caller checks `host_scale_is_exact`): also
    `gain · placed[nn]` from the same pass over the frames, returned as `(D, X)`.
    """
    if mesh.size == 1:
        device = mesh_devices(mesh)[0]
        if device.platform == "cpu":
            out = gather_frames_host(np.asarray(placed), nn, groups.padded, gain=gain)
            if gain is None:
                return jax.device_put(out, device)
            return jax.device_put(out[0], device), jax.device_put(out[1], device)
        if gain is None:
            return gather_frames(placed, jnp.asarray(nn))
        return gather_and_scale(placed, jnp.asarray(nn), jnp.asarray(gain, jnp.float32))
    if gain is not None:
        raise PtychoInputError("group_frames: gain: expected None on a mesh of several devices")
    exchange = plan_exchange(nn, groups, frames)
    spec = P(AXIS)
    sends = tuple(put(s, mesh, spec) for s in exchange.sends)
    return exchange_frames(
        placed, sends, put(exchange.local_nn, mesh, spec), mesh=mesh, sizes=exchange.sizes
    )


def global_scan(raw: RawData, mesh: Mesh, where: str) -> tuple[np.ndarray, int, int]:
    """All positions (M, 4) [x, y, x_start, y_start], M, and this process's first position `lo`.

    With every mesh device on this process, `raw` is the whole scan. Otherwise each process holds
    its `process_frame_range` part; the parts' sizes are checked on every process (so all raise
    together) and the positions all-gathered.
    """
    local = np.stack([raw.xcoords, raw.ycoords, raw.xcoords_start, raw.ycoords_start], axis=1)
    if is_local(mesh):
        return local, len(raw), 0
    blocks = process_blocks(mesh)
    if set(blocks) != set(range(jax.process_count())):
        raise PtychoInputError(
            f"{where}: mesh: expected devices of all {jax.process_count()} processes, got processes {sorted(blocks)}"
        )
    counts = np.asarray(
        multihost_utils.process_allgather(np.asarray([len(raw)], np.int64))
    ).reshape(-1)
    M = int(counts.sum())
    frames = balanced_blocks(M, mesh.size)
    order = sorted(blocks, key=lambda p: blocks[p][0])
    expected = {p: int(frames.counts[list(blocks[p])].sum()) for p in order}
    wrong = {p: int(counts[p]) for p in order if counts[p] != expected[p]}
    if wrong:
        raise PtychoInputError(
            f"{where}: raw: each process must hold the positions of process_frame_range({M}, mesh=mesh); "
            f"expected {expected} positions per process, got { {p: int(counts[p]) for p in order} }"
        )
    longest = int(max(counts))
    padded = np.zeros((longest, 4), np.float64)
    padded[: len(raw)] = local
    gathered = np.asarray(multihost_utils.process_allgather(padded))  # (processes, longest, 4)
    positions = np.concatenate([gathered[p, : counts[p]] for p in order])
    lo = int(frames.starts[blocks[jax.process_index()][0]])
    return positions, M, lo
