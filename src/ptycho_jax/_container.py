"""The training container: upstream's `PtychoDataContainer` built by `loader.load` (pipeline.md §7)."""

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Complex64, Float32

from ._errors import PtychoInputError
from ._grouping import GroupedData
from ._intensity import scale_nphotons
from ._types import Amplitudes, HostCoords, HostGroups, HostOffsets


class Container(eqx.Module):
    """Model-ready arrays of one grouped dataset, a pytree (fields as upstream, pipeline.md §7.2).

    `X`, `Y_I`, `Y_phi`, `coords_*` and `probe` are device arrays; `global_offsets`/`local_offsets`
    keep upstream's float64 and stay host NumPy, as does `nn_indices`.
    """

    X: Amplitudes
    Y_I: Float32[Array, "B N N C"]
    Y_phi: Float32[Array, "B N N C"]
    coords_nominal: Float32[Array, "B 1 2 C"]
    coords_true: Float32[Array, "B 1 2 C"]
    probe: Complex64[Array, "N N"]
    norm_Y_I: Float32[Array, ""]
    nn_indices: HostGroups
    global_offsets: HostOffsets
    local_offsets: HostCoords

    @property
    def coords(self) -> Float32[Array, "B 1 2 C"]:
        """Alias of `coords_nominal`, as upstream."""
        return self.coords_nominal

    @property
    def Y(self) -> Complex64[Array, "B N N C"]:
        """Complex ground truth `Y_I · exp(i·Y_phi)` (equal to the grouped Y for real objects)."""
        return _recombine(self.Y_I, self.Y_phi)

    def __len__(self) -> int:
        return int(self.X.shape[0])

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


@jax.jit
def _recombine(amp, phase):
    return amp.astype(jnp.complex64) * jnp.exp(1j * phase.astype(jnp.complex64))


def _real_angle(Y):
    # atan2(±0, x) without the atan2: ±0 for x > 0 or x = +0, ±π for x < 0 or x = −0.
    pi = jnp.float32(np.pi)
    return jnp.where(jnp.signbit(Y.real), jnp.copysign(pi, Y.imag), jnp.copysign(jnp.float32(0), Y.imag))


@jax.jit
def _split_patches(Y):
    # Objects are often real (all sim_lines ones are): skip atan2, the costliest op of the chain
    # on CPU, when no imaginary part is non-zero; both branches give np.angle's values.
    phase = jax.lax.cond(jnp.all(Y.imag == 0), _real_angle, lambda y: jnp.angle(y).astype(jnp.float32), Y)
    return jnp.abs(Y).astype(jnp.float32), phase


@jax.jit
def _no_patches(X):
    return jnp.ones_like(X), jnp.zeros_like(X)


def make_container(grouped: GroupedData, probe, *, nphotons: float = 1e9) -> Container:
    """Build the container from grouped data and the probe, as upstream `loader.load(..., create_split=False)`.

    `X = X_full`; `coords_nominal = coords_true = float32(coords_start_relative)`; `Y_I = |Y|`,
    `Y_phi = angle(Y)` (ones/zeros without Y); `norm_Y_I = scale_nphotons(X)`;
    `global_offsets = coords_offsets`, `local_offsets = coords_relative` (float64).

    Args:
        grouped: output of `group`.
        probe: (N, N) complex64 probe guess.
        nphotons: photon budget for `norm_Y_I`.
    """
    X = grouped.X_full
    probe_arr = np.asarray(probe)
    n = X.shape[1]
    if probe_arr.shape != (n, n) or probe_arr.dtype != np.complex64:
        raise PtychoInputError(f"make_container: probe must be ({n}, {n}) complex64, got shape {probe_arr.shape} dtype {probe_arr.dtype}")
    if grouped.Y is None:
        Y_I, Y_phi = _no_patches(X)
    else:
        if grouped.Y.shape != X.shape:
            raise PtychoInputError(f"make_container: Y shape {grouped.Y.shape} must equal X shape {X.shape} (channel mismatch)")
        Y_I, Y_phi = _split_patches(grouped.Y)
    coords = jnp.asarray(grouped.coords_start_relative.astype(np.float32))
    return Container(
        X=X,
        Y_I=Y_I,
        Y_phi=Y_phi,
        coords_nominal=coords,
        coords_true=coords,
        probe=jnp.asarray(probe_arr),
        norm_Y_I=jnp.asarray(np.float32(scale_nphotons(X, nphotons))),
        nn_indices=grouped.nn_indices,
        global_offsets=grouped.coords_offsets,
        local_offsets=grouped.coords_relative,
    )
