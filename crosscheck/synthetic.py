"""A small synthetic scan for fast cross-checks (tests of a port's backend, the mutation matrix)."""

import numpy as np


def synthetic_raw(n: int = 64, *, N: int = 32, size: int = 96, seed: int = 0):
    """A `ptycho_jax.RawData` with `n` random positions on a complex `size`² object, N×N frames.

    Positions are uniform in the object's interior (no regular grid, so mirrored patches are not
    a channel permutation of the per-member ones); frames are positive gamma-distributed
    amplitudes with a bright centre; the object has amplitude in [0.5, 1.5) and phase in [-1, 1).

    Args:
        n: number of scan positions.
        N: frame (and probe) size.
        size: object side in pixels.
        seed: seed of the local `RandomState`.
    """
    from ptycho_jax.internal import scan_raw

    rng = np.random.RandomState(seed)
    margin = N // 2 + 4
    x = rng.uniform(margin, size - margin, n)
    y = rng.uniform(margin, size - margin, n)
    obj = ((0.5 + rng.rand(size, size)) * np.exp(1j * rng.uniform(-1, 1, (size, size)))).astype(
        np.complex64
    )
    r2 = (np.arange(N) - N / 2)[:, None] ** 2 + (np.arange(N) - N / 2)[None, :] ** 2
    frames = (rng.gamma(2.0, 1.0, (n, N, N)) * (1 + 20 * np.exp(-r2 / 20))[None]).astype(np.float32)
    probe = np.exp(-r2 / (N * 1.5)).astype(np.complex64)
    return scan_raw(x, y, frames, probe=probe, obj=obj)
