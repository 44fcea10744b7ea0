"""`normalize_data`: scale grouped amplitudes so the mean per-frame energy is (N/2)² (pipeline.md §6)."""

import functools as ft
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float32

from ._errors import NormalizationError
from ._stats import float_sum
from ._tf_order import sum_over_frame
from ._types import Amplitudes

Variant = Literal["main", "seed"]
VARIANTS = ("main", "seed")


def check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"variant: expected one of {VARIANTS}, got {variant!r}")


@ft.partial(jax.jit, static_argnames=("N",))
def _gain_main(x: Amplitudes, *, N: int) -> Float32[Array, ""]:
    # [MAIN]: float64 squares and sums (under the caller's scoped x64), float32 gain.
    x64 = x.astype(jnp.float64)
    energy = jnp.mean(jnp.sum(x64 * x64, axis=(1, 2)))
    return jnp.sqrt((N / 2) ** 2 / energy).astype(jnp.float32)


@jax.jit
def _frame_energies_seed(x: Amplitudes) -> Float32[Array, "B C"]:
    # [SEED]: float32 squares, float32 tf.reduce_sum over (H, W) in TF-CPU order.
    return sum_over_frame(x * x)


@jax.jit
def _apply_gain(x: Amplitudes, gain: Float32[Array, ""]) -> Amplitudes:
    return gain * x


def _host_mean_f32(a: np.ndarray) -> np.float32:
    """NumPy's float32 mean (pairwise order of NumPy 2.0, the goldens'), as upstream takes it on the host."""
    return np.float32(float_sum(np.asarray(a, np.float32).reshape(-1)) / np.float32(a.size))


def normalize_data(
    diffraction: Amplitudes, N: int, *, variant: Variant = "main"
) -> tuple[Amplitudes, Float32[Array, ""]]:
    """Normalise grouped amplitudes so the mean per-frame energy is (N/2)², as upstream `normalize_data`.

    `gain = sqrt((N/2)² / mean_{b,c} Σ_{h,w} D²)`; returns `(gain · D, gain)`, both float32.

    Args:
        diffraction: (B, N, N, C) float32 amplitudes (not intensities), channel-last.
        N: frame size; must equal the frame's spatial size.
        variant: "main" — upstream main: float64 energies, float32 gain (default);
            "seed" — the seed branch / upstream `loader.normalize_data`: float32 energies in
            TF-CPU's reduction order, NumPy float32 mean (carries upstream's −5e-6 bias).

    Raises:
        NormalizationError: wrong shape/dtype, N mismatch, non-finite frames, or zero total energy.
    """
    check_variant(variant)
    if not (isinstance(N, (int, np.integer)) and N > 0):
        raise NormalizationError(f"normalize_data: N must be a positive int, got {N!r}")
    shape, dtype = np.shape(diffraction), getattr(diffraction, "dtype", None)
    if len(shape) != 4 or shape[1] != shape[2]:
        raise NormalizationError(f"normalize_data: diffraction must be (B, N, N, C), got shape {shape}")
    if shape[1] != N:
        raise NormalizationError(f"normalize_data: N={N} does not match the frame size {shape[1]} of diffraction {shape}")
    if dtype != np.float32:
        raise NormalizationError(f"normalize_data: diffraction must be float32 amplitudes, got {dtype}")
    x = jnp.asarray(diffraction)
    if variant == "main":
        with jax.enable_x64(True):
            gain = _gain_main(x, N=int(N))
    else:
        energies = np.asarray(_frame_energies_seed(x))
        mean = _host_mean_f32(energies)
        with np.errstate(divide="ignore", invalid="ignore"):
            gain = np.sqrt(np.float32((N / 2) ** 2) / mean)
        gain = jnp.asarray(gain, jnp.float32)
    g = float(gain)
    if not np.isfinite(g) or g <= 0:
        finite = bool(jnp.isfinite(x).all())
        reason = "non-finite (NaN/Inf) amplitudes" if not finite else "zero total energy (all frames are 0)"
        raise NormalizationError(
            f"normalize_data: expected a finite positive gain, got {g} from {reason} in diffraction {shape}"
        )
    return _apply_gain(x, gain), gain
