"""IntensityScaler / IntensityScaler_inv: one shared float32 `log_scale` (pipeline.md §9)."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike
from jaxtyping import Array, Float32

from ._errors import PtychoInputError


def _expf_host(v: ArrayLike) -> np.ndarray:
    return np.asarray(np.exp(np.asarray(v, np.float64)), np.float32)


@jax.custom_jvp
def expf(log_scale: Float32[Array, ""]) -> Float32[Array, ""]:
    """`float32(exp(float64(log_scale)))`: the C library `expf` TF's layers use (pipeline.md §9).

    XLA's float32 exp rounds differently for ~9 % of arguments (a 1-ulp error in the factor
    becomes 2 ulp in the outputs), so the scalar is evaluated on the host in float64 and rounded.
    """
    shape = jax.ShapeDtypeStruct(jnp.shape(log_scale), jnp.float32)
    return jax.pure_callback(_expf_host, shape, log_scale, vmap_method="expand_dims")


@expf.defjvp
def _expf_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    e = expf(x)
    return e, e * dx


def _divide(x, factor):
    # A true division: `0·x` is not 0 for non-finite x, so XLA cannot fold the divisor into a
    # broadcast scalar and rewrite the division as a reciprocal product (1 ulp off).
    divisor = jnp.where(jnp.isfinite(x), x * jnp.float32(0), jnp.float32(0)) + factor

    def cpu(x, divisor):
        return x / divisor

    def correctly_rounded(x, divisor):
        # XLA's float32 division on GPUs is not correctly rounded (1 ulp seen on an H200). A float64
        # quotient of two float32 values rounds to the correctly rounded float32 one (53 >= 2·24 + 2).
        # Only op by op: inside one XLA program the GPU compiler may drop the float64 round trip
        # (excess precision allowed), hence no donation (a jitted program) off the CPU.
        return (x.astype(jnp.float64) / divisor.astype(jnp.float64)).astype(jnp.float32)

    with jax.enable_x64(True):
        return jax.lax.platform_dependent(x, divisor, cpu=cpu, default=correctly_rounded)


_divide_in_place = jax.jit(_divide, donate_argnums=0)
_multiply_in_place = jax.jit(lambda x, factor: factor * x, donate_argnums=0)


def _donatable(x, log_scale) -> bool:
    return (
        isinstance(x, jax.Array)
        and not isinstance(x, jax.core.Tracer)
        and not isinstance(log_scale, jax.core.Tracer)
        and all(d.platform == "cpu" for d in x.devices())
    )


class IntensityScaler(eqx.Module):
    """The IntensityScaler layer pair: `scaler(x) = x / exp(log_scale)`, `scaler.inverse(x) = exp(log_scale) · x`.

    Both directions share the one float32 `log_scale`, built as `float32(log(s))` with the log
    taken in float64, as upstream does. With `trainable=False` no gradient reaches `log_scale`.
    Upstream divides truly. XLA rewrites a division by a broadcast scalar into a reciprocal
    product (1 ulp off on part of the elements), so the divisor is written as an elementwise
    expression of `x` that XLA cannot fold (`0·x` is not 0 for non-finite floats): the division
    stays a true division, fused into the same single pass, bit-equal to upstream.
    """

    log_scale: Float32[Array, ""]
    trainable: bool = eqx.field(static=True, default=True)

    def __check_init__(self):
        if jnp.shape(self.log_scale) != () or jnp.asarray(self.log_scale).dtype != jnp.float32:
            raise PtychoInputError(
                f"IntensityScaler.log_scale: expected a float32 scalar, got shape {jnp.shape(self.log_scale)} "
                f"dtype {jnp.asarray(self.log_scale).dtype}"
            )

    @classmethod
    def from_scale(cls, intensity_scale: float, *, trainable: bool = True) -> "IntensityScaler":
        """Build from an intensity scale `s` (finite, > 0): `log_scale = float32(log(float64(s)))`."""
        s = float(intensity_scale)
        if not (math.isfinite(s) and s > 0):
            raise PtychoInputError(
                f"IntensityScaler: intensity_scale must be finite and > 0, got {intensity_scale!r}"
            )
        return cls(jnp.asarray(np.float32(np.log(np.float64(s)))), trainable=trainable)

    def _factor(self) -> Float32[Array, ""]:
        ls = self.log_scale if self.trainable else jax.lax.stop_gradient(self.log_scale)
        return expf(ls)

    def __call__(
        self, x: Float32[Array | np.ndarray, "*b"], *, donate: bool = False
    ) -> Float32[Array, "*b"]:
        """IntensityScaler: `x / exp(log_scale)`.

        With `donate=True` and a concrete `jax.Array` `x`, the result is written into `x`'s buffer
        (x is deleted): no new full-size buffer, whose first touch costs more than the division
        on a CPU. Ignored for NumPy input, inside a trace (donation is then the caller's `jit`'s)
        and off the CPU (there the division runs op by op in float64 to stay correctly rounded).
        """
        if donate and _donatable(x, self.log_scale):
            return _divide_in_place(x, self._factor())
        return _divide(jnp.asarray(x), self._factor())

    def inverse(
        self, x: Float32[Array | np.ndarray, "*b"], *, donate: bool = False
    ) -> Float32[Array, "*b"]:
        """IntensityScaler_inv: `exp(log_scale) · x`; `donate` as for the forward direction."""
        if donate and _donatable(x, self.log_scale):
            return _multiply_in_place(x, self._factor())
        return self._factor() * x

    @property
    def log_scale_f32(self) -> np.float32:
        """The float32 `log_scale` on the host."""
        return np.float32(np.asarray(self.log_scale))

    def exp_log_scale_f64(self) -> float:
        """`exp(float(log_scale))` in float64, as the report's IntensityScaler state reads it."""
        return float(np.exp(float(self.log_scale_f32)))

    def bundle_intensity_scale(self) -> float:
        """The saved-bundle value: NumPy's float32 `exp` of `log_scale`, widened (pipeline.md §8.3)."""
        return float(np.exp(self.log_scale_f32))
