"""The training container: upstream's `PtychoDataContainer` built by `loader.load` (pipeline.md §7)."""

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike
from jaxtyping import Array, Complex64, Float32

from ._errors import PtychoInputError
from ._grouping import GroupedData
from ._intensity import diffsim_norm_Y_I
from ._rawdata import aligned_empty, host_map
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
    return jnp.where(
        jnp.signbit(Y.real), jnp.copysign(pi, Y.imag), jnp.copysign(jnp.float32(0), Y.imag)
    )


def _amplitude(Y):
    return jnp.abs(Y).astype(jnp.float32)


@jax.jit
def _split_real(Y):
    return _amplitude(Y), _real_angle(Y)


@jax.jit
def _split_device(Y):
    # Objects are often real (all sim_lines ones are): skip atan2, the costliest op of the chain
    # on CPU, when no imaginary part is non-zero; both branches give np.angle's values.
    phase = jax.lax.cond(
        jnp.all(Y.imag == 0), _real_angle, lambda y: jnp.angle(y).astype(jnp.float32), Y
    )
    return _amplitude(Y), phase


def _on_host_cpu(Y: jax.Array) -> bool:
    return Y.is_fully_addressable and all(d.platform == "cpu" for d in Y.sharding.device_set)


def _row_blocks(n: int) -> list[slice]:
    return [slice(i, min(i + 256, n)) for i in range(0, n, 256)]


def _host_is_real(y: np.ndarray) -> bool:
    # Block by block, so complex patches are told apart after the first block.
    return not any(y[block].imag.any() for block in _row_blocks(y.shape[0]))


def _host_split(Y: jax.Array, y: np.ndarray) -> tuple[jax.Array, jax.Array]:
    # Upstream's own functions (`np.abs`, and `np.angle` as it evaluates, `arctan2(imag, real)`) in
    # row blocks on a few threads (NumPy releases the GIL), into aligned buffers that device_put
    # aliases on one CPU device. XLA's atan2 differs from NumPy's on ~40 % of values and is about
    # 3x slower on this CPU.
    amplitude, phase = aligned_empty(y.shape, np.float32), aligned_empty(y.shape, np.float32)

    def work(block: slice) -> None:
        np.abs(y[block], out=amplitude[block])
        np.arctan2(y[block].imag, y[block].real, out=phase[block])

    host_map(work, y.shape[0], 256)
    return jax.device_put(amplitude, Y.sharding), jax.device_put(phase, Y.sharding)


def split_patches(Y) -> tuple[Float32[Array, "*s"], Float32[Array, "*s"]]:
    """`(|Y|, angle(Y))` in float32 (pipeline.md §7.2).

    Real patches (every imaginary part ±0, as for every sim_lines object) skip the atan2 and take
    the sign rule that gives np.angle's values; complex ones on CPU take NumPy's abs and angle on
    the host (upstream's functions, bit-equal to them), elsewhere XLA's (atan2 within 1 ulp).
    """
    Y = Y if isinstance(Y, jax.Array) else jnp.asarray(Y)
    if not _on_host_cpu(Y) or Y.ndim == 0:
        return _split_device(Y)
    y = np.asarray(Y)
    if _host_is_real(y):
        return _split_real(Y)
    return _host_split(Y, y)


@jax.jit
def no_patches(X):
    return jnp.ones_like(X), jnp.zeros_like(X)


def check_probe(probe, N: int, where: str) -> np.ndarray:
    """The probe as NumPy, checked to be (N, N) complex64."""
    p = np.asarray(probe)
    if p.shape != (N, N) or p.dtype != np.complex64:
        raise PtychoInputError(
            f"{where}: probe must be ({N}, {N}) complex64, got shape {p.shape} dtype {p.dtype}"
        )
    return p


def assemble_container(
    grouped: GroupedData, *, probe, Y_I, Y_phi, norm_Y_I: np.float32, where: str
) -> Container:
    """The container of `grouped` from its computed fields (`Y_I`, `Y_phi`, `norm_Y_I`); every path builds it here.

    `coords_nominal = coords_true = float32(coords_start_relative)`; `global_offsets = coords_offsets`,
    `local_offsets = coords_relative` (float64).
    """
    X = grouped.X_full
    probe = check_probe(probe, X.shape[1], where)
    for name, a in (("Y_I", Y_I), ("Y_phi", Y_phi)):
        if a.shape != X.shape:
            raise PtychoInputError(
                f"{where}: {name} shape {a.shape} must equal X shape {X.shape} (channel mismatch)"
            )
    coords = jnp.asarray(grouped.coords_start_relative.astype(np.float32))
    return Container(
        X=X,
        Y_I=Y_I,
        Y_phi=Y_phi,
        coords_nominal=coords,
        coords_true=coords,
        probe=jnp.asarray(probe),
        norm_Y_I=jnp.asarray(np.float32(norm_Y_I)),
        nn_indices=grouped.nn_indices,
        global_offsets=grouped.coords_offsets,
        local_offsets=grouped.coords_relative,
    )


def make_container(grouped: GroupedData, probe: ArrayLike, *, nphotons: float = 1e9) -> Container:
    """Build the container from grouped data and the probe, as upstream `loader.load(..., create_split=False)`.

    `X = X_full`; `Y_I = |Y|`, `Y_phi = angle(Y)` (ones/zeros without Y); `norm_Y_I =
    diffsim_norm_Y_I(X)`; the rest as `assemble_container`.

    Args:
        grouped: output of `group`.
        probe: (N, N) complex64 probe guess.
        nphotons: photon budget for `norm_Y_I`.
    """
    where = "make_container"
    X = grouped.X_full
    if grouped.Y is not None and grouped.Y.shape != X.shape:
        raise PtychoInputError(
            f"{where}: Y shape {grouped.Y.shape} must equal X shape {X.shape} (channel mismatch)"
        )
    Y_I, Y_phi = no_patches(X) if grouped.Y is None else split_patches(grouped.Y)
    norm = np.float32(diffsim_norm_Y_I(X, nphotons))
    return assemble_container(
        grouped, probe=probe, Y_I=Y_I, Y_phi=Y_phi, norm_Y_I=norm, where=where
    )
