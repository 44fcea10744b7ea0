"""Property tests: normalisation energy, scaler round trip, and group validity on random and gridded positions."""

import jax.random as jr
import numpy as np
from _invariants import invariant_violations
from hypothesis import given, settings
from hypothesis import strategies as st

import ptycho_jax as pj


def _ulp_distance(a, b):
    ai = np.asarray(a, np.float32).view(np.int32).astype(np.int64)
    bi = np.asarray(b, np.float32).view(np.int32).astype(np.int64)
    return np.abs(ai - bi)


@settings(deadline=None, max_examples=25)
@given(
    seed=st.integers(0, 2**31 - 1),
    B=st.integers(1, 6),
    g=st.integers(1, 3),
    scale=st.floats(1e-3, 1e4),
    variant=st.sampled_from(["main", "seed"]),
)
def test_normalised_mean_frame_energy_is_quarter_N_squared(seed, B, g, scale, variant):
    N = 16
    x = (
        np.random.default_rng(seed).random((B, N, N, g * g), dtype=np.float32) * np.float32(scale)
    ).astype(np.float32)
    X, gain = pj.normalize_data(x, N, variant=variant)
    energy = np.mean(np.sum(np.asarray(X, np.float64) ** 2, axis=(1, 2)))
    np.testing.assert_allclose(energy, (N / 2) ** 2, rtol=2e-6)
    assert np.asarray(X).dtype == np.float32 and np.asarray(gain).dtype == np.float32


@settings(deadline=None, max_examples=40)
@given(scale=st.floats(1e-3, 1e6), seed=st.integers(0, 2**31 - 1))
def test_scaler_round_trip_within_one_ulp(scale, seed):
    x = np.asarray(jr.uniform(jr.key(seed), (2, 8, 8, 4)), np.float32)
    s = pj.IntensityScaler.from_scale(scale)
    assert _ulp_distance(s.inverse(s(x)), x).max() <= 1
    assert _ulp_distance(s(s.inverse(x)), x).max() <= 1


def _positions(draw_grid, seed, n, spacing):
    rng = np.random.default_rng(seed)
    if draw_grid:
        side = int(np.ceil(np.sqrt(n)))
        xs, ys = np.meshgrid(np.arange(side) * spacing, np.arange(side) * spacing)
        p = np.stack([xs.ravel(), ys.ravel()], 1)[:n].astype(np.float64) + 10
    else:
        p = rng.uniform(10, 200, (n, 2))
    return p


@settings(deadline=None, max_examples=25)
@given(
    grid=st.booleans(),
    seed=st.integers(0, 10_000),
    n=st.integers(6, 60),
    g=st.sampled_from([1, 2]),
    extra_k=st.integers(0, 3),
    spacing=st.sampled_from([1.0, 2.5, 7.0]),
    engine=st.sampled_from(["scipy", "jax"]),
)
def test_group_invariants(grid, seed, n, g, extra_k, spacing, engine):
    C, K = g * g, g * g + extra_k
    p = _positions(grid, seed, n, spacing)
    if n <= K:
        return
    nn = pj.select_groups(
        p, gridsize=g, K=K, n_groups=max(1, n // 2), seed=seed, engine=engine, key=jr.key(seed)
    )
    assert nn.shape == (max(1, n // 2), C)
    assert nn.min() >= 0 and nn.max() < n
    if C > 1:
        assert invariant_violations(p, nn, K=K) == []
    else:
        assert len(set(nn[:, 0].tolist())) == nn.shape[0]
