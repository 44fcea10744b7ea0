"""Nearest-neighbour candidates for grouping: SciPy's cKDTree (upstream tie order), the same
indices from a certified search on the JAX device (`device_neighbours`), or the JAX engine's
jitted searches."""

import functools as ft

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Float32, Float64, Int, Int32, Int64
from scipy.spatial import cKDTree

from ._errors import GroupingError
from ._params import NeighbourSearch


def kdtree_neighbours(
    positions: Float[np.ndarray, "n 2"], query: np.ndarray, *, k: int
) -> np.ndarray:
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
        d2 = jnp.where(
            jnp.arange(n)[None, :] == seed_chunk[:, None], jnp.inf, d2
        )  # never the seed itself
        return jax.lax.top_k(-d2, k)[1].astype(jnp.int32)

    return jax.lax.map(one_chunk, seeds_padded).reshape(-1, k)[:s]


def brute_force_neighbours(
    positions: Float[np.ndarray, "n 2"], seeds: np.ndarray, *, k: int, chunk: int = 256
) -> np.ndarray:
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
    out = _brute_force_neighbours(
        jnp.asarray(centred), jnp.asarray(seeds, jnp.int32), k=k, chunk=chunk
    )
    return np.asarray(out)


@ft.partial(jax.jit, static_argnames=("k", "m", "chunk"))
def _cell_list_neighbours(
    sorted_xy: Float32[Array, "n 2"],
    order: Int32[Array, " n"],
    starts: Int32[Array, " cells"],
    counts: Int32[Array, " cells"],
    seed_xy: Float32[Array, "S 2"],
    seed_cell: Int32[Array, "S 2"],
    seed_slot: Int32[Array, " S"],
    h: Float32[Array, ""],
    n_cells: Int32[Array, " 2"],
    *,
    k: int,
    m: int,
    chunk: int,
):
    s = seed_xy.shape[0]
    pad = (-s) % chunk

    def padded(a):
        return jnp.concatenate([a, jnp.zeros((pad, *a.shape[1:]), a.dtype)]).reshape(
            -1, chunk, *a.shape[1:]
        )

    d = jnp.arange(-1, 2, dtype=jnp.int32)
    block = jnp.stack(jnp.meshgrid(d, d, indexing="ij"), -1).reshape(9, 2)  # the 3x3 cell block
    slot = jnp.arange(m, dtype=jnp.int32)

    def one_chunk(args):
        xy, c, own = args  # (chunk, 2) seed positions, cells, and slots in the sorted order
        nb = c[:, None, :] + block[None]  # (chunk, 9, 2)
        inside = jnp.all((nb >= 0) & (nb < n_cells), axis=-1)
        cell_id = jnp.where(inside, nb[..., 1] * n_cells[0] + nb[..., 0], 0)
        valid = inside[..., None] & (slot < counts[cell_id][..., None])  # (chunk, 9, m)
        first = jnp.where(inside, starts[cell_id], 0)  # (chunk, 9): each cell is a contiguous run
        j = first[..., None] + slot
        # Slice gathers of m consecutive rows (sorted_xy is padded by m rows at the end).
        run = jax.vmap(jax.vmap(lambda f: jax.lax.dynamic_slice_in_dim(sorted_xy, f, m)))(first)
        delta = run - xy[:, None, None]
        d2 = jnp.sum(delta * delta, axis=-1)
        ok = (valid & (j != own[:, None, None])).reshape(chunk, 9 * m)
        d2 = jnp.where(ok, d2.reshape(chunk, 9 * m), jnp.inf)
        _, pos = jax.lax.top_k(-d2, k)
        jk = jnp.take_along_axis(j.reshape(chunk, 9 * m), pos, axis=1)
        idx = order[jk]
        # The k-th distance again, from the k-th point itself, and whether the block held k other
        # points, from the cell counts: reading top_k's values, d2 or the mask a second time
        # makes XLA-CPU take a path five times slower.
        far = sorted_xy[jk[:, -1]] - xy
        enough = jnp.sum(jnp.where(inside, counts[cell_id], 0), axis=1) - 1 >= k
        kth = jnp.where(enough, jnp.sum(far * far, axis=-1), jnp.inf)
        # Exact only if the k-th distance does not reach past the 3x3 block around the seed; a
        # side on the edge of the grid has no points beyond it.
        origin = c.astype(jnp.float32) * h
        lo_side = jnp.where(c > 0, xy - origin + h, jnp.inf)
        hi_side = jnp.where(c < n_cells - 1, origin + 2 * h - xy, jnp.inf)
        margin = jnp.min(jnp.concatenate([lo_side, hi_side], axis=1), axis=1)
        exact = jnp.isfinite(kth) & (kth <= margin * margin)
        return idx.astype(jnp.int32), exact

    chunks = (padded(seed_xy), padded(seed_cell), padded(seed_slot))
    if chunks[0].shape[0] == 1:  # a loop of one step only hides the work from XLA's fusion
        idx, exact = one_chunk(tuple(a[0] for a in chunks))
    else:
        idx, exact = jax.lax.map(one_chunk, chunks)
    return idx.reshape(-1, k)[:s], exact.reshape(-1)[:s]


def jax_neighbours(
    positions: Float[np.ndarray, "n 2"], seeds: np.ndarray, *, k: int, chunk: int | None = None
) -> np.ndarray:
    """The `k` nearest other positions of each seed (seed excluded), nearest first: the JAX engine.

    A jitted cell list: positions are binned into square cells holding about k+1 points each, and
    each seed's candidates are the points of the 3x3 cells around it, O(n + S·k) work instead of
    the O(S·n) of a brute-force search. Seeds whose k-th neighbour could lie outside that block
    (sparse regions, edges) are re-searched exhaustively, so the result is the exact k-nearest set
    (up to float32 near-ties). Host work is limited to the binning's sizes (static shapes).

    Returns:
        (len(seeds), k) int32 array.
    """
    positions = np.asarray(positions, np.float64)
    seeds = np.asarray(seeds, np.int64)
    n = positions.shape[0]
    if not 0 < k < n:
        raise GroupingError(f"jax_neighbours: k must be in [1, n-1] = [1, {n - 1}], got {k}")
    lo = positions.min(axis=0)
    span = np.maximum(positions.max(axis=0) - lo, 1e-9)
    h = float(np.sqrt(span[0] * span[1] * (k + 1) / n)) or 1.0
    h = max(h, float(span.max()) / 4096)  # bound the number of cells
    cell = np.minimum(((positions - lo) // h).astype(np.int64), np.ceil(span / h).astype(np.int64))
    n_cells = cell.max(axis=0) + 1
    cell_id = cell[:, 1] * n_cells[0] + cell[:, 0]
    order = np.argsort(cell_id, kind="stable")
    counts = np.bincount(cell_id, minlength=int(n_cells[0] * n_cells[1]))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    m = int(counts.max())
    if len(seeds) == 0:
        return np.zeros((0, k), np.int32)
    # float32 offsets from the scan's corner: sub-millipixel for scans up to ~10^4 px across.
    xy = (positions - lo).astype(np.float32)
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(n)
    idx, exact = _cell_list_neighbours(
        jnp.asarray(np.concatenate([xy[order], np.zeros((m, 2), np.float32)])),
        jnp.asarray(np.concatenate([order, np.zeros(m, np.int64)]), jnp.int32),
        jnp.asarray(starts, jnp.int32),
        jnp.asarray(counts, jnp.int32),
        jnp.asarray(xy[seeds]),
        jnp.asarray(cell[seeds], jnp.int32),
        jnp.asarray(rank[seeds], jnp.int32),
        jnp.float32(h),
        jnp.asarray(n_cells, jnp.int32),
        k=k,
        m=m,
        # Few, large chunks: each holds ~2^24 candidate distances (64 MiB); a loop step costs more than its work.
        chunk=int(min(chunk or max(1, 2**24 // (9 * m)), len(seeds))),
    )
    idx, exact = np.array(idx), np.asarray(exact)
    redo = np.flatnonzero(~exact)
    if redo.size:
        # Pad to a power of two so the exhaustive pass compiles once per size class, not per call.
        size = max(16, 1 << int(redo.size - 1).bit_length())
        padded = np.concatenate([seeds[redo], np.full(size - redo.size, seeds[redo[0]])])
        idx[redo] = brute_force_neighbours(positions, padded, k=k, chunk=min(size, 256))[
            : redo.size
        ]
    return idx


# -- the device search with cKDTree's answers ----------------------------------------------------
_U32 = 2.0**-24  # float32 unit roundoff
_TIE = 2.0**-40  # relative gap of squared float64 distances below which two are treated as tied
_EXTRA = 8  # candidates beyond the k asked for: room for the certificate's margin
_R_MAX = 1e18  # centred coordinates beyond this: (2·sqrt(2)·R)² could overflow float32


@ft.partial(jax.jit, static_argnames=("L", "chunk"))
def _device_candidates(
    centred: Float32[Array, "n 2"], query: Int32[Array, " S"], *, L: int, chunk: int
) -> Int32[Array, "S L"]:
    """The L positions nearest each query position in float32, an exhaustive search in query chunks."""
    s = query.shape[0]
    pad = (-s) % chunk
    chunks = jnp.concatenate([query, jnp.zeros((pad,), query.dtype)]).reshape(-1, chunk)

    def one_chunk(q):
        delta = centred[q][:, None, :] - centred[None, :, :]  # (chunk, n, 2)
        d2 = delta[..., 0] * delta[..., 0] + delta[..., 1] * delta[..., 1]
        return jax.lax.top_k(-d2, L)[1].astype(jnp.int32)

    if chunks.shape[0] == 1:
        out = one_chunk(chunks[0])
    else:
        out = jax.lax.map(one_chunk, chunks)
    return out.reshape(-1, L)[:s]


def _certify(
    positions: Float64[np.ndarray, "n 2"],
    query: Int64[np.ndarray, " S"],
    cand: Int64[np.ndarray, "S L"],
    *,
    k: int,
    R: float,
) -> tuple[Int64[np.ndarray, "S kk"], Bool[np.ndarray, " S"]]:
    """Sort each row of device candidates by cKDTree's float64 distance; flag the rows it proves.

    Returns:
        ((S, min(k, L)) int64 indices nearest first, (S,) bool: the row is provably cKDTree's).
    """
    n = positions.shape[0]
    L = cand.shape[1]
    delta = positions[cand] - positions[query][:, None, :]  # (S, L, 2), as cKDTree subtracts
    d2 = delta[..., 0] * delta[..., 0] + delta[..., 1] * delta[..., 1]
    order = np.argsort(d2, axis=1, kind="stable")
    d2 = np.take_along_axis(d2, order, axis=1)
    idx = np.take_along_axis(cand, order, axis=1)
    kk = min(k, L)
    # (b) the first k distances and the (k+1)-th strictly apart: cKDTree orders (and cuts) ties
    # in its own traversal order; "apart" by more than any float64 formula or pruning error.
    m = min(kk + 1, L)
    apart = np.all(d2[:, 1:m] - d2[:, : m - 1] > _TIE * d2[:, 1:m], axis=1)
    if L == n:  # every position is a candidate: nothing can have been dropped
        return idx[:, :kk], apart
    # (a) nothing outside the candidates is nearer than the k-th: every non-candidate's float32
    # distance is >= that of every candidate (top_k), and float32 distances are within
    # `a` (coordinate rounding) and a factor (1 ± u)² (subtract, square, add) of the true ones.
    a = 4 * _U32 * R + 1e-18
    lower = (np.sqrt(d2[:, L - 1]) - a) * (1 - 16 * _U32) - a
    kept = np.sqrt(d2[:, kk - 1]) * (1 + _TIE) < lower
    return idx[:, :kk], apart & kept


def device_neighbours(
    positions: Float[np.ndarray, "n 2"],
    query: Int[np.ndarray, " S"],
    *,
    k: int,
    extra: int = _EXTRA,
    return_fallback_rows: bool = False,
) -> Int64[np.ndarray, "S k"] | tuple[Int64[np.ndarray, "S k"], Int64[np.ndarray, " r"]]:
    """`kdtree_neighbours(positions, query, k=k)` exactly, the search run on the JAX device.

    The device ranks all positions by float32 distance from each query position (centred at the
    centroid; a jitted exhaustive search in query chunks) and returns the k + `extra` nearest
    indices. The host sorts them by cKDTree's float64 squared distance and keeps a row only when it
    is provably cKDTree's answer: no position left out can be nearer than the k-th (a rigorous
    float32 error bound), and no two of the first k + 1 distances tie (cKDTree orders ties its own
    way). Every other row is queried from a cKDTree over all positions, as `kdtree_neighbours` does.
    Only the positions go to the device and only indices come back.

    Args:
        positions: (n, 2) [x, y] scan positions.
        query: indices into `positions` of the query points.
        k: neighbours per query, the query point itself included (as in cKDTree); k > n pads with
            index n, as cKDTree does.
        extra: candidates beyond k that the device returns (the certificate's margin).
        return_fallback_rows: also return the rows (positions in `query`) answered by cKDTree.

    Returns:
        (len(query), k) int64 array, or (it, int64 rows queried on the host).
    """
    positions = np.asarray(positions, np.float64)
    n, s = positions.shape[0], query.shape[0]

    def on_host():  # cKDTree's own answer (or error) for every row
        idx = kdtree_neighbours(positions, query, k=k)
        return (idx, np.arange(s, dtype=np.int64)) if return_fallback_rows else idx

    if n == 0 or s == 0 or k < 1 or not np.all(np.isfinite(positions)):
        return on_host()
    query = np.arange(n)[query]  # IndexError as positions[query] raises it; negatives resolved
    centred = positions - positions.mean(axis=0)
    R = float(np.max(np.abs(centred)))
    if R > _R_MAX:  # float32 squared distances could overflow: the certificate would not hold
        return on_host()
    L = min(k + max(int(extra), 1), n)
    chunk = 1 << max(0, (2**23 // n).bit_length() - 1)  # ~2^23 distances (32 MiB) a step
    chunk = min(chunk, 1 << (s - 1).bit_length())
    cand = np.asarray(
        _device_candidates(
            jnp.asarray(centred.astype(np.float32)), jnp.asarray(query, jnp.int32), L=L, chunk=chunk
        ),
        np.int64,
    )
    idx, ok = _certify(positions, query, cand, k=k, R=R)
    if k > n:  # cKDTree pads missing neighbours with index n
        idx = np.concatenate([idx, np.full((s, k - n), n, np.int64)], axis=1)
    rows = np.flatnonzero(~ok)
    if rows.size:
        idx[rows] = kdtree_neighbours(positions, query[rows], k=k)
    return (idx, rows) if return_fallback_rows else idx


def upstream_neighbours(
    positions: Float[np.ndarray, "n 2"],
    query: Int[np.ndarray, " S"],
    *,
    k: int,
    search: NeighbourSearch = "auto",
) -> Int64[np.ndarray, "S k"]:
    """cKDTree's neighbours (`kdtree_neighbours`), searched on the host or on the JAX device.

    `search`: "host" (cKDTree), "device" (`device_neighbours`, the same indices) or "auto"
    (the device when JAX's default backend is not the CPU, else the host).
    """
    if search == "auto":
        search = "device" if jax.default_backend() != "cpu" else "host"
    if search == "device":
        return device_neighbours(positions, query, k=k)
    if search == "host":
        return kdtree_neighbours(positions, query, k=k)
    raise GroupingError(f"neighbour_search must be 'auto', 'host' or 'device', got {search!r}")
