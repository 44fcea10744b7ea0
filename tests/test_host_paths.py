"""The chain's host kernels on one CPU device give the bits of the jitted kernels they stand in for."""

import dataclasses

import jax
import numpy as np
import pytest
from helpers import make_raw

import ptycho_jax as pj
from ptycho_jax._grouping import gather_frames, gather_frames_host
from ptycho_jax._normalize import normalize_data, scale_on_host

# The host kernels stand in for XLA on a one-device CPU backend only (elsewhere the chain never takes them).
pytestmark = pytest.mark.skipif(
    jax.default_backend() != "cpu", reason="host paths serve the CPU backend only"
)


@pytest.mark.parametrize("dtype", [np.float32, np.complex64])
def test_host_gather_is_the_gather(dtype):
    rng = np.random.default_rng(3)
    rows = (
        rng.random((300, 5, 5)) + (1j * rng.random((300, 5, 5)) if dtype == np.complex64 else 0)
    ).astype(dtype)
    nn = rng.integers(0, 300, (97, 4)).astype(np.int32)
    got = gather_frames_host(rows, nn, 101)
    assert got.shape == (101, 5, 5, 4) and got.ctypes.data % 64 == 0
    np.testing.assert_array_equal(
        got[:97], np.asarray(gather_frames(jax.numpy.asarray(rows), jax.numpy.asarray(nn)))
    )
    assert not got[97:].any()


def _bits(a):
    return np.asarray(a).view(np.uint32)


@pytest.mark.parametrize("low", [0.0, 1e-40, 1.5e-38, 1e-3])
def test_scaled_frames_match_xla_subnormals_included(low):
    # XLA on CPU flushes subnormal inputs and products to zero; the host product must give the same bits.
    raw = make_raw(m=40, n=8)
    d = raw.diff3d.copy()
    d[0, 0, :3] = [low, low * 3, 0.0]
    raw = dataclasses.replace(raw, diff3d=d, objectGuess=None)
    g = pj.group(
        raw, N=8, gridsize=2, n_groups=10, nn_indices=np.arange(40).reshape(10, 4)
    )  # frame 0 included
    X, gain = normalize_data(g.diffraction, 8)
    np.testing.assert_array_equal(_bits(g.X_full), _bits(X))
    assert float(np.asarray(g.normalize_gain)) == float(np.asarray(gain))


def test_host_scale_declines_where_xla_would_flush():
    D = jax.device_put(np.full((2, 4, 4, 1), 2e-38, np.float32))
    assert scale_on_host(D, np.float32(0.25), np.float32(2e-38)) is None  # product subnormal
    assert scale_on_host(D, np.float32(2.0), np.float32(1e-40)) is None  # subnormal input somewhere
    X = scale_on_host(D, np.float32(2.0), np.float32(2e-38))
    np.testing.assert_array_equal(_bits(X), _bits(np.float32(2.0) * np.asarray(D)))


@pytest.mark.parametrize(
    "values, want",
    [([0.5], None), ([1e-40, 0.0], 1e-40), ([-0.0, 0.0], None), ([1.1754942e-38], 1.1754942e-38)],
)
def test_smallest_positive_amplitude(values, want):
    raw = make_raw(m=20, n=8)
    d = raw.diff3d.copy()
    d[3, 2, : len(values)] = values
    got = dataclasses.replace(raw, diff3d=d).smallest_positive_amplitude
    assert got == np.min(d, where=d > 0, initial=np.inf)
    if want is not None:
        assert got == np.float32(want)
    assert dataclasses.replace(raw, diff3d=np.zeros_like(d)).smallest_positive_amplitude == np.inf
    assert dataclasses.replace(raw, diff3d=-np.zeros_like(d)).smallest_positive_amplitude == np.inf


def test_gather_and_scale_in_one_pass_is_gather_then_multiply():
    rng = np.random.default_rng(5)
    rows = rng.random((300, 6, 6), dtype=np.float32)
    nn = rng.integers(0, 300, (131, 4)).astype(np.int32)
    gain = np.float32(3.7)
    D, X = gather_frames_host(rows, nn, 136, gain=gain)
    np.testing.assert_array_equal(D, gather_frames_host(rows, nn, 136))
    np.testing.assert_array_equal(_bits(X), _bits(gain * D))
    assert X.ctypes.data % 64 == 0 and not X[131:].any()


@pytest.mark.parametrize("seed", range(6))
def test_one_pass_gain_is_the_grouped_energy_gain(seed):
    # The one-device chain takes the main gain from the frames' own energies (summed per group)
    # before it gathers; normalize_data takes it from the gathered stack (XLA's reduction order).
    rng = np.random.default_rng(seed)
    raw = make_raw(m=200, n=16)
    d = (rng.gamma(0.3, 1.0, raw.diff3d.shape) * 10.0 ** rng.uniform(-3, 3)).astype(np.float32)
    raw = dataclasses.replace(raw, diff3d=d, objectGuess=None)
    e = raw.frame_energies
    np.testing.assert_allclose(e, np.sum(d.astype(np.float64) ** 2, axis=(1, 2)), rtol=1e-13)
    assert not e.flags.writeable and raw.frame_energies is e  # computed once
    g = pj.group(raw, N=16, gridsize=2, n_groups=150, seed=seed)
    X, gain = normalize_data(g.diffraction, 16)
    assert float(np.asarray(g.normalize_gain)) == float(np.asarray(gain))
    np.testing.assert_array_equal(_bits(g.X_full), _bits(X))
