"""Grouping scan positions into neighbour groups of C = gridsize² and building the grouped arrays (pipeline.md §3).

Group *selection* (which positions form a group) is host work: upstream draws from NumPy's legacy
RNG and SciPy's KD-tree, and exact reproduction needs both, with a local `RandomState` instead of
the global one. Everything after selection — gather, coordinates, normalisation, patches — is jitted.
"""

import dataclasses
import itertools
import logging
import math
import warnings
from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Float32

from ._coords import group_coordinates
from ._errors import GroupingError
from ._neighbours import jax_neighbours, kdtree_neighbours
from ._normalize import check_variant, normalize_data
from ._rawdata import RawData
from ._types import Amplitudes, HostCoords, HostGroups, HostOffsets, Patches

logger = logging.getLogger(__name__)

Engine = Literal["scipy", "jax"]
PatchPositions = Literal["upstream", "member"]


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
        raise GroupingError(f"group: dataset has only n={n} positions but C=gridsize²={C} positions per group were requested (need n >= C)")
    if K < C:
        raise GroupingError(f"group: K={K} neighbours must be >= C=gridsize²={C}")


def _standard_groups(positions, seed_indices, *, C: int, K: int, rng, variant: str) -> np.ndarray:
    """pipeline.md §3.5: each group = C draws from the K nearest neighbours of its seed."""
    n = positions.shape[0]
    k = min(K + 1, n)
    rows = kdtree_neighbours(positions, seed_indices, k=k)
    groups = np.empty((len(seed_indices), C), np.int32)
    duplicates = 0
    for i, (s, row) in enumerate(zip(seed_indices, rows)):
        if len(row) > K:
            candidates = row[1 : K + 1]
            duplicates += int(row[0] != s)
        else:
            candidates = row[:K]
        available = np.concatenate([[s], candidates]) if len(candidates) < C else candidates
        groups[i] = rng.choice(available, C, replace=len(available) < C)
    if duplicates:
        warnings.warn(
            f"group: for {duplicates} seed(s) the nearest KD-tree neighbour was another point at the same "
            "position; upstream drops it and keeps the seed in its own group (reproduced, variant "
            f"{variant!r})",
            DuplicatePositionWarning,
            stacklevel=3,
        )
    return groups


def _oversampled_groups(positions, *, C: int, K: int, nsamples: int, sequential: bool, rng) -> np.ndarray:
    """pipeline.md §3.6: K-choose-C combinations around seeds, then `nsamples` of them."""
    n = positions.shape[0]
    combos_per_seed = math.comb(K, C)
    min_seeds = max(1, math.ceil(nsamples / combos_per_seed))
    n_seeds = min(2 * min_seeds, n)
    sequential_seeds = np.arange(min(nsamples, n))
    if sequential and len(sequential_seeds) >= min_seeds:
        seeds = sequential_seeds[:n_seeds]
    elif n_seeds < n:
        seeds = rng.choice(np.arange(n), n_seeds, replace=False)
    else:
        seeds = np.arange(n)
    k = min(K + 1, n)
    rows = kdtree_neighbours(positions, np.asarray(seeds), k=k)
    pool: list[tuple[int, ...]] = []
    for s, row in zip(seeds, rows):
        if len(row) == 1:
            candidates = row
        elif len(row) > K:
            candidates = row[1 : K + 1]
        else:
            candidates = row[1:]
        available = np.concatenate([[s], candidates]) if len(candidates) < C else candidates[:K]
        for combo in itertools.combinations(available.tolist(), C):
            pool.append(combo)
            if len(pool) >= 2 * nsamples:
                break
        if len(pool) >= 2 * nsamples:
            break
    if not pool:
        raise GroupingError(f"group: oversampling produced no candidate groups (n={n}, K={K}, C={C})")
    replace = nsamples > len(pool)
    if replace:
        warnings.warn(
            f"group: only {len(pool)} candidate groups for nsamples={nsamples}; drawing with replacement",
            UserWarning,
            stacklevel=3,
        )
    picked = rng.choice(len(pool), nsamples, replace=replace)
    return np.asarray(pool, np.int64)[picked]


def _jax_groups(positions, seed_indices, *, C: int, K: int, key) -> np.ndarray:
    """Pure-JAX selection: C random members among the K nearest other positions of each seed."""
    candidates = jax_neighbours(positions, seed_indices, k=K)  # (S, K), seed excluded
    order = jnp.argsort(jr.uniform(key, candidates.shape), axis=1)[:, :C]
    return np.asarray(jnp.take_along_axis(jnp.asarray(candidates), order, axis=1)).astype(np.int32)


def select_groups(
    positions: np.ndarray,
    *,
    gridsize: int,
    K: int = 4,
    nsamples: int,
    seed: int | None = None,
    sequential: bool = False,
    oversample: bool = False,
    neighbor_pool_size: int | None = None,
    engine: Engine = "scipy",
    key: jax.Array | None = None,
    variant: str = "main",
) -> HostGroups:
    """Choose the (B, C) position indices of each group, as upstream `generate_grouped_data` does.

    With `engine="scipy"` and a `seed`, the groups are identical to upstream's for the same seed
    (local `RandomState(seed)`, SciPy's cKDTree tie order). Sequential mode uses seeds 0..B−1 and
    `RandomState(0)` (upstream reseeds with 0 and ignores `seed`). `engine="jax"` is a jitted
    cell-list search for large inputs; its groups satisfy the same invariants but not the same draws.

    Returns:
        int32 (B, C) for C > 1 on the standard path, int64 for C = 1 and for oversampling (as upstream).
    """
    n = positions.shape[0]
    C = gridsize * gridsize
    k_eff = neighbor_pool_size if neighbor_pool_size is not None else K
    needs_oversampling = nsamples > n and C > 1
    if needs_oversampling:
        if not oversample:
            raise GroupingError(
                f"group: nsamples={nsamples} > n={n} positions needs K-choose-C oversampling; pass "
                f"oversample=True and neighbor_pool_size >= C={C}"
            )
        if k_eff < C:
            raise GroupingError(f"group: neighbor_pool_size={k_eff} must be >= C={C} for oversampling")
        _validate_counts(n, C, k_eff)
        if engine != "scipy":
            raise GroupingError("group: oversampling is implemented for engine='scipy' only")
        return _oversampled_groups(positions, C=C, K=k_eff, nsamples=nsamples, sequential=sequential, rng=_legacy_rng(seed))

    _validate_counts(n, C, K)
    if sequential:
        seed_indices = np.arange(min(nsamples, n))
        rng = _legacy_rng(0)
    else:
        rng = _legacy_rng(seed)
        n_actual = min(nsamples, n)
        if n_actual < nsamples:
            logger.warning("group: nsamples=%d capped at the n=%d available positions", nsamples, n)
        if engine == "jax":
            key = _key_for(key, seed)
            seed_key, key = jr.split(key)
            seed_indices = np.asarray(jr.permutation(seed_key, n)[:n_actual]) if n_actual < n else np.arange(n)
        else:
            seed_indices = rng.choice(np.arange(n), n_actual, replace=False) if n_actual < n else np.arange(n)
    if C == 1:
        return np.asarray(seed_indices, np.int64).reshape(-1, 1)
    if engine == "jax":
        if n <= K:  # upstream's tiny-dataset rule (self kept) has no equivalent worth having
            raise GroupingError(f"group: engine='jax' needs n > K, got n={n}, K={K}; use engine='scipy'")
        return _jax_groups(positions, seed_indices, C=C, K=K, key=_key_for(key, seed) if sequential else key)
    if engine != "scipy":
        raise GroupingError(f"group: engine must be 'scipy' or 'jax', got {engine!r}")
    return _standard_groups(positions, seed_indices, C=C, K=K, rng=rng, variant=variant)


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
def gather_frames(diff3d: Float32[Array, "M N N"], nn: jax.Array) -> Amplitudes:
    """`diffraction[b, :, :, c] = diff3d[nn[b, c]]` (a gather, group axis moved last)."""
    return jnp.moveaxis(diff3d[nn], 1, -1)


@jax.jit
def _gather_patches(Y: jax.Array, nn: jax.Array) -> Patches:
    return jnp.moveaxis(Y[nn][..., 0], 1, -1)


def _check_nn_indices(nn_indices, n: int, C: int) -> np.ndarray:
    nn = np.asarray(nn_indices)
    if nn.ndim != 2 or nn.shape[1] != C or nn.shape[0] < 1:
        raise GroupingError(f"group: nn_indices must have shape (B, C={C}) with B >= 1, got {nn.shape}")
    if not np.issubdtype(nn.dtype, np.integer):
        raise GroupingError(f"group: nn_indices must be integers, got dtype {nn.dtype}")
    if nn.min() < 0 or nn.max() >= n:
        raise GroupingError(f"group: nn_indices must lie in [0, {n}), got values in [{nn.min()}, {nn.max()}]")
    return nn


def _check_positive_int(name: str, v, minimum: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum:
        raise GroupingError(f"group: {name} must be an int >= {minimum}, got {v!r}")
    return int(v)


def choose_groups(
    positions: np.ndarray,
    *,
    frame_size: int,
    N: int,
    gridsize: int,
    K: int,
    nsamples: int,
    seed: int | None,
    sequential: bool,
    oversample: bool,
    neighbor_pool_size: int | None,
    nn_indices: HostGroups | None,
    variant: str,
    engine: Engine,
    key: jax.Array | None,
    patch_positions: str,
    where: str = "group",
) -> tuple[int, HostGroups]:
    """Validate `group`'s arguments and return `(N, nn_indices)`: the injected groups, checked, or fresh ones."""
    check_variant(variant)
    gridsize = _check_positive_int("gridsize", gridsize)
    N = _check_positive_int("N", N)
    K = _check_positive_int("K", K)
    nsamples = _check_positive_int("nsamples", nsamples)
    if N != frame_size:
        raise GroupingError(f"{where}: N={N} does not match the frame size {frame_size} of raw.diff3d")
    if patch_positions not in ("upstream", "member"):
        raise GroupingError(f"{where}: patch_positions must be 'upstream' or 'member', got {patch_positions!r}")
    if nn_indices is not None:
        return N, _check_nn_indices(nn_indices, positions.shape[0], gridsize * gridsize)
    nn = select_groups(
        positions,
        gridsize=gridsize,
        K=K,
        nsamples=nsamples,
        seed=seed,
        sequential=sequential,
        oversample=oversample,
        neighbor_pool_size=neighbor_pool_size,
        engine=engine,
        key=key,
        variant=variant,
    )
    return N, nn


def warn_if_mirrored(C: int, patch_positions: str, *, stacklevel: int) -> None:
    """Announce upstream's mirrored patch positions (pipeline.md §5.4) when they apply."""
    if patch_positions == "upstream" and C > 1:
        warnings.warn(
            "group: Y cut from objectGuess at upstream's positions (global + local offsets), which for "
            "gridsize > 1 mirror each member through its group centre (pipeline.md §5.4); pass "
            "patch_positions='member' for patches at the scan positions",
            MirroredPatchWarning,
            stacklevel=stacklevel + 1,
        )


def group(
    raw: RawData,
    *,
    N: int,
    gridsize: int,
    K: int = 4,
    nsamples: int,
    seed: int | None = None,
    sequential: bool = False,
    oversample: bool = False,
    neighbor_pool_size: int | None = None,
    nn_indices: HostGroups | None = None,
    variant: Literal["main", "seed"] = "main",
    engine: Engine = "scipy",
    key: jax.Array | None = None,
    patch_positions: PatchPositions = "upstream",
) -> GroupedData:
    """Group scan positions and build the grouped arrays, as upstream `RawData.generate_grouped_data`.

    Args:
        raw: the scan.
        N: frame size (must match `raw.diff3d`).
        gridsize: g; each group has C = g² members.
        K: neighbours considered per seed (standard path).
        nsamples: number of groups B (capped at n unless oversampling).
        seed: seeds a local legacy `RandomState`, giving upstream's groups for the same seed.
        sequential: seeds 0..B−1 in order (upstream then reseeds with 0).
        oversample: allow K-choose-C oversampling when nsamples > n (C > 1).
        neighbor_pool_size: K for the oversampling path (defaults to K).
        nn_indices: inject (B, C) groups and skip selection (removes randomness for cross-checks).
        variant: "main" or "seed" (normalisation numerics, pipeline.md §6).
        engine: "scipy" (exact upstream groups) or "jax" (jitted cell-list search for large inputs).
        key: PRNG key for `engine="jax"` (derived from `seed` when omitted).
        patch_positions: where object patches `Y` are cut when `raw.Y` is absent: "upstream" (the
            literal upstream positions — for C > 1 mirrored through the group centre, §5.4) or
            "member" (each member's own scan position).

    Returns:
        GroupedData with the upstream grouped-dict fields and `normalize_gain`.

    Raises:
        GroupingError: inconsistent parameters (n < C, K < C, gridsize < 1, N ≠ frame size, bad nn_indices, ...).
    """
    N, nn = choose_groups(
        raw.positions(),
        frame_size=raw.N,
        N=N,
        gridsize=gridsize,
        K=K,
        nsamples=nsamples,
        seed=seed,
        sequential=sequential,
        oversample=oversample,
        neighbor_pool_size=neighbor_pool_size,
        nn_indices=nn_indices,
        variant=variant,
        engine=engine,
        key=key,
        patch_positions=patch_positions,
    )
    return grouped_from_indices(raw, nn, N=N, variant=variant, patch_positions=patch_positions)


def grouped_from_indices(
    raw: RawData,
    nn: HostGroups,
    *,
    N: int,
    variant: str = "main",
    patch_positions: PatchPositions = "upstream",
    frames: jax.Array | None = None,
) -> GroupedData:
    """Build the grouped arrays for given groups `nn` (pipeline.md §3.8).

    `frames` is a device copy of `raw.diff3d` the caller already holds (else one is made).
    """
    C = nn.shape[1]
    coords = group_coordinates(raw.xcoords, raw.ycoords, nn, variant=variant)
    start = group_coordinates(raw.xcoords_start, raw.ycoords_start, nn, variant=variant)
    nn_dev = jnp.asarray(nn)
    diffraction = gather_frames(jnp.asarray(raw.diff3d) if frames is None else frames, nn_dev)
    X_full, gain = normalize_data(diffraction, N, variant=variant)
    if raw.Y is not None:
        Y = _gather_patches(jnp.asarray(raw.Y), nn_dev)
    elif raw.objectGuess is not None:
        warn_if_mirrored(C, patch_positions, stacklevel=3)
        from ._patches import extract_group_patches, group_patch_centres

        centres = group_patch_centres(coords[1], coords[2], coords[0], positions=patch_positions)
        Y = extract_group_patches(raw.objectGuess, centres, N=N, C=C)
    else:
        Y = None
    return GroupedData(
        diffraction=diffraction,
        X_full=X_full,
        normalize_gain=gain,
        coords_nn=coords[0],
        coords_offsets=coords[1],
        coords_relative=coords[2],
        coords_start_nn=start[0],
        coords_start_offsets=start[1],
        coords_start_relative=start[2],
        nn_indices=nn,
        Y=Y,
        objectGuess=raw.objectGuess,
    )
