"""The TF-CPU float32 reduction-order emulation against TensorFlow itself (pipeline.md §6.5)."""

import numpy as np
import pytest

from ptycho_jax._tf_order import mean_all, sum_over_frame

tf = pytest.importorskip("tensorflow")


@pytest.mark.parametrize(
    "B,N,C",
    [
        (5, 64, 1),
        (3, 64, 4),
        (4, 16, 8),
        (7, 64, 9),
        (2, 128, 1),
        (3, 8, 2),
        (6, 32, 16),
        (3, 4, 3),
    ],
)
def test_frame_sums_bit_equal_to_tf(B, N, C):
    rng = np.random.default_rng(B * N + C)
    x = (rng.random((B, N, N, C), dtype=np.float32) ** 3 * 20).astype(np.float32)
    sq = x * x
    ref = tf.reduce_sum(tf.constant(sq), axis=(1, 2)).numpy()
    got = np.asarray(sum_over_frame(sq))
    assert got.tobytes() == ref.tobytes()
    # A plain sequential or pairwise sum would not be bit-equal for most of these shapes.
    assert np.asarray(mean_all(ref)).tobytes() == tf.reduce_mean(tf.constant(ref)).numpy().tobytes()


@pytest.mark.parametrize("n", [1, 5, 7, 31, 33, 100, 8191, 8193, 20000])
def test_full_mean_bit_equal_to_tf(n):
    v = np.random.default_rng(n).random(n, dtype=np.float32)
    assert np.asarray(mean_all(v)).tobytes() == tf.reduce_mean(tf.constant(v)).numpy().tobytes()
