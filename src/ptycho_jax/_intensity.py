"""The quantities upstream calls "intensity scale", one function each (pipeline.md §8).

| function | upstream | value for N=64, nphotons=1e9 |
| --- | --- | --- |
| `closed_form_intensity_scale` | report fallback, float64 | 988.2117688 |
| `closed_form_intensity_scale_f32` | [MAIN] `calculate_intensity_scale`, float32 TF ops | 988.2117919921875 |
| `seed_training_intensity_scale` | [SEED] `calculate_intensity_scale` (dataset-derived over H, W, C) | ≈ 494.106 |
| `dataset_intensity_scale` | report's dataset-derived scale from raw frames, float64 | ≈ 577.738 |
| `scale_nphotons` | container `norm_Y_I` (diffsim), float32 in TF-CPU order | ≈ 988.21 |
"""

import math
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Float32

from ._errors import NormalizationError
from ._normalize import check_variant
from ._tf_order import mean_all, sum_over_frame


def _check_positive(name: str, value: float) -> float:
    v = float(value)
    if not (math.isfinite(v) and v > 0):
        raise NormalizationError(f"{name}: expected a finite value > 0, got {value!r}")
    return v


def _check_N(N: int) -> int:
    if not (isinstance(N, (int, np.integer)) and N > 0):
        raise NormalizationError(f"N: expected a positive int, got {N!r}")
    return int(N)


def closed_form_intensity_scale(N: int, nphotons: float) -> float:
    """`sqrt(nphotons) / (N/2)` in float64: the report's fallback scale (pipeline.md §8.4)."""
    return math.sqrt(_check_positive("nphotons", nphotons)) / (_check_N(N) / 2)


def closed_form_intensity_scale_f32(N: int, nphotons: float) -> float:
    """`float32(sqrt(float32(nphotons))) / float32(N/2)`: upstream main's training scale (pipeline.md §8.2)."""
    n = np.float32(_check_positive("nphotons", nphotons))
    return float(np.sqrt(n) / np.float32(_check_N(N) / 2))


@jax.jit
def _mean_energy_f64(x: Float[Array, "B *rest"]) -> Float[Array, ""]:
    x64 = x.astype(jnp.float64)
    return jnp.mean(jnp.sum((x64 * x64).reshape(x.shape[0], -1), axis=1))


def mean_frame_energy(x) -> float:
    """`mean_b Σ_{non-batch axes} x[b]²` in float64 (`E_batch[Σ|Ψ|²]`), for raw (M,N,N) or grouped (B,N,N,C) amplitudes."""
    shape = np.shape(x)
    if len(shape) < 2 or shape[0] == 0:
        raise NormalizationError(f"amplitudes: expected an array (B, ...) with B > 0, got shape {shape}")
    with jax.enable_x64(True):
        e = float(_mean_energy_f64(jnp.asarray(x)))
    if not math.isfinite(e):
        raise NormalizationError(f"amplitudes: expected finite values, got mean frame energy {e}")
    return e


def dataset_intensity_scale(x, nphotons: float) -> tuple[float, float]:
    """Dataset-derived scale `sqrt(nphotons / E)` with `E = mean_b Σ x[b]²` over all non-batch axes, float64.

    For raw test frames (M, N, N) this is the report's dataset-derived scale (pipeline.md §8.4);
    for grouped (B, N, N, C) amplitudes the "over H, W, C" variant.

    Returns:
        `(scale, E)`.

    Raises:
        NormalizationError: E is 0 (all-zero frames) or not finite, or nphotons invalid.
    """
    nphotons = _check_positive("nphotons", nphotons)
    e = mean_frame_energy(x)
    if e <= 0:
        raise NormalizationError(f"amplitudes: expected a positive mean frame energy, got {e} (all frames are 0)")
    return math.sqrt(nphotons / e), e


def seed_training_intensity_scale(X, nphotons: float, N: int) -> float:
    """[SEED] training scale: `sqrt(nphotons / mean_b Σ_{h,w,c} X[b]²)` in float64 (pipeline.md §8.2).

    Falls back to the float64 closed form when the energy is ≤ 1e-12, as upstream does.
    """
    return _seed_scale_from_energy(mean_frame_energy(X), nphotons, N)


def _seed_scale_from_energy(e: float, nphotons: float, N: int) -> float:
    nphotons = _check_positive("nphotons", nphotons)
    if e > 1e-12:
        return math.sqrt(nphotons / e)
    return math.sqrt(nphotons) / (_check_N(N) / 2)


@jax.jit
def _scale_nphotons_kernel(x: Float32[Array, "B N N C"], nphotons: Float32[Array, ""]) -> Float32[Array, ""]:
    return jnp.sqrt(nphotons / mean_all(sum_over_frame(x * x)))


def scale_nphotons(X, nphotons: float) -> float:
    """Container `norm_Y_I`: `sqrt(nphotons / mean_{b,c} Σ_{h,w} X²)`, float32 in TF-CPU order (pipeline.md §7.1).

    Squares are exact float32 products (TF's pow kernel differs by 1 ulp on a few percent of
    elements, so the result can be 1 ulp from upstream's).
    """
    shape = np.shape(X)
    if len(shape) != 4:
        raise NormalizationError(f"X: expected (B, N, N, C) amplitudes, got shape {shape}")
    n = np.float32(_check_positive("nphotons", nphotons))
    s = float(_scale_nphotons_kernel(jnp.asarray(X, jnp.float32), jnp.asarray(n)))
    if not (math.isfinite(s) and s > 0):
        raise NormalizationError(f"X: expected amplitudes with positive finite energy, got norm_Y_I = {s}")
    return s


TRAINING_SCALE_KEY = {
    "main": "main_head_train_pinn_calculate_intensity_scale",
    "seed": "seed_era_dataset_derived_scale_normalized_X",
}
"""Which `all_intensity_scales` entry is the training scale of each variant."""


def training_intensity_scale(container, *, nphotons: float, variant: Literal["main", "seed"] = "main") -> float:
    """The training intensity scale (`params.cfg['intensity_scale']`) upstream computes for `variant`.

    "main": the float32 closed form (data ignored); "seed": dataset-derived from the container's
    normalised X over (H, W, C).
    """
    check_variant(variant)
    N = int(container.X.shape[1])
    if variant == "main":
        return closed_form_intensity_scale_f32(N, nphotons)
    return seed_training_intensity_scale(container.X, nphotons, N)


def all_intensity_scales(*, raw_diff3d, grouped_diffraction, X, N: int, nphotons: float) -> dict[str, float]:
    """Every intensity-scale quantity of pipeline.md §8, named like the golden `stage4_intensity` keys."""
    raw_scale, raw_e = dataset_intensity_scale(raw_diff3d, nphotons)
    grouped_scale, grouped_e = dataset_intensity_scale(grouped_diffraction, nphotons)
    x_energy = mean_frame_energy(X)
    return {
        "fallback_scale_closed_form": closed_form_intensity_scale(N, nphotons),
        "main_head_train_pinn_calculate_intensity_scale": closed_form_intensity_scale_f32(N, nphotons),
        "seed_era_dataset_derived_scale_normalized_X": _seed_scale_from_energy(x_energy, nphotons, N),
        "raw_E_batch_sum_psi2": raw_e,
        "raw_dataset_scale": raw_scale,
        "grouped_E_batch_sum_psi2_over_HWC": grouped_e,
        "grouped_dataset_scale_over_HWC": grouped_scale,
        "container_norm_Y_I_diffsim_scale_nphotons": scale_nphotons(X, nphotons),
        "normalized_X_mean_sum_sq_over_HWC": x_energy,
    }

