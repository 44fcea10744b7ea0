"""The chain with its group axis sharded over a device mesh, on one process or several (specs/scaling.md).

Layout. The mesh is 1-D with axis `"groups"` (D devices). Groups are cut into D equal contiguous
blocks of `ceil(B/D)` rows, the padding at the end; scan frames into D balanced contiguous blocks,
each padded to `ceil(M/D)` rows, so every process holds only the frames of its own devices.

Kernels (each one `jax.shard_map` under `jax.jit`, the mesh a static argument):

* `_exchange_frames` — each device assembles the frames its groups need from the devices that hold
  them, in D − 1 `ppermute` rounds around the ring (round k: device o sends to o + k what it needs),
  then gathers its (Bs, N, N, C) block; exact, it only moves data.
* `_energy_stage` — per-frame energies of the grouped diffraction; their float64 total is a `psum`.
  The float32 per-frame sums in TF-CPU order (seed variant) are per frame, so per-shard exact.
* `_layout_stage` — coordinates and object patches per group: per-shard exact.
* `_scale_stage` — `X = gain · D`, the float64 energy total of X (`psum`) and the float32 per-frame
  sums in TF-CPU order that `norm_Y_I` needs.

Order-dependent float32 reductions (the seed gain's NumPy mean, `norm_Y_I`'s Eigen mean) run on the
gathered per-frame sums, B·C scalars, in the single-device order, so they stay bit-equal; float64
totals are `psum`s, within float64 rounding of one device, which the float32 results (gain, scales)
almost never see.
"""

import dataclasses
import functools as ft
import logging
import math
from collections.abc import Callable, Sequence
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from jaxtyping import Array, Float32

from ._container import Container, _no_patches, _split_patches
from ._coords import LOCAL_OFFSET_SIGN, _coordinates_kernel
from ._errors import NormalizationError, PtychoInputError
from ._grouping import GroupedData, _check_positive_int, choose_groups, warn_if_mirrored
from ._intensity import closed_form_intensity_scale, closed_form_intensity_scale_f32
from ._normalize import _host_mean_f32, check_variant
from ._patches import _extract_kernel
from ._pipeline import ChainParams, ChainResult, run_chain
from ._rawdata import RawData
from ._scaler import IntensityScaler
from ._tf_order import frame_sums, mean_all
from ._types import Amplitudes, HostGroups

logger = logging.getLogger(__name__)

AXIS = "groups"
"""Name of the mesh axis the group (and frame) axis is sharded over."""

Progress = Callable[[str], None]


def _no_progress(stage: str) -> None:
    return None


# -- mesh ----------------------------------------------------------------------------------------
def make_mesh(devices: int | Sequence[jax.Device] | None = None) -> Mesh:
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
            raise PtychoInputError("make_mesh: devices: expected at least one device, got an empty sequence")
        bad = [d for d in chosen if not isinstance(d, jax.Device)]
        if bad:
            raise PtychoInputError(f"make_mesh: devices: expected jax.Device entries, got {type(bad[0]).__name__}")
        if len(set(chosen)) != len(chosen):
            raise PtychoInputError(f"make_mesh: devices: expected distinct devices, got {chosen}")
    return Mesh(np.asarray(chosen, dtype=object), (AXIS,))


def _check_mesh(mesh, where: str) -> Mesh:
    if not isinstance(mesh, Mesh):
        raise PtychoInputError(f"{where}: mesh: expected a jax.sharding.Mesh (see make_mesh), got {type(mesh).__name__}")
    if tuple(mesh.axis_names) != (AXIS,):
        raise PtychoInputError(f"{where}: mesh: expected one axis named {AXIS!r}, got axes {tuple(mesh.axis_names)}")
    return mesh


def _mesh_devices(mesh: Mesh) -> list:
    return list(mesh.devices.flat)


def _is_local(mesh: Mesh) -> bool:
    me = jax.process_index()
    return all(d.process_index == me for d in _mesh_devices(mesh))


def _process_blocks(mesh: Mesh) -> dict[int, range]:
    """Mesh positions of each process's devices; each must be one contiguous run."""
    runs: dict[int, list[int]] = {}
    for i, d in enumerate(_mesh_devices(mesh)):
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
class _Blocks:
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
            out[d * self.size : d * self.size + self.counts[d]] = rows[self.starts[d] : self.starts[d] + self.counts[d]]
        return out


def _tail_padded_blocks(total: int, D: int) -> _Blocks:
    """Equal blocks of ceil(total/D) rows, the padding at the end (so slicing [:total] undoes it)."""
    size = max(1, -(-total // D))
    starts = np.minimum(np.arange(D) * size, total)
    counts = np.clip(total - np.arange(D) * size, 0, size)
    return _Blocks(total, starts, counts, size)


def _balanced_blocks(total: int, D: int) -> _Blocks:
    """Blocks of floor/ceil(total/D) rows (every block non-empty when total >= D)."""
    starts = (np.arange(D + 1) * total) // D
    return _Blocks(total, starts[:-1], np.diff(starts), max(1, -(-total // D)))


def process_frame_range(n_positions: int, *, mesh: Mesh) -> tuple[int, int]:
    """The scan positions `[lo, hi)` whose frames this process loads for `run_chain_sharded` on `mesh`.

    Frames are split over the mesh devices in balanced contiguous blocks; a process loads the
    blocks of its own devices (with one process: all of them, `(0, n_positions)`). Each process
    then passes `RawData` holding exactly those positions (coordinates and frames) in order.

    Raises:
        PtychoInputError: no device of this process in the mesh, or its devices not contiguous in it.
    """
    _check_mesh(mesh, "process_frame_range")
    n = _check_positive_int("n_positions", n_positions)
    blocks = _process_blocks(mesh)
    me = jax.process_index()
    if me not in blocks:
        raise PtychoInputError(f"process_frame_range: mesh: no device of process {me} is in the mesh")
    frames = _balanced_blocks(n, mesh.size)
    first, last = blocks[me][0], blocks[me][-1]
    return int(frames.starts[first]), int(frames.starts[last] + frames.counts[last])


@dataclasses.dataclass(frozen=True)
class _Exchange:
    """Ring exchange plan: round k moves frames from device o to device (o + k) mod D."""

    sizes: tuple[int, ...]  # frames per round (max over devices), k = 0..D-1
    sends: tuple[np.ndarray, ...]  # per round with size > 0: (D, size) local slots the sender o reads
    local_nn: np.ndarray  # (D·Bs, C) int32: index into the receiver's buffer; padding -> the zero row

    @property
    def buffer_rows(self) -> int:
        return int(sum(self.sizes)) + 1


def _plan_exchange(nn: np.ndarray, groups: _Blocks, frames: _Blocks) -> _Exchange:
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
    return _Exchange(sizes, tuple(s for s, q in zip(sends, sizes) if q), local_nn)


# -- placing host data on the mesh ---------------------------------------------------------------
def _put(host: np.ndarray, mesh: Mesh, spec: P) -> jax.Array:
    """A global array from host data every process holds in full (multi-process safe)."""
    host = np.asarray(host)
    return jax.make_array_from_callback(host.shape, NamedSharding(mesh, spec), lambda idx: host[idx])


def _put_local_blocks(local_rows: np.ndarray, lo: int, frames: _Blocks, mesh: Mesh) -> jax.Array:
    """A (D·size, ...) global array sharded over the mesh from the rows this process holds (`lo` onwards)."""
    blocks = _process_blocks(mesh)[jax.process_index()]
    parts = []
    for d in blocks:
        part = np.zeros((frames.size, *local_rows.shape[1:]), local_rows.dtype)
        a = frames.starts[d] - lo
        part[: frames.counts[d]] = local_rows[a : a + frames.counts[d]]
        parts.append(part)
    return jax.make_array_from_process_local_data(
        NamedSharding(mesh, P(AXIS)), np.concatenate(parts), (frames.padded, *local_rows.shape[1:])
    )


def _to_host(a: jax.Array) -> np.ndarray:
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


def _unpad(a, n: int, mesh: Mesh):
    if a is None or a.shape[0] == n:
        return a
    return _leading_rows(a, n=n, mesh=mesh)


# -- kernels -------------------------------------------------------------------------------------
def _ring(D: int, k: int) -> list[tuple[int, int]]:
    return [(o, (o + k) % D) for o in range(D)]


@ft.partial(jax.jit, static_argnames=("mesh", "sizes"))
def _exchange_frames(frames, sends, local_nn, *, mesh: Mesh, sizes: tuple[int, ...]):
    """(Bs, N, N, C) per device: its groups' frames, fetched over the ring and gathered (exact)."""
    D = mesh.size
    rounds = [k for k, q in enumerate(sizes) if q]

    def local(frames, sends, local_nn):
        chunks = []
        for k, idx in zip(rounds, sends):
            chunk = frames[idx[0]]
            if k:
                chunk = jax.lax.ppermute(chunk, AXIS, perm=_ring(D, k))
            chunks.append(chunk)
        chunks.append(jnp.zeros((1, *frames.shape[1:]), frames.dtype))
        buffer = jnp.concatenate(chunks, axis=0)
        return jnp.moveaxis(buffer[local_nn], 1, -1)

    spec = P(AXIS)
    return jax.shard_map(local, mesh=mesh, in_specs=(spec, tuple(spec for _ in sends), spec), out_specs=spec)(
        frames, tuple(sends), local_nn
    )


@ft.partial(jax.jit, static_argnames=("mesh",))
def _frame_energy_total(frames, valid, *, mesh: Mesh):
    """Σ over valid frames of Σ_hw frame² in float64 (a `psum`); needs x64."""

    def local(frames, valid):
        x64 = frames.astype(jnp.float64)
        e = jnp.sum(x64 * x64, axis=tuple(range(1, frames.ndim)))
        return jax.lax.psum(jnp.sum(jnp.where(valid, e, 0.0)), AXIS)

    return jax.shard_map(local, mesh=mesh, in_specs=(P(AXIS), P(AXIS)), out_specs=P())(frames, valid)


@ft.partial(jax.jit, static_argnames=("mesh", "total_groups", "tf_order"))
def _energy_stage(D, valid, first, *, mesh: Mesh, total_groups: int, tf_order: bool):
    """Pass 1: float64 total of per-frame energies (psum) and, for the seed variant, float32 TF-order sums."""

    def local(D, valid, first):
        x64 = D.astype(jnp.float64)
        e = jnp.sum(x64 * x64, axis=(1, 2))
        total = jax.lax.psum(jnp.sum(jnp.where(valid[:, None], e, 0.0)), AXIS)
        if not tf_order:
            return (total,)
        offset = first + jax.lax.axis_index(AXIS).astype(first.dtype) * D.shape[0]
        return total, frame_sums(D * D, offset, total_groups)

    out_specs = (P(), P(AXIS)) if tf_order else (P(),)
    # check_vma=False: the TF-order scans start from unvarying zeros (their carries become varying).
    return jax.shard_map(local, mesh=mesh, in_specs=(P(AXIS), P(AXIS), P()), out_specs=out_specs, check_vma=False)(
        D, valid, first
    )


@ft.partial(jax.jit, static_argnames=("count", "N"))
def _main_gain(total, *, count: int, N: int):
    # As `_gain_main`: the mean per-frame energy in float64, then a float32 gain; needs x64.
    energy = total / count
    return jnp.sqrt((N / 2) ** 2 / energy).astype(jnp.float32)


@ft.partial(jax.jit, static_argnames=("mesh", "sign", "patches", "N"))
def _layout_stage(nn, x, y, xs, ys, obj=None, *, mesh: Mesh, sign: float, patches: str | None, N: int):
    """Coordinates (both position sets) and, with `patches`, object patches, per group; needs x64."""

    def local(nn, x, y, xs, ys, *obj):
        coords = _coordinates_kernel(x, y, nn, sign=sign)
        start = _coordinates_kernel(xs, ys, nn, sign=sign)
        if patches is None:
            return (*coords, *start)
        members, offsets, relative = coords
        xy = (offsets + relative) if patches == "upstream" else members  # float64, then one cast
        b, c = nn.shape
        centres = jnp.transpose(xy.astype(jnp.float32)[:, 0], (0, 2, 1)).reshape(b * c, 2)
        Y = _extract_kernel(obj[0], centres, N=N, fma=True)
        return (*coords, *start, jnp.transpose(Y.reshape(b, c, N, N), (0, 2, 3, 1)))

    spec = P(AXIS)
    args = (nn, x, y, xs, ys) + (() if patches is None else (obj,))
    in_specs = (spec, P(), P(), P(), P()) + (() if patches is None else (P(),))
    out_specs = (spec,) * (6 if patches is None else 7)
    return jax.shard_map(local, mesh=mesh, in_specs=in_specs, out_specs=out_specs)(*args)


@ft.partial(jax.jit, static_argnames=("mesh", "total_groups"))
def _scale_stage(D, gain, valid, first, *, mesh: Mesh, total_groups: int):
    """Pass 2: `X = gain · D`, float64 total of Σ_hwc X² (psum), float32 TF-order per-frame sums of X²; needs x64."""

    def local(D, gain, valid, first):
        X = gain * D
        x64 = X.astype(jnp.float64)
        e = jnp.sum(x64 * x64, axis=(1, 2, 3))
        total = jax.lax.psum(jnp.sum(jnp.where(valid, e, 0.0)), AXIS)
        offset = first + jax.lax.axis_index(AXIS).astype(first.dtype) * D.shape[0]
        return X, total, frame_sums(X * X, offset, total_groups)

    spec = P(AXIS)
    return jax.shard_map(
        local, mesh=mesh, in_specs=(spec, P(), spec, P()), out_specs=(spec, P(), spec), check_vma=False
    )(D, gain, valid, first)


@jax.jit
def _norm_from_frame_sums(e: Float32[Array, "B C"], nphotons: Float32[Array, ""]) -> Float32[Array, ""]:
    # As `_scale_nphotons_kernel`, from the per-frame sums: sqrt(nphotons / Eigen-order mean), float32.
    return jnp.sqrt(nphotons / mean_all(e))


# -- host helpers shared with streaming ----------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class _Plan:
    """Validated chain settings and the chosen groups."""

    N: int
    C: int
    nn: HostGroups
    variant: str
    patch_positions: str

    @property
    def B(self) -> int:
        return int(self.nn.shape[0])


def _choose_groups(positions: np.ndarray, frame_size: int, **group_args) -> _Plan:
    """The checks of `group` and the host group selection (same groups as `group` for the same arguments)."""
    N, nn = choose_groups(positions, frame_size=frame_size, **group_args)
    return _Plan(N=N, C=nn.shape[1], nn=nn, variant=group_args["variant"], patch_positions=group_args["patch_positions"])


def _patch_mode(raw_has_Y: bool, has_object: bool, C: int, patch_positions: str, stacklevel: int) -> str | None:
    """None (no patches or patches from raw.Y) or where to cut object patches; warns as `group` does."""
    if raw_has_Y or not has_object:
        return None
    warn_if_mirrored(C, patch_positions, stacklevel=stacklevel + 1)
    return patch_positions


def _checked_gain(gain: jax.Array, where: str) -> jax.Array:
    g = float(_to_host(gain))
    if not np.isfinite(g) or g <= 0:
        raise NormalizationError(
            f"{where}: expected a finite positive gain, got {g} from zero total energy (all frames are 0)"
        )
    return gain


def _seed_gain(frame_sums: np.ndarray, N: int) -> np.float32:
    """[SEED] gain from the (B, C) float32 TF-order frame sums: NumPy float32 mean, as `normalize_data`."""
    mean = _host_mean_f32(frame_sums)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.float32(np.sqrt(np.float32((N / 2) ** 2) / mean))


@dataclasses.dataclass(frozen=True)
class _Totals:
    """Float64 energy totals and the float32 per-frame sums of X²: everything the scales need."""

    N: int
    B: int
    C: int
    M: int
    raw: float  # Σ_m Σ_hw diff3d[m]²
    diffraction: float  # Σ_b Σ_hwc D²
    X: float  # Σ_b Σ_hwc X²
    X_frame_sums: np.ndarray  # (B, C) float32, TF-CPU order


def _positive_mean(total: float, count: int, what: str) -> float:
    e = total / count
    if not math.isfinite(e):
        raise NormalizationError(f"{what}: expected finite values, got mean frame energy {e}")
    if e <= 0:
        raise NormalizationError(f"{what}: expected a positive mean frame energy, got {e} (all frames are 0)")
    return e


def _scales(t: _Totals, *, nphotons: float, variant: str) -> tuple[dict[str, float], float, np.float32]:
    """`all_intensity_scales`, the training scale and `norm_Y_I` from the totals (pipeline.md §8)."""
    raw_e = _positive_mean(t.raw, t.M, "amplitudes")
    grouped_e = _positive_mean(t.diffraction, t.B, "amplitudes")
    x_e = t.X / t.B
    fallback = closed_form_intensity_scale(t.N, nphotons)
    seed_scale = math.sqrt(nphotons / x_e) if x_e > 1e-12 else fallback
    norm = np.float32(_norm_from_frame_sums(jnp.asarray(t.X_frame_sums), jnp.asarray(np.float32(nphotons))))
    if not (np.isfinite(norm) and norm > 0):
        raise NormalizationError(f"X: expected amplitudes with positive finite energy, got norm_Y_I = {float(norm)}")
    scales = {
        "fallback_scale_closed_form": fallback,
        "main_head_train_pinn_calculate_intensity_scale": closed_form_intensity_scale_f32(t.N, nphotons),
        "seed_era_dataset_derived_scale_normalized_X": seed_scale,
        "raw_E_batch_sum_psi2": raw_e,
        "raw_dataset_scale": math.sqrt(nphotons / raw_e),
        "grouped_E_batch_sum_psi2_over_HWC": grouped_e,
        "grouped_dataset_scale_over_HWC": math.sqrt(nphotons / grouped_e),
        "container_norm_Y_I_diffsim_scale_nphotons": float(norm),
        "normalized_X_mean_sum_sq_over_HWC": x_e,
    }
    training = scales["main_head_train_pinn_calculate_intensity_scale"] if variant == "main" else seed_scale
    return scales, training, norm


def _assemble(
    params: ChainParams,
    grouped: GroupedData,
    *,
    probe: np.ndarray,
    Y_I,
    Y_phi,
    coords32,
    totals: _Totals,
) -> ChainResult:
    scales, training, norm = _scales(totals, nphotons=params.nphotons, variant=params.variant)
    container = Container(
        X=grouped.X_full,
        Y_I=Y_I,
        Y_phi=Y_phi,
        coords_nominal=coords32,
        coords_true=coords32,
        probe=jnp.asarray(probe),
        norm_Y_I=jnp.asarray(norm),
        nn_indices=grouped.nn_indices,
        global_offsets=grouped.coords_offsets,
        local_offsets=grouped.coords_relative,
    )
    scaler = IntensityScaler.from_scale(training, trainable=params.trainable)
    return ChainResult(
        params=params, grouped=grouped, container=container, intensity_scales=scales, training_scale=training, scaler=scaler
    )


def _check_probe(probe: np.ndarray, N: int, where: str) -> np.ndarray:
    p = np.asarray(probe)
    if p.shape != (N, N) or p.dtype != np.complex64:
        raise PtychoInputError(f"{where}: probe must be ({N}, {N}) complex64, got shape {p.shape} dtype {p.dtype}")
    return p


# -- the sharded chain ---------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, eq=False)
class _OnMesh:
    """Padded, sharded state after grouping and normalisation (rows beyond B are padding)."""

    mesh: Mesh
    plan: _Plan
    groups: _Blocks
    valid: jax.Array
    diffraction: jax.Array
    X_full: jax.Array
    gain: jax.Array
    Y: jax.Array | None
    coords: tuple[np.ndarray, ...]
    M: int
    total_raw: float
    total_D: float
    total_X: float
    X_frame_sums: np.ndarray


def _global_scan(raw: RawData, mesh: Mesh, where: str) -> tuple[np.ndarray, int, int]:
    """All positions (M, 4) [x, y, x_start, y_start], M, and this process's first position `lo`.

    With every mesh device on this process, `raw` is the whole scan. Otherwise each process holds
    its `process_frame_range` part; the parts' sizes are checked on every process (so all raise
    together) and the positions all-gathered.
    """
    local = np.stack([raw.xcoords, raw.ycoords, raw.xcoords_start, raw.ycoords_start], axis=1)
    if _is_local(mesh):
        return local, len(raw), 0
    blocks = _process_blocks(mesh)
    if set(blocks) != set(range(jax.process_count())):
        raise PtychoInputError(
            f"{where}: mesh: expected devices of all {jax.process_count()} processes, got processes {sorted(blocks)}"
        )
    counts = np.asarray(multihost_utils.process_allgather(np.asarray([len(raw)], np.int64))).reshape(-1)
    M = int(counts.sum())
    frames = _balanced_blocks(M, mesh.size)
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


def _shard_chain(
    raw: RawData,
    *,
    mesh: Mesh,
    container: bool,
    progress: Progress,
    where: str,
    **group_args,
) -> _OnMesh:
    mesh = _check_mesh(mesh, where)
    with jax.enable_x64(True):  # float64 positions must not be truncated by the gathers
        positions, M, lo = _global_scan(raw, mesh, where)
    progress("grouping")
    plan = _choose_groups(positions[:, :2], raw.N, where=where, **group_args)
    nn = plan.nn
    if not _is_local(mesh):  # one source of truth for the groups (a seedless draw differs per process)
        with jax.enable_x64(True):
            nn = np.asarray(multihost_utils.broadcast_one_to_all(nn)).astype(plan.nn.dtype)
        plan = dataclasses.replace(plan, nn=nn)
    D = mesh.size
    B, C = plan.B, plan.C
    groups = _tail_padded_blocks(B, D)
    frames = _balanced_blocks(M, D)
    exchange = _plan_exchange(nn, groups, frames)
    patches = _patch_mode(raw.Y is not None, raw.objectGuess is not None, C, plan.patch_positions, stacklevel=4)
    logger.info(
        "%s: %d groups of %d on %d devices (%d per device, %d padding), %d frames in blocks of %d, "
        "exchange rounds %s (%d buffer rows per device)",
        where, B, C, D, groups.size, groups.padded - B, M, frames.size, exchange.sizes, exchange.buffer_rows,
    )
    spec = P(AXIS)
    with jax.enable_x64(True):
        frames_dev = _put_local_blocks(raw.diff3d, lo, frames, mesh)
        sends = tuple(_put(s, mesh, spec) for s in exchange.sends)
        local_nn = _put(exchange.local_nn, mesh, spec)
        valid = _put(groups.valid(), mesh, spec)
        first = _put(np.asarray(0, np.int32), mesh, P())
        diffraction = _exchange_frames(frames_dev, sends, local_nn, mesh=mesh, sizes=exchange.sizes)
        Y = None
        if raw.Y is not None:
            y_dev = _put_local_blocks(raw.Y[..., 0], lo, frames, mesh)
            Y = _exchange_frames(y_dev, sends, local_nn, mesh=mesh, sizes=exchange.sizes)
        total_raw = float(_to_host(_frame_energy_total(frames_dev, _put(frames.valid(), mesh, spec), mesh=mesh)))

        energy = _energy_stage(diffraction, valid, first, mesh=mesh, total_groups=B, tf_order=plan.variant == "seed")
        total_D = float(_to_host(energy[0]))
        if plan.variant == "main":
            gain = _main_gain(energy[0], count=B * C, N=plan.N)
        else:
            gain = _put(_seed_gain(_to_host(energy[1])[:B], plan.N), mesh, P())
        gain = _checked_gain(gain, where)
        X_full, total_X, x_sums = _scale_stage(diffraction, gain, valid, first, mesh=mesh, total_groups=B)

        nn_padded = groups.scatter(nn.astype(np.int32))
        xyz = [_put(positions[:, i].copy(), mesh, P()) for i in range(4)]
        obj = None if patches is None else _put(raw.objectGuess, mesh, P())
        layout = _layout_stage(
            _put(nn_padded, mesh, spec), *xyz, obj, mesh=mesh, sign=LOCAL_OFFSET_SIGN[plan.variant], patches=patches, N=plan.N
        )
        if patches is not None:
            Y = layout[6]
        coords = tuple(_to_host(a)[:B] for a in layout[:6])
        total_X_host = float(_to_host(total_X)) if container else float("nan")
        x_sums_host = _to_host(x_sums)[:B] if container else np.zeros((0, C), np.float32)
    return _OnMesh(
        mesh=mesh,
        plan=plan,
        groups=groups,
        valid=valid,
        diffraction=diffraction,
        X_full=X_full,
        gain=gain,
        Y=Y,
        coords=coords,
        M=M,
        total_raw=total_raw,
        total_D=total_D,
        total_X=total_X_host,
        X_frame_sums=x_sums_host,
    )


def _grouped(state: _OnMesh, objectGuess) -> GroupedData:
    B, mesh = state.plan.B, state.mesh
    c = state.coords
    return GroupedData(
        diffraction=_unpad(state.diffraction, B, mesh),
        X_full=_unpad(state.X_full, B, mesh),
        normalize_gain=state.gain,
        coords_nn=c[0],
        coords_offsets=c[1],
        coords_relative=c[2],
        coords_start_nn=c[3],
        coords_start_offsets=c[4],
        coords_start_relative=c[5],
        nn_indices=state.plan.nn,
        Y=_unpad(state.Y, B, state.mesh),
        objectGuess=objectGuess,
    )


def group_sharded(
    raw: RawData,
    *,
    mesh: Mesh,
    N: int,
    gridsize: int,
    K: int = 4,
    nsamples: int,
    seed: int | None = None,
    sequential: bool = False,
    oversample: bool = False,
    neighbor_pool_size: int | None = None,
    nn_indices: HostGroups | None = None,
    variant: Literal["main", "seed"] = "main",
    engine: Literal["scipy", "jax"] = "scipy",
    key: jax.Array | None = None,
    patch_positions: Literal["upstream", "member"] = "upstream",
    progress: Progress | None = None,
) -> GroupedData:
    """`group` with the group axis sharded over `mesh`: same fields and numbers as `ptycho_jax.group`.

    Selection is host work on every process (the same groups as `group` for the same arguments).
    Gathers (a ring exchange of frames between devices), coordinates and patches run per shard and
    are bit-equal to one device; the normalisation mean is a cross-device float64 reduction (main)
    or the single-device float32 order on the gathered per-frame sums (seed), so `X_full` and
    `normalize_gain` are within 1 float32 ulp (bit-equal in practice).

    When several processes share the mesh, `raw` on each holds only the positions and frames of
    `process_frame_range(M, mesh=mesh)`; every process must call with the same arguments.

    Args:
        raw: the scan (this process's part of it when the mesh spans processes).
        mesh: a 1-D mesh with axis "groups" (`make_mesh`).
        N, gridsize, K, nsamples, seed, sequential, oversample, neighbor_pool_size, nn_indices,
            variant, engine, key, patch_positions: as `ptycho_jax.group`.
        progress: called with each stage name as it starts.

    Returns:
        GroupedData: device arrays sharded over the mesh along B when the mesh size divides B
        (otherwise replicated: JAX has no uneven shardings), host coordinates and `nn_indices`.

    Raises:
        GroupingError, NormalizationError, PtychoInputError: as `group`, plus mesh/part mismatches.
    """
    state = _shard_chain(
        raw,
        mesh=mesh,
        N=N,
        gridsize=gridsize,
        K=K,
        nsamples=nsamples,
        seed=seed,
        sequential=sequential,
        oversample=oversample,
        neighbor_pool_size=neighbor_pool_size,
        nn_indices=nn_indices,
        variant=variant,
        engine=engine,
        key=key,
        patch_positions=patch_positions,
        container=False,
        progress=progress or _no_progress,
        where="group_sharded",
    )
    return _grouped(state, raw.objectGuess)


def run_chain_sharded(
    raw: RawData,
    params: ChainParams = ChainParams(),
    *,
    mesh: Mesh,
    nn_indices: HostGroups | None = None,
    progress: Progress | None = None,
) -> ChainResult:
    """`run_chain` with the group axis sharded over `mesh` (one process or several).

    Same stages and fields as `run_chain`; the dataset intensity scales are cross-device float64
    reductions and `norm_Y_I` keeps the single-device float32 order (see `group_sharded` for the
    layout, the multi-process contract and what is bit-equal).

    Args:
        raw: the scan (this process's `process_frame_range` part when the mesh spans processes).
        params: chain parameters.
        mesh: a 1-D mesh with axis "groups" (`make_mesh`).
        nn_indices: inject (B, C) groups, skipping selection.
        progress: called with each stage name as it starts.
    """
    tick = progress or _no_progress
    state = _shard_chain(
        raw,
        mesh=mesh,
        nn_indices=nn_indices,
        key=None,
        container=True,
        progress=tick,
        where="run_chain_sharded",
        **params.group_kwargs(raw),
    )
    grouped = _grouped(state, raw.objectGuess)
    tick("container")
    probe = _check_probe(raw.probeGuess, state.plan.N, "run_chain_sharded")
    if state.Y is None:
        Y_I, Y_phi = _no_patches(state.X_full)
    else:
        Y_I, Y_phi = _split_patches(state.Y)
    B = state.plan.B
    coords32 = state.coords[5].astype(np.float32)
    coords32 = _put(coords32, state.mesh, P(AXIS) if B % state.mesh.size == 0 else P())
    tick("intensity_scale")
    totals = _Totals(
        N=state.plan.N,
        B=B,
        C=state.plan.C,
        M=state.M,
        raw=state.total_raw,
        diffraction=state.total_D,
        X=state.total_X,
        X_frame_sums=state.X_frame_sums,
    )
    result = _assemble(
        params,
        grouped,
        probe=probe,
        Y_I=_unpad(Y_I, B, state.mesh),
        Y_phi=_unpad(Y_phi, B, state.mesh),
        coords32=coords32,
        totals=totals,
    )
    tick("scaler")
    logger.info(
        "chain (sharded over %d devices): %d groups of %d, gain %.6g, training scale %.9g",
        state.mesh.size, B, state.plan.C, float(_to_host(state.gain)), result.training_scale,
    )
    return result


def normalize_data_sharded(
    diffraction: Amplitudes | np.ndarray, N: int, *, mesh: Mesh, variant: Literal["main", "seed"] = "main"
) -> tuple[Amplitudes, Float32[Array, ""]]:
    """`normalize_data` with the group axis sharded over `mesh`: `(gain · D, gain)`, within 1 ulp of one device.

    Main: per-shard float64 energies, one cross-device float64 sum. Seed: float32 per-frame sums in
    TF-CPU order per shard, then NumPy's float32 mean over all of them (single-device order).
    B need not divide by the mesh size (padded and masked; the result is then replicated).

    Args:
        diffraction: (B, N, N, C) float32 amplitudes, host or device (every process holds all of it).
        N: frame size.
        mesh: a 1-D mesh with axis "groups".
        variant: "main" or "seed", as `normalize_data`.

    Raises:
        NormalizationError: as `normalize_data`.
    """
    _check_mesh(mesh, "normalize_data_sharded")
    check_variant(variant)
    if not (isinstance(N, (int, np.integer)) and N > 0):
        raise NormalizationError(f"normalize_data_sharded: N must be a positive int, got {N!r}")
    shape, dtype = np.shape(diffraction), getattr(diffraction, "dtype", None)
    if len(shape) != 4 or shape[1] != shape[2] or shape[0] < 1:
        raise NormalizationError(f"normalize_data_sharded: diffraction must be (B, N, N, C), got shape {shape}")
    if shape[1] != N:
        raise NormalizationError(f"normalize_data_sharded: N={N} does not match the frame size {shape[1]} of diffraction {shape}")
    if dtype != np.float32:
        raise NormalizationError(f"normalize_data_sharded: diffraction must be float32 amplitudes, got {dtype}")
    B, C = shape[0], shape[3]
    groups = _tail_padded_blocks(B, mesh.size)
    host = _to_host(diffraction) if isinstance(diffraction, jax.Array) else np.asarray(diffraction)
    if not np.isfinite(host).all():
        raise NormalizationError(
            f"normalize_data_sharded: expected a finite positive gain, got nan from non-finite (NaN/Inf) amplitudes in diffraction {shape}"
        )
    spec = P(AXIS)
    with jax.enable_x64(True):
        D = _put(groups.scatter(host), mesh, spec)
        valid = _put(groups.valid(), mesh, spec)
        first = _put(np.asarray(0, np.int32), mesh, P())
        energy = _energy_stage(D, valid, first, mesh=mesh, total_groups=B, tf_order=variant == "seed")
        if variant == "main":
            gain = _main_gain(energy[0], count=B * C, N=int(N))
        else:
            gain = _put(_seed_gain(_to_host(energy[1])[:B], int(N)), mesh, P())
        gain = _checked_gain(gain, "normalize_data_sharded")
        X = _scale_stage(D, gain, valid, first, mesh=mesh, total_groups=B)[0]
    return _unpad(X, B, mesh), gain


def run_chain_scaled(
    raw: RawData,
    params: ChainParams = ChainParams(),
    *,
    devices: int | Sequence[jax.Device] | None = None,
    chunk_groups: int | None = None,
    progress: Progress | None = None,
) -> ChainResult:
    """The chain on one device, sharded over `devices`, or streamed in chunks of `chunk_groups` groups.

    Neither given: `run_chain`. `devices` only: `run_chain_sharded` on `make_mesh(devices)`.
    `chunk_groups` given: `run_chain_streamed`, each chunk sharded over `devices` when given.
    This is what the CLI's `--devices N` and `--chunk-groups M` select.
    """
    if chunk_groups is not None:
        from ._streaming import run_chain_streamed

        mesh = None if devices is None else make_mesh(devices)
        return run_chain_streamed(raw, params, chunk_groups=chunk_groups, mesh=mesh, progress=progress)
    if devices is None:
        return run_chain(raw, params, progress=progress)
    return run_chain_sharded(raw, params, mesh=make_mesh(devices), progress=progress)
