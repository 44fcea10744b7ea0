"""Container: Y_I/Y_phi exactly as NumPy's abs/angle (real and complex objects), channel checks."""

import jax
import numpy as np
import pytest
from helpers import make_raw

import ptycho_jax as pj
from ptycho_jax._container import split_patches


@pytest.mark.parametrize("imag", [0.0, -0.0])
def test_phase_of_real_patches_matches_numpy_bitwise(imag):
    re = np.array([1, -1, 0.0, -0.0, 2.5, -3, 1e-30, -1e-30], np.float32)
    y = np.array([complex(v, imag) for v in re], np.complex64)
    amp, phase = split_patches(y)
    assert np.asarray(phase).tobytes() == np.angle(y).tobytes()  # signs of zero and ±π included
    assert np.asarray(amp).tobytes() == np.abs(y).tobytes()


def test_phase_of_complex_patches():
    rng = np.random.default_rng(0)
    y = (rng.normal(size=(3, 4, 4, 2)) + 1j * rng.normal(size=(3, 4, 4, 2))).astype(np.complex64)
    amp, phase = split_patches(y)
    if jax.default_backend() == "cpu":
        assert (
            np.asarray(phase).tobytes() == np.angle(y).tobytes()
        )  # NumPy's angle itself, as upstream
    else:  # an accelerator keeps XLA's atan2: <= 1 ulp
        np.testing.assert_allclose(np.asarray(phase), np.angle(y), rtol=3e-7, atol=1e-7)
    np.testing.assert_allclose(np.asarray(amp), np.abs(y), rtol=2e-7)


def test_container_without_patches_and_probe_check():
    raw = make_raw(m=20, n=8, objectGuess=None)
    g = pj.group(raw, N=8, gridsize=2, n_groups=4, seed=0)
    c = pj.make_container(g, raw.probeGuess)
    np.testing.assert_array_equal(np.asarray(c.Y_I), np.ones((4, 8, 8, 4), np.float32))
    np.testing.assert_array_equal(np.asarray(c.Y_phi), np.zeros((4, 8, 8, 4), np.float32))
    assert len(c) == 4 and c.coords is c.coords_nominal
    with pytest.raises(pj.PtychoInputError, match=r"probe must be \(8, 8\) complex64"):
        pj.make_container(g, raw.probeGuess.astype(np.complex128))
