"""The normalisation gain (pipeline.md §6), one home for each formula: the gain from a mean frame
energy, `gain_from_energy`, and the scaled amplitudes `X = gain · D`, `apply_gain` (every path:
the device programs, and the host's blocked NumPy writes)."""

import numpy as np


def gain_from_energy(energy: np.floating, N: int) -> np.float32:
    """`sqrt((N/2)² / E)` in the dtype of `E` (float64 main, float32 seed), rounded to float32: the one home of the gain."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.float32(np.sqrt(np.asarray((N / 2) ** 2, energy.dtype) / energy))


def apply_gain(D, gain, out: np.ndarray | None = None):
    """`X = gain · D`, elementwise in float32 (the same bits in any blocking): a JAX expression
    (traced inside the device programs), or with `out` NumPy's product written into `out`."""
    if out is None:
        return gain * D
    return np.multiply(D, gain, out=out)
