"""Float32 sums in the order of TensorFlow-CPU's Eigen reducers (pipeline.md §6.5), for bit-compatible [SEED] numbers.

Upstream's float32 `tf.reduce_sum` is not a pairwise or sequential sum; its rounding carries a
≈ −5e-6 relative bias that the seed report's intensity scale encodes. These kernels reproduce that
order with explicit float32 adds (XLA does not reassociate them), so they are bit-equal to TF on
x86-64 (AVX2 Eigen packets of 8 floats). They are slower than a tree reduction and exist only for
the `variant="seed"` / compatibility paths.
"""

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float32

_LANES = 8
_SPLIT = 8 * 1024


def _horizontal_sum(p: Float32[Array, "*b 8"]) -> Float32[Array, "*b"]:
    v = [p[..., i] for i in range(_LANES)]
    return ((v[0] + v[4]) + (v[2] + v[6])) + ((v[1] + v[5]) + (v[3] + v[7]))


def _sequential_rows(x: Float32[Array, "R *b"]) -> Float32[Array, "*b"]:
    """Plain left-to-right float32 sum over the leading axis."""
    return jax.lax.scan(lambda acc, row: (acc + row, None), jnp.zeros(x.shape[1:], x.dtype), x)[0]


def inner_sum(x: Float32[Array, "*b n"]) -> Float32[Array, "*b"]:
    """Eigen's inner (last-axis) float32 reduction: 4x8-lane accumulators, split above 8192 elements."""
    n = x.shape[-1]
    if n > _SPLIT:
        left = _LANES * (-(-(-(-n // 2)) // _LANES))  # 8 * ceil(ceil(n/2) / 8)
        return inner_sum(x[..., :left]) + inner_sum(x[..., left:])
    lead = x.shape[:-1]
    p0 = jnp.zeros((*lead, _LANES), x.dtype)
    n_blocks = n // 32
    pos = 0
    if n_blocks:
        blocks = jnp.moveaxis(x[..., : 32 * n_blocks].reshape(*lead, n_blocks, 4, _LANES), -3, 0)
        acc = _sequential_rows(blocks)  # (*lead, 4, 8), each lane-vector accumulated in block order
        p0 = ((acc[..., 0, :] + acc[..., 1, :]) + acc[..., 2, :]) + acc[..., 3, :]
        pos = 32 * n_blocks
    while pos + _LANES <= n:  # at most three further packets
        p0 = p0 + x[..., pos : pos + _LANES]
        pos += _LANES
    s = jnp.zeros(lead, x.dtype)
    for i in range(pos, n):
        s = s + x[..., i]
    return s + _horizontal_sum(p0)


def _vector_rows(x: Float32[Array, "R *b"]) -> Float32[Array, "*b"]:
    """Eigen's packet-wise middle reduction: rows r ≡ 0..3 (mod 4) into four accumulators."""
    r = x.shape[0]
    if r < 16:
        return _sequential_rows(x)
    q = 4 * (r // 4)
    acc = _sequential_rows(x[:q].reshape(q // 4, 4, *x.shape[1:]))  # (4, *b)
    total = ((acc[0] + acc[1]) + acc[2]) + acc[3]
    for i in range(q, r):
        total = total + x[i]
    return total


@jax.jit
def sum_over_frame(x: Float32[Array, "B N N C"]) -> Float32[Array, "B C"]:
    """`tf.reduce_sum(x, axis=(1, 2))` in TF-CPU's float32 order (pipeline.md §6.5)."""
    b, n1, n2, c = x.shape
    r = n1 * n2
    if c == 1:
        return inner_sum(x.reshape(b, r))[:, None]
    rows = jnp.moveaxis(x.reshape(b, r, c), 1, 0)  # (R, B, C)
    sequential = _sequential_rows(rows)
    # Outputs o = b*C + c come in aligned packets of 8; a packet lying inside one batch row
    # (o % C + 7 < C) and ending within B*C is computed in vector form, the rest sequentially.
    o = jnp.arange(b * c).reshape(b, c)
    start = o - o % _LANES
    vector_mask = ((start % c) + _LANES - 1 < c) & (start + _LANES <= b * c)
    if c < _LANES:
        return sequential
    return jnp.where(vector_mask, _vector_rows(rows), sequential)


@jax.jit
def mean_all(x: Float32[Array, "*shape"]) -> Float32[Array, ""]:
    """`tf.reduce_mean(x)` over every axis, float32, in TF-CPU's order (row-major flat inner reduction)."""
    flat = x.reshape(-1)
    # True division by the count (a constant divisor would be rewritten as a reciprocal product).
    count = jax.lax.optimization_barrier(jnp.float32(flat.shape[0]))
    return inner_sum(flat) / count
