"""Group coordinates: member positions, group centres and relative offsets in float64 (pipeline.md §4).

Bit-equality with upstream needs float64 and NumPy's summation order for the channel mean, so the
kernel runs jitted under a scoped `jax.enable_x64(True)` (the caller's process keeps its own x64
setting) and spells the sum out: left to right for C < 8, NumPy's 8-way pairwise blocks above.
"""

import functools as ft

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float64, Int

from ._types import HostCoords, HostGroups, HostOffsets
from ._variants import VariantName, get_variant


def _numpy_order_sum(terms: list[Array]) -> Array:
    """Sum `terms` in NumPy's pairwise order for a contiguous float64 reduction (pipeline.md §4)."""
    n = len(terms)
    if n < 8:
        total = terms[0]
        for t in terms[1:]:
            total = total + t
        return total
    if n <= 128:
        blocks = n - n % 8
        r = list(terms[:8])
        for i in range(8, blocks, 8):
            r = [r[j] + terms[i + j] for j in range(8)]
        total = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]))
        for t in terms[blocks:]:
            total = total + t
        return total
    n2 = n // 2
    n2 -= n2 % 8
    return _numpy_order_sum(terms[:n2]) + _numpy_order_sum(terms[n2:])


@ft.partial(jax.jit, static_argnames=("sign",))
def coordinates_kernel(
    x: Float64[Array, " n"], y: Float64[Array, " n"], nn: Int[Array, "B C"], *, sign: float
):
    members = jnp.stack([x[nn], y[nn]], axis=1)[:, None, :, :]  # (B, 1, 2, C)
    c = nn.shape[1]
    total = _numpy_order_sum([members[..., i] for i in range(c)])
    # Divided, as NumPy's mean does; the barrier stops XLA from rewriting "/ C" as "* (1/C)",
    # which rounds differently unless C is a power of two.
    divisor = jax.lax.optimization_barrier(jnp.full(total.shape, c, total.dtype))
    centre = (total / divisor)[..., None]
    relative = sign * (members - centre)
    return members, centre, relative


def group_coordinates(
    x: Float64[np.ndarray, " n"],
    y: Float64[np.ndarray, " n"],
    nn_indices: HostGroups,
    *,
    variant: VariantName = "main",
) -> tuple[HostCoords, HostOffsets, HostCoords]:
    """Member coordinates, group centre and relative offsets of each group, bit-equal to upstream.

    Args:
        x, y: float64 scan positions (pixels).
        nn_indices: (B, C) indices into `x`/`y`.
        variant: upstream variant (its `local_offset_sign`; both implemented ones use −1).

    Returns:
        `(coords_nn (B,1,2,C), coords_offsets (B,1,2,1), coords_relative (B,1,2,C))`, float64 NumPy,
        axis 2 = [x, y]; relative = −(member − centre).
    """
    with jax.enable_x64(True):
        sign = get_variant(variant).local_offset_sign
        out = coordinates_kernel(
            jnp.asarray(x, jnp.float64),
            jnp.asarray(y, jnp.float64),
            jnp.asarray(nn_indices),
            sign=sign,
        )
        return tuple(np.asarray(a) for a in out)
