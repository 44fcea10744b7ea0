"""IntensityScaler with buffer donation: the same bits as without, written into the input's buffer."""

import jax
import numpy as np
import pytest

from ptycho_jax._scaler import IntensityScaler


@pytest.mark.skipif(
    jax.default_backend() != "cpu", reason="donation serves the CPU (ignored elsewhere)"
)
@pytest.mark.parametrize("scale", [988.2117919921875, 3.0, 1e-3])
def test_donated_scaler_is_bit_equal_and_consumes_its_input(scale):
    rng = np.random.default_rng(0)
    x = (rng.random((3, 8, 8, 4), dtype=np.float32) * 50).astype(np.float32)
    x.flat[:3] = [np.inf, -np.inf, np.nan]
    scaler = IntensityScaler.from_scale(scale)
    want_fwd = np.asarray(scaler(x))
    want_inv = np.asarray(scaler.inverse(want_fwd))
    xd = jax.device_put(x)
    fwd = scaler(xd, donate=True)
    assert xd.is_deleted()
    got_fwd = np.asarray(fwd)
    y = jax.numpy.array(want_fwd)  # a buffer of XLA's own (no NumPy view holds it)
    inv = scaler.inverse(y, donate=True)
    assert y.is_deleted()
    np.testing.assert_array_equal(got_fwd.view(np.uint32), want_fwd.view(np.uint32))
    np.testing.assert_array_equal(np.asarray(inv).view(np.uint32), want_inv.view(np.uint32))
    # True division, as upstream: at least one element where x / s differs from x * (1/s) exists here.
    finite = np.isfinite(x)
    recip = x * np.float32(1 / np.float32(np.exp(np.float64(scaler.log_scale_f32))))
    assert np.array_equal(
        got_fwd[finite], (x / np.float32(np.exp(np.float64(scaler.log_scale_f32))))[finite]
    )
    assert scale == 1e-3 or not np.array_equal(got_fwd[finite], recip[finite])


def test_donate_is_ignored_for_numpy_input():
    x = np.arange(1, 9, dtype=np.float32)
    scaler = IntensityScaler.from_scale(4.0)
    out = scaler(x, donate=True)
    np.testing.assert_array_equal(np.asarray(out), x / np.float32(4.0))
    assert x[0] == 1.0
