"""The quantities upstream calls "intensity scale", one home each (pipeline.md §8).

| function | upstream | value for N=64, nphotons=1e9 |
| --- | --- | --- |
| `closed_form_intensity_scale` | report fallback, float64 | 988.2117688 |
| `closed_form_intensity_scale_f32` | [MAIN] `calculate_intensity_scale`, float32 TF ops | 988.2117919921875 |
| `seed_training_intensity_scale` | [SEED] `calculate_intensity_scale` (dataset-derived over H, W, C) | ≈ 494.106 |
| `dataset_intensity_scale` | report's dataset-derived scale from raw frames, float64 | ≈ 577.738 |
| `diffsim_norm_Y_I` | container `norm_Y_I` (diffsim `scale_nphotons`), float32 in TF-CPU order | ≈ 988.21 |

Every path (one device, mesh, stream) reduces its data to an `EnergyTotals` and reads the scales
from `intensity_scales`.
"""

import dataclasses
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike
from jaxtyping import Array, Float32, Real

from ._errors import NormalizationError
from ._normalize import energy_partials
from ._tf_order import mean_all, square_frame_sums
from ._variants import MAIN, SEED, VariantName, get_variant

NORM_Y_I_KEY = "container_norm_Y_I_diffsim_scale_nphotons"


def _check_positive(name: str, value: float) -> float:
    v = float(value)
    if not (math.isfinite(v) and v > 0):
        raise NormalizationError(f"{name}: expected a finite value > 0, got {value!r}")
    return v


def _check_N(N: int) -> int:
    if isinstance(N, bool) or not (isinstance(N, (int, np.integer)) and N > 0):
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
def _energy_total(x):
    return energy_partials(x, jnp.ones(x.shape[:1], bool), 0, x.shape[0], tf_order=False)[0]


def _positive_mean(total: float, count: int) -> float:
    e = total / count
    if not math.isfinite(e):
        raise NormalizationError(f"amplitudes: expected finite values, got mean frame energy {e}")
    if e <= 0:
        raise NormalizationError(
            f"amplitudes: expected a positive mean frame energy, got {e} (all frames are 0)"
        )
    return e


def _total_energy(x) -> float:
    shape = np.shape(x)
    if len(shape) < 2 or shape[0] == 0:
        raise NormalizationError(
            f"amplitudes: expected an array (B, ...) with B > 0, got shape {shape}"
        )
    with jax.enable_x64(True):
        return float(_energy_total(jnp.asarray(x)))


def mean_frame_energy(x: Real[ArrayLike, "..."]) -> float:
    """`mean_b Σ_{non-batch axes} x[b]²` in float64 (`E_batch[Σ|Ψ|²]`), for raw (M,N,N) or grouped (B,N,N,C) amplitudes."""
    e = _total_energy(x) / np.shape(x)[0]
    if not math.isfinite(e):
        raise NormalizationError(f"amplitudes: expected finite values, got mean frame energy {e}")
    return e


def _dataset_scale(e: float, nphotons: float) -> float:
    return math.sqrt(_check_positive("nphotons", nphotons) / e)


def dataset_intensity_scale(x: Real[ArrayLike, "..."], nphotons: float) -> tuple[float, float]:
    """Dataset-derived scale `sqrt(nphotons / E)` with `E = mean_b Σ x[b]²` over all non-batch axes, float64.

    For raw test frames (M, N, N) this is the report's dataset-derived scale (pipeline.md §8.4);
    for grouped (B, N, N, C) amplitudes the "over H, W, C" variant.

    Returns:
        `(scale, E)`.

    Raises:
        NormalizationError: E is 0 (all-zero frames) or not finite, or nphotons invalid.
    """
    _check_positive("nphotons", nphotons)
    e = _positive_mean(mean_frame_energy(x), 1)
    return _dataset_scale(e, nphotons), e


def _seed_scale_from_energy(e: float, nphotons: float, N: int) -> float:
    nphotons = _check_positive("nphotons", nphotons)
    if e > 1e-12:
        return math.sqrt(nphotons / e)
    return closed_form_intensity_scale(N, nphotons)


def seed_training_intensity_scale(X: Real[ArrayLike, "..."], nphotons: float, N: int) -> float:
    """[SEED] training scale: `sqrt(nphotons / mean_b Σ_{h,w,c} X[b]²)` in float64 (pipeline.md §8.2).

    Falls back to the float64 closed form when the energy is ≤ 1e-12, as upstream does.
    """
    return _seed_scale_from_energy(mean_frame_energy(X), nphotons, N)


@jax.jit
def _norm_from_frame_sums(
    e: Float32[Array, "B C"], nphotons: Float32[Array, ""]
) -> Float32[Array, ""]:
    return jnp.sqrt(nphotons / mean_all(e))


def norm_from_frame_sums(frame_sums: np.ndarray, nphotons: float) -> np.float32:
    """`norm_Y_I = sqrt(nphotons / mean_{b,c} e[b, c])`, float32, TF-CPU order, from the (B, C) TF-order sums of X²."""
    n = np.float32(_check_positive("nphotons", nphotons))
    s = np.float32(_norm_from_frame_sums(jnp.asarray(frame_sums, jnp.float32), jnp.asarray(n)))
    if not (np.isfinite(s) and s > 0):
        raise NormalizationError(
            f"X: expected amplitudes with positive finite energy, got norm_Y_I = {float(s)}"
        )
    return s


@jax.jit
def _energy_sums(x):
    # Blocked: no full-size array of squares is allocated per call (same bits as frame_sums(x * x)).
    return square_frame_sums(x)


def diffsim_norm_Y_I(X: Real[ArrayLike, "..."], nphotons: float) -> float:
    """Container `norm_Y_I` (upstream diffsim `scale_nphotons`): `sqrt(nphotons / mean_{b,c} Σ_{h,w} X²)`,
    float32 in TF-CPU order (pipeline.md §7.1).

    Squares are exact float32 products (TF's pow kernel differs by 1 ulp on a few percent of
    elements, so the result can be 1 ulp from upstream's).
    """
    shape = np.shape(X)
    if len(shape) != 4:
        raise NormalizationError(f"X: expected (B, N, N, C) amplitudes, got shape {shape}")
    x = jnp.asarray(X, jnp.float32)
    return float(norm_from_frame_sums(np.asarray(_energy_sums(x)), nphotons))


@dataclasses.dataclass(frozen=True)
class EnergyTotals:
    """What every intensity scale is computed from: float64 energy totals and the TF-order sums of X².

    Each path (one device, mesh, stream) adds its blocks' float64 totals and concatenates the
    per-frame sums in group order, then calls `intensity_scales`.
    """

    N: int
    M: int  # raw frames
    n_groups: int
    raw: float  # Σ_m Σ_hw diff3d[m]²
    diffraction: float  # Σ_b Σ_hwc D²
    X: float  # Σ_b Σ_hwc X²
    X_frame_sums: np.ndarray  # (B, C) float32, TF-CPU order


def intensity_scales(t: EnergyTotals, *, nphotons: float) -> dict[str, float]:
    """Every intensity-scale quantity of pipeline.md §8, named like the golden `stage4_intensity` keys."""
    raw_e = _positive_mean(t.raw, t.M)
    grouped_e = _positive_mean(t.diffraction, t.n_groups)
    x_e = t.X / t.n_groups
    return {
        "fallback_scale_closed_form": closed_form_intensity_scale(t.N, nphotons),
        MAIN.training_scale_key: closed_form_intensity_scale_f32(t.N, nphotons),
        SEED.training_scale_key: _seed_scale_from_energy(x_e, nphotons, t.N),
        "raw_E_batch_sum_psi2": raw_e,
        "raw_dataset_scale": _dataset_scale(raw_e, nphotons),
        "grouped_E_batch_sum_psi2_over_HWC": grouped_e,
        "grouped_dataset_scale_over_HWC": _dataset_scale(grouped_e, nphotons),
        NORM_Y_I_KEY: float(norm_from_frame_sums(t.X_frame_sums, nphotons)),
        "normalized_X_mean_sum_sq_over_HWC": x_e,
    }


def all_intensity_scales(
    *,
    raw_diff3d: Real[ArrayLike, "..."],
    grouped_diffraction: Real[ArrayLike, "..."],
    X: Real[ArrayLike, "..."],
    N: int,
    nphotons: float,
) -> dict[str, float]:
    """Every intensity-scale quantity of pipeline.md §8 from the arrays on one device (see `intensity_scales`)."""
    shape = np.shape(X)
    if len(shape) != 4:
        raise NormalizationError(f"X: expected (B, N, N, C) amplitudes, got shape {shape}")
    x = jnp.asarray(X, jnp.float32)
    totals = EnergyTotals(
        N=_check_N(N),
        M=np.shape(raw_diff3d)[0],
        n_groups=shape[0],
        raw=_total_energy(raw_diff3d),
        diffraction=_total_energy(grouped_diffraction),
        X=_total_energy(x),
        X_frame_sums=np.asarray(_energy_sums(x)),
    )
    return intensity_scales(totals, nphotons=nphotons)


_TRAINING_SCALES = {
    MAIN.training_scale_key: lambda X, N, nphotons: closed_form_intensity_scale_f32(N, nphotons),
    SEED.training_scale_key: lambda X, N, nphotons: seed_training_intensity_scale(X, nphotons, N),
}


def training_intensity_scale(
    container: eqx.Module, *, nphotons: float, variant: VariantName = "main"
) -> float:
    """The training intensity scale (`params.cfg['intensity_scale']`) upstream computes for `variant`.

    "main": the float32 closed form (data ignored); "seed": dataset-derived from the container's
    normalised X over (H, W, C).
    """
    key = get_variant(variant).training_scale_key
    return _TRAINING_SCALES[key](container.X, int(container.X.shape[1]), nphotons)
