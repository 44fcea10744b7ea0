"""The chain streamed in chunks of groups, for frames that do not fit on the devices (specs/scaling.md).

Two passes over the groups, each chunk gathered on the host and sent to the device(s):

1. energy pass — per chunk, the float64 total of the frame energies (and, for the seed variant,
   the float32 per-frame sums in TF-CPU order); the totals are added in float64 on the host;
2. scale pass — with the float32 gain of the whole dataset: `X = gain · D`, coordinates, patches,
   container fields and the energies the intensity scales need, chunk by chunk, into host memory.

Every chunk is padded to the same size (one compilation) and the padding masked out of every
reduction, so the result equals the one-shot chain: gathers, coordinates, patches and `X_full` given
the gain are bit-equal; the gain and the float64 scales are within float64 rounding of one-shot
(float32 results bit-equal in practice); the order-dependent float32 reductions run on the
concatenated per-frame sums in the one-shot order.
"""

import logging

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from ._container import _no_patches, _split_patches
from ._coords import LOCAL_OFFSET_SIGN
from ._errors import PtychoInputError
from ._grouping import GroupedData
from ._pipeline import ChainParams, ChainResult
from ._rawdata import RawData
from ._sharding import (
    AXIS,
    Progress,
    _assemble,
    _check_mesh,
    _check_probe,
    _checked_gain,
    _choose_groups,
    _energy_stage,
    _frame_energy_total,
    _is_local,
    _layout_stage,
    _main_gain,
    _no_progress,
    _patch_mode,
    _put,
    _scale_stage,
    _seed_gain,
    _tail_padded_blocks,
    _to_host,
    _Totals,
    make_mesh,
)
from ._types import HostGroups

logger = logging.getLogger(__name__)


@jax.jit
def _channels_last(a):
    return jnp.moveaxis(a, 1, -1)


def _host_device() -> jax.Device:
    """Where streamed outputs are kept: the host CPU device (the accelerator is what ran out of memory)."""
    try:
        return jax.devices("cpu")[0]
    except RuntimeError:  # pragma: no cover - a JAX without a CPU backend
        return jax.devices()[0]


def run_chain_streamed(
    raw: RawData,
    params: ChainParams = ChainParams(),
    *,
    chunk_groups: int,
    mesh: Mesh | None = None,
    nn_indices: HostGroups | None = None,
    progress: Progress | None = None,
) -> ChainResult:
    """`run_chain` processing `chunk_groups` groups at a time, with a two-pass normalisation.

    Device memory holds one chunk (its frames, X, patches) at a time; with `mesh`, each chunk is
    sharded over its devices. The full-size outputs are assembled in host memory: the returned
    arrays live on the CPU device. Numbers as `run_chain` (see the module docstring).

    Args:
        raw: the whole scan in host memory (every frame; streaming runs on one process).
        params: chain parameters.
        chunk_groups: groups per chunk (>= 1; capped at B).
        mesh: shard each chunk over this 1-D "groups" mesh (default: one device).
        nn_indices: inject (B, C) groups, skipping selection.
        progress: called with "grouping", "energy pass i/n", "scale pass i/n", "intensity_scale"
            and "scaler" as each starts.

    Raises:
        PtychoInputError: bad `chunk_groups`, or a mesh spanning several processes.
        GroupingError, NormalizationError: as `run_chain`.
    """
    tick = progress or _no_progress
    where = "run_chain_streamed"
    if isinstance(chunk_groups, bool) or not isinstance(chunk_groups, (int, np.integer)) or chunk_groups < 1:
        raise PtychoInputError(f"{where}: chunk_groups: expected an int >= 1, got {chunk_groups!r}")
    cg = int(chunk_groups)
    mesh = make_mesh(1) if mesh is None else _check_mesh(mesh, where)
    if not _is_local(mesh):
        raise PtychoInputError(
            f"{where}: mesh: expected devices of this process only, got a mesh over several processes; "
            "use run_chain_sharded for multi-process runs"
        )
    tick("grouping")
    plan = _choose_groups(raw.positions(), raw.N, nn_indices=nn_indices, key=None, where=where, **params.group_kwargs(raw))
    probe = _check_probe(raw.probeGuess, plan.N, where)
    B, C, N, nn = plan.B, plan.C, plan.N, plan.nn
    D = mesh.size
    cg = min(cg, B)
    chunk = _tail_padded_blocks(cg, D)  # one chunk's rows over the mesh; every chunk has chunk.padded rows
    rows = chunk.padded
    n_chunks = -(-B // cg)
    patches = _patch_mode(raw.Y is not None, raw.objectGuess is not None, C, plan.patch_positions, stacklevel=3)
    logger.info("%s: %d groups of %d in %d chunks of %d (%d rows each) on %d device(s)", where, B, C, n_chunks, cg, rows, D)
    spec = P(AXIS)

    def bounds(i: int) -> tuple[int, int]:
        return i * cg, min((i + 1) * cg, B)

    def valid_rows(n: int) -> np.ndarray:
        return np.arange(rows) < n

    def put_frames(source: np.ndarray, idx: np.ndarray) -> jax.Array:
        """Host gather of the chunk's member frames (padding rows zero), channels last on the mesh."""
        out = np.zeros((rows, C, *source.shape[1:]), source.dtype)
        out[: len(idx)] = source[idx]
        return _channels_last(_put(out, mesh, spec))

    with jax.enable_x64(True):
        # Raw-frame energies (the report's dataset scale), in chunks of rows·C frames.
        total_raw = 0.0
        step = rows * C
        for lo in range(0, len(raw), step):
            block = np.zeros((step, N, N), np.float32)
            n = min(step, len(raw) - lo)
            block[:n] = raw.diff3d[lo : lo + n]
            total_raw += float(_frame_energy_total(_put(block, mesh, spec), _put(np.arange(step) < n, mesh, spec), mesh=mesh))

        # Pass 1: energies.
        total_D = 0.0
        seed_sums = []
        for i in range(n_chunks):
            a, b = bounds(i)
            tick(f"energy pass {i + 1}/{n_chunks}")
            out = _energy_stage(
                put_frames(raw.diff3d, nn[a:b]),
                _put(valid_rows(b - a), mesh, spec),
                _put(np.asarray(a, np.int32), mesh, P()),
                mesh=mesh,
                total_groups=B,
                tf_order=plan.variant == "seed",
            )
            total_D += float(out[0])
            if plan.variant == "seed":
                seed_sums.append(np.asarray(out[1])[: b - a])
        if plan.variant == "main":
            gain = _main_gain(jnp.asarray(total_D, jnp.float64), count=B * C, N=N)
        else:
            gain = jnp.asarray(_seed_gain(np.concatenate(seed_sums), N))
        gain = _checked_gain(gain, where)
        gain_dev = _put(np.asarray(gain), mesh, P())

        # Pass 2: everything else, chunk by chunk into host buffers.
        diffraction = np.empty((B, N, N, C), np.float32)
        X_full = np.empty((B, N, N, C), np.float32)
        has_Y = raw.Y is not None or patches is not None
        Y = np.empty((B, N, N, C), np.complex64) if has_Y else None
        Y_I = np.empty((B, N, N, C), np.float32)
        Y_phi = np.empty((B, N, N, C), np.float32)
        coords = [np.empty((B, 1, 2, k), np.float64) for k in (C, 1, C, C, 1, C)]
        x_sums = np.empty((B, C), np.float32)
        total_X = 0.0
        xyz = [_put(a, mesh, P()) for a in (raw.xcoords, raw.ycoords, raw.xcoords_start, raw.ycoords_start)]
        obj = None if patches is None else _put(raw.objectGuess, mesh, P())
        sign = LOCAL_OFFSET_SIGN[plan.variant]
        for i in range(n_chunks):
            a, b = bounds(i)
            n = b - a
            tick(f"scale pass {i + 1}/{n_chunks}")
            D_chunk = put_frames(raw.diff3d, nn[a:b])
            valid = _put(valid_rows(n), mesh, spec)
            first = _put(np.asarray(a, np.int32), mesh, P())
            X, tX, sums = _scale_stage(D_chunk, gain_dev, valid, first, mesh=mesh, total_groups=B)
            nn_chunk = np.zeros((rows, C), np.int32)
            nn_chunk[:n] = nn[a:b]
            layout = _layout_stage(_put(nn_chunk, mesh, spec), *xyz, obj, mesh=mesh, sign=sign, patches=patches, N=N)
            if raw.Y is not None:
                Y_chunk = put_frames(raw.Y[..., 0], nn[a:b])
            elif patches is not None:
                Y_chunk = layout[6]
            else:
                Y_chunk = None
            I_chunk, phi_chunk = _no_patches(X) if Y_chunk is None else _split_patches(Y_chunk)
            diffraction[a:b] = np.asarray(D_chunk)[:n]
            X_full[a:b] = np.asarray(X)[:n]
            if Y is not None:
                Y[a:b] = np.asarray(Y_chunk)[:n]
            Y_I[a:b] = np.asarray(I_chunk)[:n]
            Y_phi[a:b] = np.asarray(phi_chunk)[:n]
            for dst, src in zip(coords, layout[:6]):
                dst[a:b] = np.asarray(src)[:n]
            x_sums[a:b] = np.asarray(sums)[:n]
            total_X += float(tX)

    tick("intensity_scale")
    host = _host_device()
    put_host = lambda x: None if x is None else jax.device_put(x, host)
    grouped = GroupedData(
        diffraction=put_host(diffraction),
        X_full=put_host(X_full),
        normalize_gain=jax.device_put(np.asarray(_to_host(gain), np.float32), host),
        coords_nn=coords[0],
        coords_offsets=coords[1],
        coords_relative=coords[2],
        coords_start_nn=coords[3],
        coords_start_offsets=coords[4],
        coords_start_relative=coords[5],
        nn_indices=nn,
        Y=put_host(Y),
        objectGuess=raw.objectGuess,
    )
    totals = _Totals(N=N, B=B, C=C, M=len(raw), raw=total_raw, diffraction=total_D, X=total_X, X_frame_sums=x_sums)
    result = _assemble(
        params,
        grouped,
        probe=probe,
        Y_I=put_host(Y_I),
        Y_phi=put_host(Y_phi),
        coords32=put_host(coords[5].astype(np.float32)),
        totals=totals,
    )
    tick("scaler")
    logger.info("chain (streamed, %d chunks): gain %.6g, training scale %.9g", n_chunks, float(_to_host(gain)), result.training_scale)
    return result
