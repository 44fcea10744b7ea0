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


def _fold_rows(x: Float32[Array, "B R ..."]) -> Float32[Array, "B ..."]:
    """Plain left-to-right float32 sum over axis 1, in place along the array.

    A scan over blocks of up to 64 rows with the adds unrolled inside: no transposition of the
    whole array (which costs more than the sums) and few loop steps.
    """
    b, r = x.shape[:2]
    rest = x.shape[2:]
    u = next(d for d in (64, 32, 16, 8, 4, 2, 1) if r % d == 0)
    blocks = x.reshape(b, r // u, u, *rest)

    def step(acc, i):
        block = jax.lax.dynamic_index_in_dim(blocks, i, axis=1, keepdims=False)  # (B, u, *rest)
        for j in range(u):
            acc = acc + block[:, j]
        return acc, None

    return jax.lax.scan(step, jnp.zeros((b, *rest), x.dtype), jnp.arange(r // u))[0]


def inner_sum(x: Float32[Array, "B n"]) -> Float32[Array, " B"]:
    """Eigen's inner (last-axis) float32 reduction: 4x8-lane accumulators, split above 8192 elements."""
    n = x.shape[-1]
    if n > _SPLIT:
        half = -(-n // 2)
        left = _LANES * -(-half // _LANES)  # 8 * ceil(ceil(n/2) / 8)
        return inner_sum(x[..., :left]) + inner_sum(x[..., left:])
    b = x.shape[0]
    p0 = jnp.zeros((b, _LANES), x.dtype)
    n_blocks = n // 32
    pos = 0
    if n_blocks:
        acc = _fold_rows(
            x[:, : 32 * n_blocks].reshape(b, n_blocks, 4, _LANES)
        )  # (B, 4, 8) lane-vectors
        p0 = ((acc[:, 0] + acc[:, 1]) + acc[:, 2]) + acc[:, 3]
        pos = 32 * n_blocks
    while pos + _LANES <= n:  # at most three further packets
        p0 = p0 + x[:, pos : pos + _LANES]
        pos += _LANES
    s = jnp.zeros((b,), x.dtype)
    for i in range(pos, n):
        s = s + x[:, i]
    return s + _horizontal_sum(p0)


def _vector_rows(x: Float32[Array, "B R C"]) -> Float32[Array, "B C"]:
    """Eigen's packet-wise middle reduction: rows r ≡ 0..3 (mod 4) into four accumulators."""
    b, r, c = x.shape
    if r < 16:
        return _fold_rows(x)
    q = 4 * (r // 4)
    acc = _fold_rows(x[:, :q].reshape(b, q // 4, 4, c))  # (B, 4, C)
    total = ((acc[:, 0] + acc[:, 1]) + acc[:, 2]) + acc[:, 3]
    for i in range(q, r):
        total = total + x[:, i]
    return total


def frame_sums(
    x: Float32[Array, "B N N C"], first=0, total_groups: int | None = None
) -> Float32[Array, "B C"]:
    """`tf.reduce_sum(x, axis=(1, 2))` in TF-CPU's float32 order (pipeline.md §6.5), for groups
    `first .. first+B` of a `total_groups`-group array (default: the whole array).

    Each output depends on its own frame only and, for C >= 8, on its flat position b·C + c in the
    whole array (which outputs Eigen computes in vector form), hence `first` for shards.
    """
    b, n1, n2, c = x.shape
    r = n1 * n2
    if c == 1:
        return inner_sum(x.reshape(b, r))[:, None]
    rows = x.reshape(b, r, c)
    sequential = _fold_rows(rows)
    if c < _LANES:
        return sequential
    # Outputs o = b*C + c come in aligned packets of 8; a packet lying inside one batch row
    # (o % C + 7 < C) and ending within B*C is computed in vector form, the rest sequentially.
    total = (b if total_groups is None else total_groups) * c
    o = (first + jnp.arange(b))[:, None] * c + jnp.arange(c)[None, :]
    start = o - o % _LANES
    vector_mask = ((start % c) + _LANES - 1 < c) & (start + _LANES <= total)
    return jnp.where(vector_mask, _vector_rows(rows), sequential)


SQUARES_BYTES = 4 << 20
"""Bytes of squares `square_frame_sums` forms at a time."""


def square_frame_sums(
    x: Float32[Array, "B N N C"], first=0, total_groups: int | None = None
) -> Float32[Array, "B C"]:
    """`frame_sums(x * x, first, total_groups)`, same bits, in group blocks of a few MiB.

    Each block is squared then summed as one array, the program form of `frame_sums(x * x)` (the
    products stay apart from the adds), so no full-size array of squares is allocated per call.
    """
    b = x.shape[0]
    total = b if total_groups is None else total_groups
    per = max(1, min(b, SQUARES_BYTES // max(1, x[0].size * 4)))
    n = b // per

    def block(i):
        xs = jax.lax.dynamic_slice_in_dim(x, i * per, per)
        return frame_sums(xs * xs, first + i * per, total)

    head = jax.lax.map(block, jnp.arange(n)).reshape(n * per, x.shape[-1])
    if n * per == b:
        return head
    rest = x[n * per :]
    return jnp.concatenate([head, frame_sums(rest * rest, first + n * per, total)])


sum_over_frame = jax.jit(frame_sums)


@jax.jit
def mean_all(x: Float32[Array, "*shape"]) -> Float32[Array, ""]:
    """`tf.reduce_mean(x)` over every axis, float32, in TF-CPU's order (row-major flat inner reduction)."""
    flat = x.reshape(1, -1)
    # True division by the count (a constant divisor would be rewritten as a reciprocal product).
    count = jax.lax.optimization_barrier(jnp.float32(flat.shape[1]))
    return inner_sum(flat)[0] / count
