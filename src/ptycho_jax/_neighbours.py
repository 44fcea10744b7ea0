"""Nearest-neighbour candidates for grouping: SciPy's cKDTree (upstream tie order) or a jitted brute-force search."""

import functools as ft

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Float32, Int32
from scipy.spatial import cKDTree


def kdtree_neighbours(positions: Float[np.ndarray, "n 2"], query: np.ndarray, *, k: int) -> np.ndarray:
    """Indices of the `k` nearest positions of each query point, nearest first, as upstream orders them.

    SciPy's cKDTree on float64 [x, y]: ties come back in the tree's internal order, not index order
    (pitfalls.md §2), which is what upstream's groups depend on.

    Returns:
        (len(query), k) int64 array.
    """
    tree = cKDTree(positions)
    _, idx = tree.query(positions[query], k=k)
    return np.asarray(idx, dtype=np.int64).reshape(len(query), k)


@ft.partial(jax.jit, static_argnames=("k", "chunk"))
def _brute_force_neighbours(
    positions: Float32[Array, "n 2"], seeds: Int32[Array, " S"], *, k: int, chunk: int
) -> Int32[Array, "S k"]:
    n = positions.shape[0]
    s = seeds.shape[0]
    pad = (-s) % chunk
    seeds_padded = jnp.concatenate([seeds, jnp.zeros((pad,), seeds.dtype)]).reshape(-1, chunk)

    def one_chunk(seed_chunk):
        d = positions[seed_chunk][:, None, :] - positions[None, :, :]  # (chunk, n, 2)
        d2 = jnp.sum(d * d, axis=-1)
        d2 = jnp.where(jnp.arange(n)[None, :] == seed_chunk[:, None], jnp.inf, d2)  # never the seed itself
        return jax.lax.top_k(-d2, k)[1].astype(jnp.int32)

    return jax.lax.map(one_chunk, seeds_padded).reshape(-1, k)[:s]


def brute_force_neighbours(positions: Float[np.ndarray, "n 2"], seeds: np.ndarray, *, k: int, chunk: int = 256) -> np.ndarray:
    """The `k` nearest other positions of each seed (the seed itself excluded), nearest first.

    A jitted exact search in float32 (distances from the seed), chunked over seeds so memory is
    O(chunk · n); ties and near-ties may order differently from cKDTree.

    Returns:
        (len(seeds), k) int32 array.
    """
    positions = np.asarray(positions)
    # Distances are taken relative to the centroid so float32 keeps sub-pixel resolution.
    centred = (positions - positions.mean(axis=0)).astype(np.float32)
    chunk = int(min(chunk, max(1, len(seeds))))
    out = _brute_force_neighbours(jnp.asarray(centred), jnp.asarray(seeds, jnp.int32), k=k, chunk=chunk)
    return np.asarray(out)
