"""Reference group selection (pipeline.md §3.3–§3.6) and the group-validity invariants.

Host NumPy/SciPy, written from the reference document: a local legacy `RandomState` stands in
for upstream's global `np.random` (same stream for the same seed), SciPy's `cKDTree` gives
upstream's neighbour (and tie) order. `group_violations` checks groups whose draws cannot be
replayed (unseeded runs, other engines) by the invariants every valid group satisfies.
"""

import itertools
import logging
import math

import numpy as np
from scipy.spatial import cKDTree

logger = logging.getLogger(__name__)


def _query_rows(tree: cKDTree, points: np.ndarray, k: int) -> np.ndarray:
    """Neighbour rows (sorted by distance, tree tie order) as a 2-D int array."""
    _, idx = tree.query(points, k=k)
    idx = np.asarray(idx)
    return idx.reshape(len(points), k) if idx.ndim < 2 else idx


def select_groups(
    positions: np.ndarray,
    *,
    gridsize: int,
    K: int = 4,
    n_groups: int,
    seed: int | None = None,
    sequential: bool = False,
    oversample: bool = False,
    neighbor_pool_size: int | None = None,
) -> np.ndarray:
    """Groups `nn_indices` (B, C) as upstream `generate_grouped_data` draws them (§3).

    Args:
        positions: (n, 2) float64 `[x, y]` scan positions.
        gridsize: g; C = g².
        K: neighbours per seed on the standard path.
        n_groups: requested number of groups.
        seed: seed of the legacy RandomState (upstream: `np.random.seed(seed)`); None draws
            from fresh entropy (upstream: whatever the global state was).
        sequential: seeds 0..B−1 (the RNG is then reseeded with 0, §3.3).
        oversample: allow the K-choose-C path when n_groups > n and C > 1 (§3.6).
        neighbor_pool_size: K of the oversampling path (defaults to K).

    Returns:
        int32 (B, C) for the standard path with C > 1, int64 otherwise (upstream dtypes).

    Raises:
        ValueError: n < C, K < C, or oversampling needed but not enabled.
    """
    pos = np.asarray(positions, dtype=np.float64)
    n = len(pos)
    C = gridsize * gridsize
    k_eff = neighbor_pool_size if neighbor_pool_size is not None else K
    if n_groups > n and C > 1:
        if not oversample:
            raise ValueError(
                f"select_groups: n_groups={n_groups} > n={n} needs K-choose-C oversampling; pass "
                f"oversample=True and neighbor_pool_size >= C={C}"
            )
        if k_eff < C:
            raise ValueError(f"select_groups: neighbor_pool_size={k_eff} must be >= C={C}")
        return _oversampled(pos, C=C, K=k_eff, n_groups=n_groups, seed=seed, sequential=sequential)
    rng = np.random.RandomState(seed if (seed is not None and not sequential) else None)
    if n < C:
        raise ValueError(f"select_groups: dataset has only n={n} points but C={C} per group")
    if K < C:
        raise ValueError(f"select_groups: K={K} must be >= C={C}")
    if sequential:
        seeds = np.arange(min(n_groups, n))
        rng = np.random.RandomState(0)
    else:
        n_actual = min(n_groups, n)
        seeds = rng.choice(np.arange(n), n_actual, replace=False) if n_actual < n else np.arange(n)
    if C == 1:
        return seeds.reshape(-1, 1).astype(np.int64)
    tree = cKDTree(pos)
    rows = _query_rows(tree, pos[seeds], min(K + 1, n))
    groups = np.empty((len(seeds), C), dtype=np.int32)
    for i, (s, row) in enumerate(zip(seeds, rows, strict=True)):
        cand = list(row[1 : K + 1]) if len(row) > K else list(row[:K])
        available = [int(s)] + cand if len(cand) < C else cand
        groups[i] = rng.choice(available, C, replace=len(available) < C)
    return groups


def _oversampled(pos, *, C: int, K: int, n_groups: int, seed, sequential: bool) -> np.ndarray:
    """§3.6: pool of C-combinations of each seed's K nearest, then a draw of `n_groups`."""
    n = len(pos)
    rng = np.random.RandomState(seed)
    if n < C:
        raise ValueError(f"select_groups: dataset has only n={n} points but C={C} per group")
    if K < C:
        raise ValueError(f"select_groups: K={K} must be >= C={C}")
    combos = 1 if C == 1 else math.comb(K, C)
    min_seeds = max(1, math.ceil(n_groups / combos))
    n_seeds = min(2 * min_seeds, n)
    seq = np.arange(min(n_groups, n)) if sequential else None
    if seq is not None and len(seq) >= min_seeds:
        seeds = seq[:n_seeds]
    elif n_seeds < n:
        seeds = rng.choice(np.arange(n), n_seeds, replace=False)
    else:
        seeds = np.arange(n)
    tree = cKDTree(pos)
    k = min(K + 1, n)
    pool: list[tuple[int, ...]] = []
    for s in seeds:
        row = _query_rows(tree, pos[s][None], k)[0]
        cand = (
            list(row)
            if len(row) == 1
            else (list(row[1 : K + 1]) if len(row) > K else list(row[1:]))
        )
        available = [int(s)] + cand if len(cand) < C else cand[:K]
        for combo in itertools.combinations(available, C):  # stop both loops at 2·n_groups
            pool.append(combo)
            if len(pool) >= 2 * n_groups:
                break
        if len(pool) >= 2 * n_groups:
            break
    if not pool:
        raise ValueError("select_groups: the oversampling pool is empty")
    pool_arr = np.asarray(pool, dtype=np.int64)
    replace = n_groups > len(pool_arr)
    if replace:
        logger.warning(
            "select_groups: pool of %d < n_groups=%d, drawing with replacement",
            len(pool_arr),
            n_groups,
        )
    picked = rng.choice(len(pool_arr), n_groups, replace=replace)
    return pool_arr[picked]


def group_violations(
    positions: np.ndarray, nn_indices: np.ndarray, *, gridsize: int, K: int, limit: int = 5
) -> list[str]:
    """Ways `nn_indices` breaks the group-validity invariants (empty list: valid).

    Invariants: shape (B, C) with C = gridsize²; indices in range; no member twice in a group;
    for C > 1 (and n > K) some seed point s outside the group (inside only if s shares its
    position with another point) has every member among its K nearest (distance ≤ the distance
    of its K-th nearest other point, so ties on regular grids are accepted); for C = 1 no seed
    drawn twice.
    """
    pos = np.asarray(positions, dtype=np.float64)
    nn = np.asarray(nn_indices)
    n = len(pos)
    C = gridsize * gridsize
    if nn.ndim != 2 or nn.shape[1] != C:
        return [f"nn_indices: expected shape (B, {C}), got {nn.shape}"]
    if not np.issubdtype(nn.dtype, np.integer):
        return [f"nn_indices: expected integers, got {nn.dtype}"]
    if nn.size and (nn.min() < 0 or nn.max() >= n):
        return [f"nn_indices: values must lie in [0, {n}), got [{nn.min()}, {nn.max()}]"]
    out: list[str] = []
    srt = np.sort(nn, axis=1)
    dup_rows = np.nonzero((srt[:, 1:] == srt[:, :-1]).any(axis=1))[0] if C > 1 else []
    for b in dup_rows[:limit]:
        out.append(f"group {b}: member repeated {nn[b].tolist()}")
    if C == 1:
        vals, counts = np.unique(nn[:, 0], return_counts=True)
        if len(nn) <= n and (counts > 1).any():
            out.append(f"seeds drawn twice: {vals[counts > 1][:limit].tolist()}")
        return out
    if n <= K:
        return out
    tree = cKDTree(pos)
    dists, _ = tree.query(pos, k=K + 1)
    d_k = dists[:, K] * (1 + 1e-12) + 1e-12  # K-th nearest other point (self at distance 0)
    has_twin = dists[:, 1] == 0.0  # another point at the same position
    r_max = float(d_k.max())
    bad = 0
    for b, members in enumerate(nn):
        cands = np.asarray(tree.query_ball_point(pos[members[0]], r_max), dtype=np.int64)
        if cands.size:
            d = np.linalg.norm(pos[cands][:, None, :] - pos[members][None, :, :], axis=-1)
            inside = np.isin(cands, members)
            ok = (d.max(axis=1) <= d_k[cands]) & (~inside | has_twin[cands])
            if ok.any():
                continue
        bad += 1
        if bad <= limit:
            out.append(
                f"group {b}: members {members.tolist()} are not among the K={K} nearest "
                "of any seed point"
            )
    if bad > limit:
        out.append(f"... {bad - limit} more groups not among the K nearest of any seed")
    return out
