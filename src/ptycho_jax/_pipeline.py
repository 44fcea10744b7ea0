"""The chain — RawData → groups → normalize_data → container → intensity scales → scaler — on one device,
a device mesh (one process or several) or streamed in chunks of groups (pipeline.md, scaling.md).

There is one chain. One device is a mesh of one; streaming is the same two passes over several
chunks instead of one:

1. energy pass — per chunk of groups, `energy_on_mesh` (float64 total, TF-order per-frame sums for
   the seed variant); the chunks' partial sums become the gain by the one rule `gain_of`;
2. scale pass — per chunk, `scale_on_mesh` (`X = gain · D` and the energies of X) and
   `_layout_on_mesh` (coordinates and object patches, per group).

Every chunk has the same padded size (one compilation) with the padding masked out of every
reduction. Order-dependent float32 reductions (the seed gain's NumPy mean, `norm_Y_I`'s Eigen mean)
run on the gathered per-frame sums, B·C scalars, in the one-device order, so they are bit-equal;
float64 totals are sums of partial sums, within float64 rounding of one block, which the float32
results almost never see. The intensity scales come from the totals (`intensity_scales`).
"""

import dataclasses
import functools as ft
import logging
from collections.abc import Callable
from typing import Any, SupportsInt

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P
from jax.typing import ArrayLike

from ._container import Container, assemble_container, check_probe, no_patches, split_patches
from ._coords import coordinates_kernel
from ._errors import NormalizationError, PtychoInputError
from ._grouping import GroupedData, gather_frames_host, select_groups, warn_if_mirrored
from ._intensity import NORM_Y_I_KEY, EnergyTotals, intensity_scales
from ._mesh import (
    AXIS,
    balanced_blocks,
    check_mesh,
    global_scan,
    group_frames,
    is_local,
    make_mesh,
    mesh_devices,
    place_frames,
    put,
    tail_padded_blocks,
    to_host,
    unpad,
)
from ._normalize import (
    energy_on_mesh,
    gain_of,
    host_scale_is_exact,
    scale_on_host,
    scale_on_mesh,
)
from ._params import ChainParams
from ._patches import patch_centres, patch_kernel
from ._rawdata import RawData
from ._scaler import IntensityScaler
from ._validate import check_group_patches

logger = logging.getLogger(__name__)

Progress = Callable[[str], None]
MeshArg = Any
"""A `jax.sharding.Mesh` with one axis "groups" (`make_mesh`) or None; checked by `check_mesh`, whose
error names the field, so the annotation admits anything."""
ChunkArg = SupportsInt | None
"""An int >= 1 or None; checked by `_check_chunk_groups`."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class ChainResult:
    """Every stage output of one chain run."""

    params: ChainParams
    grouped: GroupedData
    container: Container
    intensity_scales: dict[str, float]
    training_scale: float
    scaler: IntensityScaler


@ft.partial(jax.jit, static_argnames=("mesh", "sign", "patches", "N"))
def _layout_on_mesh(
    nn, x, y, xs, ys, obj=None, *, mesh: Mesh, sign: float, patches: str | None, N: int
):
    """Coordinates (both position sets) and, with `patches`, object patches, per group; needs x64."""

    def local(nn, x, y, xs, ys, *obj):
        coords = coordinates_kernel(x, y, nn, sign=sign)
        start = coordinates_kernel(xs, ys, nn, sign=sign)
        if patches is None:
            return (*coords, *start)
        b, c = nn.shape
        Y = patch_kernel(obj[0], patch_centres(*coords, positions=patches), N=N, fma=True, C=c)
        return (*coords, *start, Y)

    args = (nn, x, y, xs, ys) + (() if patches is None else (obj,))
    spec = P(AXIS)
    in_specs = (spec, P(), P(), P(), P()) + (() if patches is None else (P(),))
    out_specs = (spec,) * (6 if patches is None else 7)
    return jax.shard_map(local, mesh=mesh, in_specs=in_specs, out_specs=out_specs)(*args)


def _host_device() -> jax.Device:
    """Where streamed outputs are kept: the host CPU device (the accelerator is what ran out of memory)."""
    try:
        return jax.devices("cpu")[0]
    except RuntimeError:  # pragma: no cover - a JAX without a CPU backend
        return jax.devices()[0]


def _check_chunk_groups(chunk_groups, mesh: Mesh, where: str) -> None:
    if chunk_groups is None:
        return
    if (
        isinstance(chunk_groups, bool)
        or not isinstance(chunk_groups, (int, np.integer))
        or chunk_groups < 1
    ):
        raise PtychoInputError(f"{where}: chunk_groups: expected an int >= 1, got {chunk_groups!r}")
    if not is_local(mesh):
        raise PtychoInputError(
            f"{where}: mesh: expected devices of this process only when streaming (chunk_groups), got a mesh over "
            "several processes"
        )


class _Frames:
    """Where a chunk's grouped frames come from: per-frame rows (`diff3d`, or `Y` patches) placed on the
    mesh once and gathered there (resident, one chunk), or gathered on the host per chunk (streamed)."""

    def __init__(
        self, rows: np.ndarray, *, lo: int, M: int, mesh: Mesh, layout, streamed: bool, placed=None
    ):
        self.rows, self.mesh, self.layout, self.streamed = rows, mesh, layout, streamed
        self.frames = balanced_blocks(M, mesh.size)
        if streamed:
            placed = None
        elif placed is None:
            placed = place_frames(rows, lo, self.frames, mesh)
        self.placed = placed
        self._cache = None

    def grouped(self, nn: np.ndarray) -> jax.Array:
        """The (layout.padded, N, N, C) rows of groups `nn` on the mesh, channels last, padding rows zero."""
        if not self.streamed:  # one chunk: gathered once, reused by both passes
            if self._cache is None:
                self._cache = group_frames(
                    self.placed, nn, groups=self.layout, frames=self.frames, mesh=self.mesh
                )
            return self._cache
        return put(gather_frames_host(self.rows, nn, self.layout.padded), self.mesh, P(AXIS))

    def grouped_and_scaled(self, nn: np.ndarray, gain: np.float32) -> tuple[jax.Array, jax.Array]:
        """`grouped(nn)` and `gain · grouped(nn)` from one pass over the frames (one device, resident)."""
        return group_frames(
            self.placed, nn, groups=self.layout, frames=self.frames, mesh=self.mesh, gain=gain
        )

    def energy_total(self) -> float:
        """Σ over all frames of Σ_hw frame² in float64 (the raw-frame dataset scale)."""
        if not self.streamed:
            valid = put(
                self.frames.valid() if self.mesh.size > 1 else np.ones(len(self.rows), bool),
                self.mesh,
                P(AXIS),
            )
            first = put(np.asarray(0, np.int32), self.mesh, P())
            return float(
                to_host(
                    energy_on_mesh(
                        self.placed, valid, first, mesh=self.mesh, total_groups=1, tf_order=False
                    )[0]
                )
            )
        step = self.layout.padded
        total = 0.0
        for lo in range(0, len(self.rows), step):
            n = min(step, len(self.rows) - lo)
            block = np.zeros((step, *self.rows.shape[1:]), self.rows.dtype)
            block[:n] = self.rows[lo : lo + n]
            valid, first = (
                put(np.arange(step) < n, self.mesh, P(AXIS)),
                put(np.asarray(0, np.int32), self.mesh, P()),
            )
            total += float(
                energy_on_mesh(
                    put(block, self.mesh, P(AXIS)),
                    valid,
                    first,
                    mesh=self.mesh,
                    total_groups=1,
                    tf_order=False,
                )[0]
            )
        return total


def _resident_frames(raw: RawData, mesh: Mesh, lo: int) -> jax.Array | None:
    """`raw.device_frames` (`RawData.on_device`) when they lie on the mesh's one device, else None."""
    placed = raw.device_frames
    if placed is None or mesh.size != 1 or lo != 0:
        return None
    if placed.sharding.device_set != {mesh_devices(mesh)[0]} or placed.shape != raw.diff3d.shape:
        return None
    return placed


@dataclasses.dataclass(frozen=True, kw_only=True)
class _ChainPlan:
    """What every pass of one chain call shares: the scan on the mesh, the groups and the chunking."""

    mesh: Mesh
    positions: np.ndarray  # (M, 4) float64 x, y, x_start, y_start of the whole scan
    M: int
    lo: int  # first frame of this process's part
    nn: np.ndarray  # (n_groups, C) the groups
    N: int
    chunk_rows: int  # groups per chunk (all of them unless streamed)
    n_chunks: int
    layout: Any  # one chunk's rows over the mesh (`tail_padded_blocks`), every chunk alike
    streamed: bool
    patches: str | None  # patch positions when the object's patches are cut here, else None

    @property
    def n_groups(self) -> int:
        return self.nn.shape[0]

    @property
    def C(self) -> int:
        return self.nn.shape[1]

    @property
    def rows(self) -> int:
        """The padded rows of every chunk over the mesh."""
        return self.layout.padded

    def chunk(self, i: int):
        """Chunk `i`: its group range [a, b), its padded int32 groups, its valid-row mask and start."""
        a, b = i * self.chunk_rows, min((i + 1) * self.chunk_rows, self.n_groups)
        nn_chunk = np.zeros((self.rows, self.C), np.int32)
        nn_chunk[: b - a] = self.nn[a:b]
        valid = put(np.arange(self.rows) < b - a, self.mesh, P(AXIS))
        first = put(np.asarray(a, np.int32), self.mesh, P())
        return a, b, nn_chunk, valid, first


def _check_variant_input(raw: RawData, params: ChainParams, where: str) -> None:
    if not isinstance(params, ChainParams):
        raise PtychoInputError(
            f"{where}: params: expected a ChainParams, got {type(params).__name__}"
        )
    numerics = params.numerics
    if numerics.float32_frames_only and raw.diff3d_source_dtype != "float32":
        raise NormalizationError(
            f"{where}: variant {numerics.name!r} squares the frames in the dtype they arrive in "
            f"(upstream's loader.normalize_data), expected diff3d given as float32, got "
            f"{raw.diff3d_source_dtype} (uint16 squares wrap, float64 sums in float64): use "
            f"variant 'main', or build RawData from diff3d.astype(np.float32)"
        )


def _plan_chain(raw, params, *, mesh, nn_indices, key, chunk_groups, container, where, tick):
    """The groups (one source of truth on every process), their checks, the probe when the
    container is made (checked in that order), and the chunking: (plan, probe)."""
    mesh = make_mesh(1) if mesh is None else check_mesh(mesh, where)
    _check_chunk_groups(chunk_groups, mesh, where)
    with jax.enable_x64(True):  # float64 positions must not be truncated by the gathers
        positions, M, lo = global_scan(raw, mesh, where)
    tick("grouping")
    N = params.frame_size(raw.N)
    nn = select_groups(positions[:, :2], params, nn_indices=nn_indices, key=key)
    if not is_local(mesh):  # a seedless draw differs per process: process 0's groups for all
        with jax.enable_x64(True):
            nn = np.asarray(multihost_utils.broadcast_one_to_all(nn)).astype(nn.dtype)
    n_groups, C = nn.shape
    probe = check_probe(raw.probeGuess, N, where) if container else None
    patches = None
    if raw.Y is None and raw.objectGuess is not None:
        patches = params.patch_positions
        warn_if_mirrored(C, patches, stacklevel=4)
    check_group_patches(
        raw,
        nn,
        N=N,
        variant=params.variant,
        patch_positions=params.patch_positions,
        where=where,
        positions=positions,
        stacklevel=4,
    )
    streamed = chunk_groups is not None
    cg = n_groups if not streamed else min(int(chunk_groups), n_groups)
    plan = _ChainPlan(
        mesh=mesh, positions=positions, M=M, lo=lo, nn=nn, N=N, chunk_rows=cg,
        n_chunks=-(-n_groups // cg), layout=tail_padded_blocks(cg, mesh.size), streamed=streamed, patches=patches,
    )  # fmt: skip
    logger.info(
        "%s: %d groups of %d in %d chunk(s) of %d (%d rows each) on %d device(s)%s",
        where, n_groups, C, plan.n_chunks, cg, plan.rows, mesh.size,
        ", streamed" if streamed else "",
    )  # fmt: skip
    return plan, probe


def _chain_frames(raw: RawData, plan: _ChainPlan):
    """The diffraction frames and (when given) the ground-truth patches, ready to be gathered."""
    kw = dict(lo=plan.lo, M=plan.M, mesh=plan.mesh, layout=plan.layout, streamed=plan.streamed)
    frames = _Frames(raw.diff3d, **kw, placed=_resident_frames(raw, plan.mesh, plan.lo))
    truth = None if raw.Y is None else _Frames(raw.Y[..., 0], **kw)
    return frames, truth


def _grouped_energy(plan: _ChainPlan, raw: RawData, frames: _Frames, numerics, *, one_pass, tick):
    """Pass 1: the total energy of the grouped frames and, for the seed branch, each frame's."""
    if one_pass:  # the grouped energy is a sum of the frames' own energies: no gather needed
        return float(np.sum(raw.frame_energies[plan.nn])), None
    total_D, seed_sums = 0.0, []
    for i in range(plan.n_chunks):
        a, b, _, valid, first = plan.chunk(i)
        if plan.streamed:
            tick(f"energy pass {i + 1}/{plan.n_chunks}")
        total, sums = energy_on_mesh(
            frames.grouped(plan.nn[a:b]),
            valid,
            first,
            mesh=plan.mesh,
            total_groups=plan.n_groups,
            tf_order=numerics.tf_order_energies,
        )
        total_D += float(to_host(total))
        if sums is not None:
            seed_sums.append(to_host(sums)[: b - a])
    return total_D, (np.concatenate(seed_sums) if seed_sums else None)


@dataclasses.dataclass(frozen=True, kw_only=True)
class _ScalePass:
    """Pass 2's inputs that every chunk shares: the gain (host and device), how X is made."""

    gain: Any  # np.float32, from gain_of
    gain_dev: jax.Array
    one_pass: bool  # gather and scale in one program (the gain known before the gather)
    on_cpu: bool
    smallest: Any  # float or None: the smallest positive amplitude where X is made by NumPy (CPU)
    xyz: list  # the four coordinate columns on the mesh
    obj: jax.Array | None
    sign: float  # the variant's local_offset_sign
    container: bool


def _scaled_chunk(plan: _ChainPlan, i: int, frames, truth, sp: _ScalePass):
    """Pass 2 for chunk `i`: D, X and its energies, the coordinates, the patches, |Y| and phase."""
    a, b, nn_chunk, valid, first = plan.chunk(i)
    mesh, nn = plan.mesh, plan.nn[a:b]
    if sp.one_pass and (not sp.on_cpu or host_scale_is_exact(sp.gain, sp.smallest)):
        D, X = frames.grouped_and_scaled(nn, sp.gain)
    else:
        D = frames.grouped(nn)
        X = scale_on_host(D, sp.gain, sp.smallest) if sp.smallest is not None else None
    if X is None:
        X, total_X, x_sums = scale_on_mesh(
            D, sp.gain_dev, valid, first, mesh=mesh, total_groups=plan.n_groups,
            with_energy=sp.container,
        )  # fmt: skip
    elif sp.container:  # the energies scale_on_mesh would give, from the same X
        total_X, x_sums = energy_on_mesh(
            X, valid, first, mesh=mesh, total_groups=plan.n_groups, tf_order=True
        )
    out = _layout_on_mesh(
        put(nn_chunk, mesh, P(AXIS)), *sp.xyz, sp.obj, mesh=mesh, sign=sp.sign,
        patches=plan.patches, N=plan.N,
    )  # fmt: skip
    Y = truth.grouped(nn) if truth is not None else (out[6] if plan.patches else None)
    fields = {"diffraction": D, "X_full": X, "Y": Y}
    if sp.container:
        fields["Y_I"], fields["Y_phi"] = no_patches(X) if Y is None else split_patches(Y)
        fields["total_X"], fields["x_sums"] = float(to_host(total_X)), to_host(x_sums)[: b - a]
    return b - a, fields, [to_host(c)[: b - a] for c in out[:6]]


def _collected(plan: _ChainPlan, parts, sp: _ScalePass):
    """How to read one output over the chunks, and the gain as returned."""
    if plan.streamed:  # gathered in host memory, returned on the host CPU device
        host = _host_device()

        def collect(name):
            if parts[0][1][name] is None:
                return None
            return jax.device_put(
                np.concatenate([np.asarray(f[name])[:n] for n, f, _ in parts]), host
            )

        return collect, jax.device_put(np.asarray(sp.gain), host)
    ((_, only, _),) = parts
    return (lambda name: unpad(only[name], plan.n_groups, plan.mesh)), sp.gain_dev


def _grouped_data(raw: RawData, plan: _ChainPlan, parts, collect, gain_out) -> GroupedData:
    coords = [np.concatenate([c[k] for _, _, c in parts]) for k in range(6)]
    return GroupedData(
        diffraction=collect("diffraction"),
        X_full=collect("X_full"),
        normalize_gain=gain_out,
        coords_nn=coords[0],
        coords_offsets=coords[1],
        coords_relative=coords[2],
        coords_start_nn=coords[3],
        coords_start_offsets=coords[4],
        coords_start_relative=coords[5],
        nn_indices=plan.nn,
        Y=collect("Y"),
        objectGuess=raw.objectGuess,
    )


def _chain(
    raw: RawData,
    params: ChainParams,
    *,
    mesh: MeshArg,
    nn_indices: ArrayLike | None,
    container: bool,
    where: str,
    chunk_groups: ChunkArg = None,
    key: jax.Array | None = None,
    progress: Progress | None = None,
):
    """The one chain: grouping and normalisation, and with `container` the container, scales and scaler."""
    tick = progress or (lambda stage: None)
    _check_variant_input(raw, params, where)
    numerics = params.numerics
    plan, probe = _plan_chain(
        raw, params, mesh=mesh, nn_indices=nn_indices, key=key, chunk_groups=chunk_groups,
        container=container, where=where, tick=tick,
    )  # fmt: skip
    mesh, C = plan.mesh, plan.C
    with jax.enable_x64(True):
        frames, truth = _chain_frames(raw, plan)
        # One device, main numerics: the gain is known before the gather, and pass 2 gathers and
        # scales in one pass (no pass 1).
        one_pass = not plan.streamed and mesh.size == 1 and not numerics.tf_order_energies
        on_cpu = mesh.size == 1 and mesh_devices(mesh)[0].platform == "cpu"
        total_D, frame_sums = _grouped_energy(
            plan, raw, frames, numerics, one_pass=one_pass, tick=tick
        )
        gain = gain_of(
            numerics, total=total_D, count=plan.n_groups * C, frame_sums=frame_sums, N=plan.N,
            where=where,
        )  # fmt: skip
        sp = _ScalePass(
            gain=gain,
            gain_dev=put(np.asarray(gain), mesh, P()),
            one_pass=one_pass,
            on_cpu=on_cpu,
            smallest=raw.smallest_positive_amplitude if on_cpu else None,  # X by NumPy: bit-equal
            xyz=[put(plan.positions[:, k].copy(), mesh, P()) for k in range(4)],
            obj=None if plan.patches is None else put(raw.objectGuess, mesh, P()),
            sign=numerics.local_offset_sign,
            container=container,
        )
        parts = []
        for i in range(plan.n_chunks):
            tick(f"scale pass {i + 1}/{plan.n_chunks}" if plan.streamed else "container")
            parts.append(_scaled_chunk(plan, i, frames, truth, sp))
        raw_total = frames.energy_total() if container else None
    collect, gain_out = _collected(plan, parts, sp)
    grouped = _grouped_data(raw, plan, parts, collect, gain_out)
    if not container:
        return grouped
    totals = EnergyTotals(
        N=plan.N,
        M=plan.M,
        n_groups=plan.n_groups,
        raw=raw_total,
        diffraction=total_D,
        X=sum(f["total_X"] for _, f, _ in parts),
        X_frame_sums=np.concatenate([f["x_sums"] for _, f, _ in parts]),
    )
    return _scaled_result(params, grouped, totals, probe, collect, gain, where=where, tick=tick)


def _scaled_result(params, grouped, totals, probe, collect, gain, *, where, tick) -> ChainResult:
    """The intensity scales, the container and the scaler from the grouped data's energies."""
    tick("intensity_scale")
    numerics = params.numerics
    scales = intensity_scales(totals, nphotons=params.nphotons)
    training = scales[numerics.training_scale_key]
    result_container = assemble_container(
        grouped,
        probe=probe,
        Y_I=collect("Y_I"),
        Y_phi=collect("Y_phi"),
        norm_Y_I=np.float32(scales[NORM_Y_I_KEY]),
        where=where,
    )
    tick("scaler")
    scaler = IntensityScaler.from_scale(training, trainable=params.trainable)
    logger.info(
        "%s: %d groups of %d, gain %.6g, training scale %.9g",
        where, *grouped.nn_indices.shape, float(gain), training,
    )  # fmt: skip
    return ChainResult(
        params=params,
        grouped=grouped,
        container=result_container,
        intensity_scales=scales,
        training_scale=training,
        scaler=scaler,
    )


def run_chain(
    raw: RawData,
    params: ChainParams | None = None,
    *,
    mesh: MeshArg = None,
    chunk_groups: ChunkArg = None,
    nn_indices: ArrayLike | None = None,
    progress: Progress | None = None,
) -> ChainResult:
    """Run grouping → normalize_data → container → intensity scales → IntensityScaler on `raw`.

    Args:
        raw: the scan; when `mesh` spans several processes, this process's `process_frame_range`
            part of it (every process calls with the same arguments).
        params: chain parameters (default `ChainParams()`).
        mesh: shard the group axis over this 1-D "groups" mesh (`make_mesh`); default one device.
            Gathers, coordinates and patches are bit-equal to one device; the float32 results of
            the float64 reductions within 1 ulp (bit-equal in practice).
        chunk_groups: stream `chunk_groups` groups at a time through the devices (two passes, the
            outputs assembled in host memory, on the CPU device); one process only.
        nn_indices: inject (B, C) groups, skipping selection.
        progress: called with each stage name as it starts: "grouping", then "container" (or
            "energy pass i/n" and "scale pass i/n" when streaming), "intensity_scale", "scaler".

    Raises:
        GroupingError, NormalizationError, PtychoInputError: bad parameters, data, mesh or chunk size.
    """
    return _chain(
        raw,
        params or ChainParams(),
        mesh=mesh,
        nn_indices=nn_indices,
        container=True,
        where="run_chain",
        chunk_groups=chunk_groups,
        progress=progress,
    )


def group(
    raw: RawData,
    params: ChainParams | None = None,
    *,
    nn_indices: ArrayLike | None = None,
    key: jax.Array | None = None,
    mesh: MeshArg = None,
    **fields: Any,
) -> GroupedData:
    """Group scan positions and build the grouped arrays, as upstream `RawData.generate_grouped_data`
    followed by `normalize_data`: the chain up to `X_full`.

    Args:
        raw: the scan.
        params: chain parameters; `fields` replace some of them (`group(raw, gridsize=2, n_groups=8, seed=1)`).
            Read here: N, gridsize, K, n_groups, seed, sequential, oversample, neighbor_pool_size,
            variant, engine, patch_positions (where object patches `Y` are cut when `raw.Y` is
            absent: "upstream", the literal positions, for C > 1 mirrored through the group centre,
            §5.4; or "member", each member's own scan position).
        nn_indices: inject (B, C) groups and skip selection (removes randomness for cross-checks).
        key: PRNG key for `engine="jax"` (derived from `seed` when omitted).
        mesh: shard the group axis over this mesh, as `run_chain`.

    Returns:
        GroupedData with the upstream grouped-dict fields and `normalize_gain`.

    Raises:
        GroupingError: inconsistent parameters (n < C, K < C, N ≠ frame size, bad nn_indices, ...).
        NormalizationError: all-zero or non-finite frames.
    """
    p = dataclasses.replace(params or ChainParams(), **fields)
    return _chain(raw, p, mesh=mesh, nn_indices=nn_indices, container=False, where="group", key=key)
