"""`normalize_data`: scale grouped amplitudes so the mean per-frame energy is (N/2)² (pipeline.md §6).

The stage is three pieces, shared by the one-device, mesh and streamed chains: `energy_on_mesh`
(partial sums of a block of groups: a float64 total and, for TF-order numerics, float32 per-frame
sums), `gain_of` (the one rule that turns the combined partial sums into the float32 gain) and
`scale_on_mesh` (`X = gain · D`, with the energies of X the intensity scales need).
"""

import functools as ft
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P
from jax.typing import ArrayLike
from jaxtyping import Array, Float32

from ._errors import NormalizationError
from ._gain import apply_gain, gain_from_energy
from ._mesh import AXIS, check_mesh, make_mesh, put, tail_padded_blocks, to_host, unpad
from ._rawdata import aligned_empty, host_map
from ._stats import float_sum
from ._tf_order import square_frame_sums
from ._types import Amplitudes
from ._variants import Variant, VariantName, get_variant


def check_diffraction(diffraction: ArrayLike, N: int, where: str) -> None:
    """The input checks of the normalisation: (B, N, N, C) float32 amplitudes of frame size N, B >= 1."""
    if isinstance(N, bool) or not (isinstance(N, (int, np.integer)) and N > 0):
        raise NormalizationError(f"{where}: N must be a positive int, got {N!r}")
    shape, dtype = np.shape(diffraction), getattr(diffraction, "dtype", None)
    if len(shape) != 4 or shape[1] != shape[2] or shape[0] < 1:
        raise NormalizationError(
            f"{where}: diffraction must be (B, N, N, C) with B >= 1, got shape {shape}"
        )
    if shape[1] != N:
        raise NormalizationError(
            f"{where}: N={N} does not match the frame size {shape[1]} of diffraction {shape}"
        )
    if dtype != np.float32:
        raise NormalizationError(f"{where}: diffraction must be float32 amplitudes, got {dtype}")


def energy_partials(x, valid, offset, total_groups: int, *, tf_order: bool):
    """Partial sums of one block of rows: Σ over valid rows of Σ x[b]² in float64, and, with `tf_order`,
    the float32 per-frame sums `Σ_hw x²` in TF-CPU order of groups `offset ..` of `total_groups`; needs x64."""
    x64 = x.astype(jnp.float64)
    e = jnp.sum(x64 * x64, axis=tuple(range(1, x.ndim)))
    total = jnp.sum(jnp.where(valid, e, 0.0))
    return total, (square_frame_sums(x, offset, total_groups) if tf_order else None)


@ft.partial(jax.jit, static_argnames=("mesh", "total_groups", "tf_order"))
def energy_on_mesh(x, valid, first, *, mesh: Mesh, total_groups: int, tf_order: bool):
    """`energy_partials` of the rows of `x` sharded over `mesh`: `(total, per-frame sums or None)`; needs x64."""

    def local(x, valid, first):
        offset = first + jax.lax.axis_index(AXIS).astype(first.dtype) * x.shape[0]
        total, sums = energy_partials(x, valid, offset, total_groups, tf_order=tf_order)
        total = jax.lax.psum(total, AXIS)
        return (total,) if sums is None else (total, sums)

    out_specs = (P(), P(AXIS)) if tf_order else (P(),)
    # check_vma=False: the TF-order scans start from unvarying zeros (their carries become varying).
    out = jax.shard_map(
        local, mesh=mesh, in_specs=(P(AXIS), P(AXIS), P()), out_specs=out_specs, check_vma=False
    )(x, valid, first)
    return out[0], (out[1] if tf_order else None)


@ft.partial(jax.jit, static_argnames=("mesh", "total_groups", "with_energy"))
def scale_on_mesh(D, gain, valid, first, *, mesh: Mesh, total_groups: int, with_energy: bool):
    """`X = gain · D` on the mesh; with `with_energy` also `energy_partials` of X in TF order; needs x64."""

    def local(D, gain, valid, first):
        X = apply_gain(D, gain)
        if not with_energy:
            return (X,)
        offset = first + jax.lax.axis_index(AXIS).astype(first.dtype) * D.shape[0]
        total, sums = energy_partials(X, valid, offset, total_groups, tf_order=True)
        return X, jax.lax.psum(total, AXIS), sums

    spec = P(AXIS)
    out_specs = (spec, P(), spec) if with_energy else (spec,)
    out = jax.shard_map(
        local, mesh=mesh, in_specs=(spec, P(), spec, P()), out_specs=out_specs, check_vma=False
    )(D, gain, valid, first)
    return out if with_energy else (out[0], None, None)


def host_scale_is_exact(gain: np.float32, smallest_positive: np.float32) -> bool:
    """Whether NumPy's `gain · D` has XLA-on-CPU's bits: no subnormal float32 read or made.

    XLA on CPU flushes subnormals to zero, NumPy does not; with the smallest positive amplitude of
    the frames and its scaled value both normal, no element can tell them apart.
    """
    tiny = np.finfo(np.float32).tiny
    return bool(
        smallest_positive >= tiny and np.float32(smallest_positive) * np.float32(gain) >= tiny
    )


def scale_on_host(
    D: jax.Array, gain: np.float32, smallest_positive: np.float32
) -> jax.Array | None:
    """`X = gain · D` by NumPy on a one-device CPU `D`, into an aligned buffer the device aliases, or None.

    The same bits as `scale_on_mesh` whenever no subnormal float32 is read or made (XLA on CPU
    flushes subnormals to zero, NumPy does not): `D` has no positive value below
    `smallest_positive` (≥ the smallest normal float32) and `gain · smallest_positive` is normal.
    Otherwise, and off a single CPU device, None (the caller takes `scale_on_mesh`). NumPy's
    buffers get transparent huge pages, so its fresh output costs about a third of XLA's here.
    """
    devices = D.sharding.device_set
    if len(devices) != 1 or next(iter(devices)).platform != "cpu" or D.dtype != np.float32:
        return None
    gain = np.float32(gain)
    if not host_scale_is_exact(gain, smallest_positive):
        return None
    d = np.asarray(D)
    X = aligned_empty(d.shape, np.float32)

    def work(block: slice) -> None:  # elementwise: the same bits in any blocking
        apply_gain(d[block], gain, out=X[block])

    host_map(work, d.shape[0])
    return jax.device_put(X, D.sharding)


def host_mean_f32(a: np.ndarray) -> np.float32:
    """NumPy's float32 mean (pairwise order of NumPy 2.0, the goldens'), as upstream takes it on the host."""
    return np.float32(float_sum(np.asarray(a, np.float32).reshape(-1)) / np.float32(a.size))


def gain_of(
    numerics: Variant,
    *,
    total: float,
    count: int,
    frame_sums: np.ndarray | None,
    N: int,
    where: str,
) -> np.float32:
    """The float32 gain from the combined partial sums of all groups (one rule for every path).

    Main: mean energy `total / count` in float64. Seed: NumPy's float32 mean of the (B, C) TF-order
    per-frame sums, in the one-device order.

    Raises:
        NormalizationError: the gain is not finite and positive (NaN/Inf frames or all frames 0).
    """
    energy = (
        host_mean_f32(frame_sums)
        if numerics.tf_order_energies
        else np.float64(total) / np.float64(count)
    )
    gain = gain_from_energy(energy, N)
    if not (np.isfinite(gain) and gain > 0):
        reason = (
            "zero total energy (all frames are 0)"
            if np.isfinite(energy) and np.isfinite(total)
            else "non-finite (NaN/Inf) amplitudes"
        )
        raise NormalizationError(
            f"{where}: expected a finite positive gain, got {float(gain)} from {reason}"
        )
    return gain


def normalize_data(
    diffraction: ArrayLike, N: int, *, variant: VariantName = "main", mesh: Any = None
) -> tuple[Amplitudes, Float32[Array, ""]]:
    """Normalise grouped amplitudes so the mean per-frame energy is (N/2)², as upstream `normalize_data`.

    `gain = sqrt((N/2)² / mean_{b,c} Σ_{h,w} D²)`; returns `(gain · D, gain)`, both float32.

    Args:
        diffraction: (B, N, N, C) float32 amplitudes (not intensities), channel-last (checked here,
            with errors naming what is wrong).
        N: frame size; must equal the frame's spatial size.
        variant: "main" — upstream main: float64 energies, float32 gain (default);
            "seed" — the seed branch / upstream `loader.normalize_data`: float32 energies in
            TF-CPU's reduction order, NumPy float32 mean (carries upstream's −5e-6 bias).
        mesh: shard the group axis over this 1-D "groups" mesh (`make_mesh`); default one device.
            B need not divide by its size (padded and masked; the result is then replicated).

    Raises:
        NormalizationError: wrong shape/dtype, N mismatch, non-finite frames, or zero total energy.
    """
    numerics = get_variant(variant)
    check_diffraction(diffraction, N, "normalize_data")
    mesh = make_mesh(1) if mesh is None else check_mesh(mesh, "normalize_data")
    B = np.shape(diffraction)[0]
    rows = tail_padded_blocks(B, mesh.size)
    with jax.enable_x64(True):
        if mesh.size == 1:
            x = jax.device_put(diffraction, mesh.devices.flat[0])
        else:
            x = put(
                rows.scatter(
                    to_host(diffraction)
                    if isinstance(diffraction, jax.Array)
                    else np.asarray(diffraction)
                ),
                mesh,
                P(AXIS),
            )
        valid = put(rows.valid(), mesh, P(AXIS))
        first = put(np.asarray(0, np.int32), mesh, P())
        total, sums = energy_on_mesh(
            x, valid, first, mesh=mesh, total_groups=B, tf_order=numerics.tf_order_energies
        )
        gain = gain_of(
            numerics,
            total=float(to_host(total)),
            count=B * np.shape(diffraction)[3],
            frame_sums=None if sums is None else to_host(sums)[:B],
            N=int(N),
            where="normalize_data",
        )
        gain_dev = put(np.asarray(gain), mesh, P())
        X = scale_on_mesh(x, gain_dev, valid, first, mesh=mesh, total_groups=B, with_energy=False)[
            0
        ]
    return unpad(X, B, mesh), gain_dev
