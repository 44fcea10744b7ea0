"""Grouping scan positions into neighbour groups of C = gridsize² (pipeline.md §3): selection, the frame gather, `GroupedData`.

Group *selection* (which positions form a group) is host work: upstream draws from NumPy's legacy
RNG and SciPy's KD-tree, and exact reproduction needs both, with a local `RandomState` instead of
the global one. Everything after selection — gather, coordinates, normalisation, patches — is jitted
and runs in the chain (`_pipeline.group`).
"""

import dataclasses
import itertools
import logging
import math
import warnings
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jax.typing import ArrayLike
from jaxtyping import Array, Float32, Int, Shaped

from ._errors import GroupingError
from ._gain import apply_gain
from ._neighbours import jax_neighbours, upstream_neighbours
from ._params import ChainParams, NeighbourSearch, PatchPositions, VariantName
from ._rawdata import aligned_empty, host_map
from ._types import Amplitudes, HostCoords, HostGroups, HostOffsets, Patches

logger = logging.getLogger(__name__)


class DuplicatePositionWarning(UserWarning):
    """A KD-tree query returned another point before the seed itself (duplicate positions); upstream then keeps the seed in its own group."""


class MirroredPatchWarning(UserWarning):
    """Upstream's objectGuess patch fallback for C > 1 samples each member reflected through the group centre."""


# -- selection -----------------------------------------------------------------------------------
def _legacy_rng(seed: int | None) -> np.random.RandomState:
    # Same stream as upstream's np.random.seed(seed); None draws fresh OS entropy like an unseeded run.
    return np.random.RandomState(seed)


def _validate_counts(n: int, C: int, K: int) -> None:
    if n < C:
        raise GroupingError(
            f"group: dataset has only n={n} positions but C=gridsize²={C} positions per group were requested (need n >= C)"
        )
    if K < C:
        raise GroupingError(f"group: K={K} neighbours must be >= C=gridsize²={C}")


def _draw_members(candidates: np.ndarray, C: int, rng: np.random.RandomState) -> np.ndarray:
    """Row i: `rng.choice(candidates[i], C, replace=False)` for every i in turn, the same draws.

    Legacy `choice` without replacement is `permutation(pop)[:C]`, a Fisher-Yates shuffle of
    `arange(pop)`; shuffling each row of an `arange` table in place consumes the stream in the same
    order without `choice`'s per-call overhead (5,000 groups: 34 -> 4 ms).
    """
    order = np.broadcast_to(np.arange(candidates.shape[1]), candidates.shape).copy()
    shuffle = rng.shuffle
    for row in order:
        shuffle(row)
    return np.take_along_axis(candidates, order[:, :C], axis=1).astype(np.int32)


def _standard_groups(
    positions,
    seed_indices,
    *,
    C: int,
    K: int,
    rng,
    variant: VariantName,
    search: NeighbourSearch,
) -> np.ndarray:
    """pipeline.md §3.5: each group = C draws from the K nearest neighbours of its seed."""
    n = positions.shape[0]
    k = min(K + 1, n)
    rows = upstream_neighbours(positions, seed_indices, k=k, search=search)
    if k > K:  # the seed's row holds it (or a twin) first, then K candidates
        candidates = rows[:, 1 : K + 1]
        duplicates = int(np.count_nonzero(rows[:, 0] != np.asarray(seed_indices)))
    else:
        candidates, duplicates = rows[:, :K], 0
    # n >= C and K >= C (validated), so min(K, n) >= C candidates: upstream's seed-joins-its-
    # candidates rule for fewer than C never applies, and members never repeat.
    groups = _draw_members(candidates, C, rng)
    if duplicates:
        warnings.warn(
            f"group: for {duplicates} seed(s) the nearest KD-tree neighbour was another point at the same "
            "position; upstream drops it and keeps the seed in its own group (reproduced, variant "
            f"{variant!r})",
            DuplicatePositionWarning,
            stacklevel=3,
        )
    return groups


def _oversampled_groups(
    positions,
    *,
    C: int,
    K: int,
    n_groups: int,
    sequential: bool,
    rng,
    search: NeighbourSearch,
) -> np.ndarray:
    """pipeline.md §3.6: K-choose-C combinations around seeds, then `n_groups` of them."""
    n = positions.shape[0]
    combos_per_seed = math.comb(K, C)
    min_seeds = max(1, math.ceil(n_groups / combos_per_seed))
    n_seeds = min(2 * min_seeds, n)
    sequential_seeds = np.arange(min(n_groups, n))
    if sequential and len(sequential_seeds) >= min_seeds:
        seeds = sequential_seeds[:n_seeds]
    elif n_seeds < n:
        seeds = rng.choice(np.arange(n), n_seeds, replace=False)
    else:
        seeds = np.arange(n)
    k = min(K + 1, n)
    rows = upstream_neighbours(positions, np.asarray(seeds), k=k, search=search)
    pool: list[tuple[int, ...]] = []
    for s, row in zip(seeds, rows, strict=True):
        if len(row) == 1:
            candidates = row
        elif len(row) > K:
            candidates = row[1 : K + 1]
        else:
            candidates = row[1:]
        available = np.concatenate([[s], candidates]) if len(candidates) < C else candidates[:K]
        for combo in itertools.combinations(available.tolist(), C):
            pool.append(combo)
            if len(pool) >= 2 * n_groups:
                break
        if len(pool) >= 2 * n_groups:
            break
    if not pool:
        raise GroupingError(
            f"group: oversampling produced no candidate groups (n={n}, K={K}, C={C})"
        )
    replace = n_groups > len(pool)
    if replace:
        warnings.warn(
            f"group: only {len(pool)} candidate groups for n_groups={n_groups}; drawing with replacement",
            UserWarning,
            stacklevel=3,
        )
    picked = rng.choice(len(pool), n_groups, replace=replace)
    return np.asarray(pool, np.int64)[picked]


def _jax_groups(positions, seed_indices, *, C: int, K: int, key) -> np.ndarray:
    """Pure-JAX selection: C random members among the K nearest other positions of each seed."""
    candidates = jax_neighbours(positions, seed_indices, k=K)  # (S, K), seed excluded
    order = jnp.argsort(jr.uniform(key, candidates.shape), axis=1)[:, :C]
    return np.asarray(jnp.take_along_axis(jnp.asarray(candidates), order, axis=1)).astype(np.int32)


def select_groups(
    positions: np.ndarray,
    params: ChainParams | None = None,
    *,
    nn_indices: ArrayLike | None = None,
    key: jax.Array | None = None,
    **fields: Any,
) -> HostGroups:
    """Choose the (B, C) position indices of each group, as upstream `generate_grouped_data` does.

    With `engine="scipy"` and a `seed`, the groups are identical to upstream's for the same seed
    (local `RandomState(seed)`, SciPy's cKDTree tie order; `neighbour_search` says whether the
    neighbours come from cKDTree on the host or from `device_neighbours`, which returns the same
    indices). Sequential mode uses seeds 0..B−1 and `RandomState(0)` (upstream reseeds with 0 and
    ignores `seed`). `engine="jax"` is a jitted cell-list search for large inputs; its groups
    satisfy the same invariants but not the same draws.

    Args:
        positions: (n, 2) float64 `[x, y]` scan positions.
        params: the chain parameters (gridsize, K, n_groups, seed, sequential, oversample,
            neighbor_pool_size, engine, neighbour_search, variant are read); `fields` replace
            some of them (`select_groups(p, gridsize=2, n_groups=8)`).
        nn_indices: inject (B, C) groups: they are checked and returned, nothing is drawn.
        key: PRNG key for `engine="jax"` (derived from `seed` when omitted).

    Returns:
        int32 (B, C) for C > 1 on the standard path, int64 for C = 1 and for oversampling (as upstream).

    Raises:
        GroupingError: n < C, K < C, bad `nn_indices`, oversampling needed but off, ...
    """
    p = dataclasses.replace(params or ChainParams(), **fields)
    n, C = positions.shape[0], p.C
    if nn_indices is not None:
        return _check_nn_indices(nn_indices, n, C)
    if p.n_groups > n and C > 1:
        return _oversampled_selection(positions, p)
    _validate_counts(n, C, p.K)
    seed_indices, rng, key = _seed_positions(n, p, key)
    if C == 1:
        return np.asarray(seed_indices, np.int64).reshape(-1, 1)
    if p.engine == "jax":
        if n <= p.K:  # upstream's tiny-dataset rule (self kept) has no equivalent worth having
            raise GroupingError(
                f"group: engine='jax' needs n > K, got n={n}, K={p.K}; use engine='scipy'"
            )
        return _jax_groups(
            positions, seed_indices, C=C, K=p.K, key=_key_for(key, p.seed) if p.sequential else key
        )
    return _standard_groups(
        positions,
        seed_indices,
        C=C,
        K=p.K,
        rng=rng,
        variant=p.variant,
        search=p.neighbour_search,
    )


def _oversampled_selection(positions: np.ndarray, p: ChainParams) -> HostGroups:
    """More groups than positions: upstream's K-choose-C oversampling, or the error saying so."""
    n, C, n_groups = positions.shape[0], p.C, p.n_groups
    k_eff = p.neighbor_pool_size if p.neighbor_pool_size is not None else p.K
    if not p.oversample:
        raise GroupingError(
            f"group: n_groups={n_groups} > n={n} positions needs K-choose-C oversampling; pass "
            f"oversample=True and neighbor_pool_size >= C={C}"
        )
    if k_eff < C:
        raise GroupingError(f"group: neighbor_pool_size={k_eff} must be >= C={C} for oversampling")
    _validate_counts(n, C, k_eff)
    if p.engine != "scipy":
        raise GroupingError("group: oversampling is implemented for engine='scipy' only")
    return _oversampled_groups(
        positions,
        C=C,
        K=k_eff,
        n_groups=n_groups,
        sequential=p.sequential,
        rng=_legacy_rng(p.seed),
        search=p.neighbour_search,
    )


def _seed_positions(n: int, p: ChainParams, key: jax.Array | None):
    """The seed position of each group, the RandomState that drew them (upstream's stream goes on
    drawing the neighbours from it) and what is left of `key` for engine "jax"."""
    if p.sequential:  # upstream reseeds with 0 and takes the first positions in order
        return np.arange(min(p.n_groups, n)), _legacy_rng(0), key
    rng = _legacy_rng(p.seed)
    n_actual = min(p.n_groups, n)
    if n_actual < p.n_groups:
        logger.warning("group: n_groups=%d capped at the n=%d available positions", p.n_groups, n)
    if p.engine == "jax":
        seed_key, key = jr.split(_key_for(key, p.seed))
        seeds = np.asarray(jr.permutation(seed_key, n)[:n_actual]) if n_actual < n else np.arange(n)
    else:
        seeds = rng.choice(np.arange(n), n_actual, replace=False) if n_actual < n else np.arange(n)
    return seeds, rng, key


def _key_for(key, seed):
    if key is not None:
        return key
    if seed is None:
        raise GroupingError("group: engine='jax' needs an explicit `key` or `seed`")
    return jr.key(seed)


# -- grouped arrays ------------------------------------------------------------------------------
class GroupedData(eqx.Module):
    """Grouped diffraction, coordinates and patches: upstream's grouped dict, plus `normalize_gain`.

    Float32/complex64 arrays live on the device; float64 coordinates and indices stay on the host
    as NumPy (exactness without process-wide x64). Axis 2 of the coordinate arrays is [x, y].
    """

    diffraction: Amplitudes
    X_full: Amplitudes
    normalize_gain: Float32[Array, ""]
    coords_nn: HostCoords
    coords_offsets: HostOffsets
    coords_relative: HostCoords
    coords_start_nn: HostCoords
    coords_start_offsets: HostOffsets
    coords_start_relative: HostCoords
    nn_indices: HostGroups
    Y: Patches | None
    objectGuess: np.ndarray | None = None

    @property
    def gridsize(self) -> int:
        return int(round(math.sqrt(self.nn_indices.shape[1])))

    def __len__(self) -> int:
        return int(self.nn_indices.shape[0])

    def as_dict(self) -> dict:
        """The fields as a plain dict keyed like upstream's grouped dict."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


@jax.jit
def gather_frames(
    diff3d: Shaped[Array, "M N N"], nn: Int[Array, "B C"]
) -> Shaped[Array, "B N N C"]:
    """`out[b, :, :, c] = diff3d[nn[b, c]]` (a gather, group axis moved last): frames or complex patches."""
    return jnp.moveaxis(diff3d[nn], 1, -1)


@jax.jit
def gather_and_scale(
    diff3d: Float32[Array, "M N N"], nn: Int[Array, "B C"], gain: Float32[Array, ""]
) -> tuple[Float32[Array, "B N N C"], Float32[Array, "B N N C"]]:
    """`(D, gain · D)` with `D = gather_frames(diff3d, nn)`, one program: the frames are read once
    and both stacks written from them (off the CPU; there `gather_frames_host(..., gain=)`)."""
    D = gather_frames(diff3d, nn)
    return D, apply_gain(D, gain)


def gather_frames_host(
    rows: np.ndarray, nn: np.ndarray, out_rows: int | None = None, *, gain: np.float32 | None = None
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """`gather_frames` on the host: `out[b, :, :, c] = rows[nn[b, c]]`, a 64-byte-aligned
    (out_rows, N, N, C) array (default out_rows = B; rows from B on are zero), in row blocks on a
    few threads. A copy, so the same bits; on a CPU NumPy's fresh buffers (huge pages) make it
    about 2x faster than XLA's gather.

    With `gain`, also `X = gain · out` from the same pass (each block scaled while it is in cache;
    elementwise, so the same bits as a separate multiply): returns `(out, X)`.
    """
    B, C = nn.shape
    shape = (B if out_rows is None else out_rows, *rows.shape[1:], C)
    out = aligned_empty(shape, rows.dtype)
    scaled = None if gain is None else aligned_empty(shape, rows.dtype)
    flat_out = out.reshape(out.shape[0], -1, C)
    flat_rows = rows.reshape(rows.shape[0], -1)

    def work(block: slice) -> None:
        for c in range(C):
            flat_out[block, :, c] = flat_rows[nn[block, c]]
        if scaled is not None:
            apply_gain(out[block], gain, out=scaled[block])

    host_map(work, B)
    out[B:] = 0
    if scaled is None:
        return out
    scaled[B:] = 0
    return out, scaled


def _check_nn_indices(nn_indices, n: int, C: int) -> np.ndarray:
    nn = np.asarray(nn_indices)
    if nn.ndim != 2 or nn.shape[1] != C or nn.shape[0] < 1:
        raise GroupingError(
            f"group: nn_indices must have shape (B, C={C}) with B >= 1, got {nn.shape}"
        )
    if not np.issubdtype(nn.dtype, np.integer):
        raise GroupingError(f"group: nn_indices must be integers, got dtype {nn.dtype}")
    if nn.min() < 0 or nn.max() >= n:
        raise GroupingError(
            f"group: nn_indices must lie in [0, {n}), got values in [{nn.min()}, {nn.max()}]"
        )
    return nn


def warn_if_mirrored(C: int, patch_positions: PatchPositions, *, stacklevel: int) -> None:
    """Announce upstream's mirrored patch positions (pipeline.md §5.4) when they apply."""
    if patch_positions == "upstream" and C > 1:
        warnings.warn(
            "group: Y cut from objectGuess at upstream's positions (global + local offsets), which for "
            "gridsize > 1 mirror each member through its group centre (ptycho-jax specs/pipeline.md §5); pass "
            "patch_positions='member' for patches at the scan positions",
            MirroredPatchWarning,
            stacklevel=stacklevel + 1,
        )
