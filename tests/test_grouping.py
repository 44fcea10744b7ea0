"""Grouping: upstream selection rules, validation errors, warnings, and the JAX engine's invariants."""

import typing
import warnings

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from _compile_count import count_compiles
from _invariants import invariant_violations
from helpers import make_raw

import ptycho_jax as pj

# Most tests here cut patches at upstream's (mirrored) positions; the warning has its own test.
pytestmark = pytest.mark.filterwarnings("ignore::ptycho_jax.MirroredPatchWarning")


def grid_raw(side=6, n=8, spacing=5.0, duplicate=False) -> pj.RawData:
    xs, ys = np.meshgrid(np.arange(side) * spacing + 20, np.arange(side) * spacing + 20)
    x, y = xs.ravel().astype(np.float64), ys.ravel().astype(np.float64)
    if duplicate:
        x[1], y[1] = x[0], y[0]
    m = x.size
    rng = np.random.default_rng(1)
    return make_raw(
        m=m,
        n=n,
        xcoords=x,
        ycoords=y,
        xcoords_start=x.copy(),
        ycoords_start=y.copy(),
        diff3d=rng.random((m, n, n), dtype=np.float32),
        scan_index=np.zeros(m, np.int64),
    )


def test_standard_groups_are_k_nearest_excluding_seed():
    raw = make_raw(m=40, n=8)
    g = pj.group(raw, N=8, gridsize=2, K=4, n_groups=10, seed=3)
    assert g.nn_indices.dtype == np.int32 and g.nn_indices.shape == (10, 4)
    assert invariant_violations(raw.positions(), g.nn_indices, K=4) == []


def test_seed_reproducible_and_independent_of_global_rng():
    raw = make_raw(m=40, n=8)
    np.random.seed(0)
    a = pj.group(raw, N=8, gridsize=2, n_groups=10, seed=7).nn_indices
    state = np.random.get_state()[1].copy()
    b = pj.group(raw, N=8, gridsize=2, n_groups=10, seed=7).nn_indices
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(
        np.random.get_state()[1], state
    )  # the global RNG is never touched


def test_gridsize1_all_positions_in_order_when_nsamples_exceeds_n():
    raw = make_raw(m=12, n=8)
    g = pj.group(raw, N=8, gridsize=1, n_groups=50, seed=1)
    np.testing.assert_array_equal(g.nn_indices[:, 0], np.arange(12))
    assert g.nn_indices.dtype == np.int64
    np.testing.assert_array_equal(g.coords_relative, np.zeros_like(g.coords_relative))
    assert np.signbit(g.coords_relative).all()  # upstream's −0.0


def test_sequential_uses_first_seeds_and_ignores_seed():
    raw = make_raw(m=30, n=8)
    a = pj.group(raw, N=8, gridsize=2, n_groups=8, sequential=True, seed=1).nn_indices
    b = pj.group(raw, N=8, gridsize=2, n_groups=8, sequential=True, seed=99).nn_indices
    np.testing.assert_array_equal(a, b)
    # Replay upstream's rule: RandomState(0), seeds 0..7, choice among the 4 nearest others.
    from scipy.spatial import cKDTree

    _, rows = cKDTree(raw.positions()).query(raw.positions()[:8], k=5)
    rng = np.random.RandomState(0)
    expected = np.array([rng.choice(r[1:], 4, replace=False) for r in rows])
    np.testing.assert_array_equal(a, expected)


def test_coordinate_worked_example():
    x = np.array([10.0, 12, 10, 12])
    y = np.array([20.0, 20, 22, 22])
    nn, off, rel = pj.group_coordinates(x, y, np.array([[0, 1, 2, 3]]))
    np.testing.assert_array_equal(off[0, 0, :, 0], [11, 21])
    np.testing.assert_array_equal(rel[0, 0, 0], [1, -1, 1, -1])
    np.testing.assert_array_equal(rel[0, 0, 1], [1, 1, -1, -1])


@pytest.mark.parametrize("C", [2, 4, 7, 8, 9, 16, 25])
def test_coordinate_mean_matches_numpy_order(C):
    rng = np.random.default_rng(C)
    x, y = rng.uniform(0, 500, 200), rng.uniform(0, 500, 200)
    nn = rng.integers(0, 200, (64, C))
    members, off, rel = pj.group_coordinates(x, y, nn)
    ref_members = np.stack([x[nn], y[nn]], axis=1)[:, None]
    ref_off = np.mean(ref_members, axis=3, keepdims=True)  # NumPy's own (upstream's) mean
    assert off.tobytes() == ref_off.tobytes()
    assert rel.tobytes() == (-1.0 * (ref_members - ref_off)).tobytes()


def test_duplicate_positions_warn_and_keep_upstream_result():
    raw = grid_raw(duplicate=True)
    with pytest.warns(pj.DuplicatePositionWarning, match="same position"):
        for s in range(20):
            pj.group(raw, N=8, gridsize=2, n_groups=36, seed=s)


def test_oversampling_requires_opt_in_and_draws_combinations():
    raw = make_raw(m=10, n=8)
    with pytest.raises(pj.GroupingError, match="oversample=True"):
        pj.group(raw, N=8, gridsize=2, n_groups=25, seed=0)
    with pytest.raises(pj.GroupingError, match="neighbor_pool_size=3 must be >= C=4"):
        pj.group(raw, N=8, gridsize=2, n_groups=25, seed=0, oversample=True, neighbor_pool_size=3)
    g = pj.group(raw, N=8, gridsize=2, n_groups=25, seed=0, oversample=True, neighbor_pool_size=6)
    assert g.nn_indices.shape == (25, 4) and g.nn_indices.dtype == np.int64
    assert all(len(set(r)) == 4 for r in g.nn_indices.tolist())


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(gridsize=0), r"gridsize must be an int >= 1, got 0"),
        (dict(N=0), r"N must be an int >= 1, got 0"),
        (dict(N=16), r"N=16 does not match the frame size 8"),
        (dict(n_groups=0), r"n_groups must be an int >= 1, got 0"),
        (dict(K=3), r"K=3 neighbours must be >= C=gridsize²=4"),
        (dict(gridsize=3), r"only n=6 positions but C=gridsize²=9"),
        (
            dict(nn_indices=np.array([[0, 1, 2, 6]])),
            r"nn_indices must lie in \[0, 6\), got values in \[0, 6\]",
        ),
        (dict(nn_indices=np.array([[0, 1, 2]])), r"nn_indices must have shape \(B, C=4\)"),
        (dict(nn_indices=np.array([[0.0, 1, 2, 3]])), r"nn_indices must be integers"),
        (dict(variant="dose"), r"variant: expected one of"),
        (dict(patch_positions="centre"), r"patch_positions must be"),
        (dict(engine="faiss"), r"engine must be"),
    ],
)
def test_group_errors(kwargs, match):
    raw = make_raw(m=6, n=8)
    args = dict(N=8, gridsize=2, K=4, n_groups=3, seed=0) | kwargs
    with pytest.raises(pj.PtychoInputError, match=match):
        pj.group(raw, **args)


def test_closed_choices_come_from_their_literal_types():
    from ptycho_jax import _params, _variants
    from ptycho_jax.app.chain_flags import CLOSED_CHOICES

    assert _variants.VARIANT_NAMES == ("main", "seed") == tuple(_variants.VARIANTS)
    assert _params.ENGINES == ("scipy", "jax")
    assert _params.NEIGHBOUR_SEARCHES == ("auto", "host", "device")
    assert _params.PATCH_POSITIONS == ("upstream", "member")
    assert CLOSED_CHOICES == {
        "variant": ("main", "seed"),
        "engine": ("scipy", "jax"),
        "neighbour_search": ("auto", "host", "device"),
        "patch_positions": ("upstream", "member"),
    }
    assert typing.get_args(pj.PatchPositions) == _params.PATCH_POSITIONS
    assert typing.get_type_hints(pj.ChainParams)["engine"] is pj.Engine


def test_all_zero_frames_fail_normalisation_clearly():
    raw = make_raw(m=6, n=8, diff3d=np.zeros((6, 8, 8), np.float32))
    with pytest.raises(pj.NormalizationError, match="zero total energy"):
        pj.group(raw, N=8, gridsize=1, n_groups=3, seed=0)
    with pytest.raises(pj.NormalizationError, match="all frames are 0"):
        pj.dataset_intensity_scale(raw.diff3d, 1e9)


def test_normalize_errors():
    x = np.ones((2, 8, 8, 1), np.float32)
    with pytest.raises(pj.NormalizationError, match="N=16 does not match the frame size 8"):
        pj.normalize_data(x, 16)
    with pytest.raises(pj.NormalizationError, match="float32 amplitudes, got float64"):
        pj.normalize_data(x.astype(np.float64), 8)
    with pytest.raises(pj.NormalizationError, match=r"\(B, N, N, C\)"):
        pj.normalize_data(x[0], 8)
    with pytest.raises(pj.NormalizationError, match="non-finite"):
        pj.normalize_data(np.full_like(x, np.nan), 8)


def test_mirrored_patch_warning_names_the_quirk():
    raw = make_raw(m=20, n=8)
    with pytest.warns(pj.MirroredPatchWarning, match="mirror"):
        pj.group(raw, N=8, gridsize=2, n_groups=4, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pj.group(raw, N=8, gridsize=2, n_groups=4, seed=0, patch_positions="member")


def test_jax_engine_invariants_on_grid_with_ties():
    raw = grid_raw(side=8)
    g = pj.group(raw, N=8, gridsize=2, K=4, n_groups=30, engine="jax", seed=None, key=jr.key(0))
    assert g.nn_indices.shape == (30, 4)
    assert invariant_violations(raw.positions(), g.nn_indices, K=4) == []
    with pytest.raises(pj.GroupingError, match="explicit `key` or `seed`"):
        pj.group(raw, N=8, gridsize=2, n_groups=5, engine="jax", seed=None)


def test_scipy_engine_invariants_on_grid_with_ties():
    raw = grid_raw(side=8)
    g = pj.group(raw, N=8, gridsize=2, K=4, n_groups=40, seed=5)
    assert invariant_violations(raw.positions(), g.nn_indices, K=4) == []


def test_second_call_does_not_recompile():
    raw = make_raw(m=30, n=8)
    pj.group(raw, N=8, gridsize=2, n_groups=6, seed=0, patch_positions="member")
    with count_compiles() as compiles:
        pj.group(raw, N=8, gridsize=2, n_groups=6, seed=1, patch_positions="member")
    assert compiles() == 0


@pytest.mark.parametrize("layout", ["uniform", "clustered", "line"])
def test_jax_cell_list_finds_the_k_nearest(layout):
    from ptycho_jax._neighbours import jax_neighbours, kdtree_neighbours

    rng = np.random.default_rng(3)
    if layout == "uniform":
        p = rng.uniform(0, 5000, (3000, 2))
    elif (
        layout == "clustered"
    ):  # dense and sparse regions, isolated points: exercises the exhaustive fallback
        p = np.concatenate(
            [
                rng.normal(100, 1, (1500, 2)),
                rng.normal(900, 40, (1400, 2)),
                rng.uniform(0, 2000, (20, 2)),
            ]
        )
    else:  # all on one row: degenerate cell grid
        p = np.stack([rng.uniform(0, 100, 500), np.full(500, 7.0)], axis=1)
    K = 5
    got = jax_neighbours(p, np.arange(len(p)), k=K)
    ref = kdtree_neighbours(p, np.arange(len(p)), k=K + 1)[:, 1:]
    d_got = np.sort(np.linalg.norm(p[got] - p[:, None], axis=-1), axis=1)
    d_ref = np.sort(np.linalg.norm(p[ref] - p[:, None], axis=-1), axis=1)
    np.testing.assert_allclose(
        d_got, d_ref, rtol=1e-5, atol=1e-4
    )  # same distances: the K nearest, up to ties
    assert not (got == np.arange(len(p))[:, None]).any()


def _groups_by_the_letter(positions, *, C, K, B, seed):
    """pipeline.md §3.5 written out one group at a time, with legacy `choice` per group."""
    from scipy.spatial import cKDTree

    n = len(positions)
    rng = np.random.RandomState(seed)
    seeds = rng.choice(np.arange(n), min(B, n), replace=False) if B < n else np.arange(n)
    _, rows = cKDTree(positions).query(positions[seeds], k=min(K + 1, n))
    rows = np.asarray(rows).reshape(len(seeds), -1)
    out = []
    for s, row in zip(seeds, rows, strict=True):
        cand = row[1 : K + 1] if len(row) > K else row[:K]
        avail = np.concatenate([[s], cand]) if len(cand) < C else cand
        out.append(rng.choice(avail, C, replace=len(avail) < C))
    return np.asarray(out, np.int32)


@pytest.mark.parametrize(
    ("n", "C", "K", "B", "seed"),
    [(40, 4, 6, 25, 0), (40, 4, 4, 40, 1), (300, 9, 12, 120, 5), (5, 4, 7, 3, 2), (4, 4, 6, 3, 3)],
)
def test_standard_groups_match_per_group_choice(n, C, K, B, seed):
    # The vectorised draw (one shuffle per row) consumes the legacy stream exactly as upstream's
    # per-group `choice` does, including the tiny-dataset rule (n <= K: the seed's own row).
    positions = np.random.default_rng(seed).uniform(0, 50, (n, 2))
    got = pj.select_groups(positions, gridsize=int(np.sqrt(C)), K=K, n_groups=B, seed=seed)
    np.testing.assert_array_equal(got, _groups_by_the_letter(positions, C=C, K=K, B=B, seed=seed))


def test_one_pass_program_is_gather_then_multiply():
    # Off the CPU the one-device chain gathers and scales in one XLA program: the same bits as the
    # gather and XLA's multiply run apart (as scale_on_mesh does it, subnormals included).
    from ptycho_jax._grouping import gather_and_scale, gather_frames

    rng = np.random.default_rng(7)
    rows = rng.random((300, 6, 6), dtype=np.float32)
    rows[0, 0, :2] = [1e-40, 3e-39]
    nn = rng.integers(0, 300, (131, 4)).astype(np.int32)
    nn[0, 0] = 0
    frames, gain = jnp.asarray(rows), jnp.float32(0.37)
    D, X = gather_and_scale(frames, jnp.asarray(nn), gain)
    ref = gather_frames(frames, jnp.asarray(nn))
    np.testing.assert_array_equal(np.asarray(D), np.asarray(ref))
    want = jax.jit(lambda d, g: g * d)(ref, gain)
    np.testing.assert_array_equal(np.asarray(X).view(np.uint32), np.asarray(want).view(np.uint32))
