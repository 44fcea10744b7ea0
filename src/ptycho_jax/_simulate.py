"""The sim_lines synthetic dataset: lines object, probe, scan positions, Poisson diffraction (simulation.md).

Host parts (object, probe, positions, split) are NumPy/SciPy and bit-identical to upstream; the
diffraction (patches, far field, photon noise) is jitted JAX. See specs/simulation.md.
"""

import dataclasses
import functools as ft
import logging
import math
import os
from types import MappingProxyType
from typing import Literal

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jax.typing import ArrayLike
from jaxtyping import Array, Complex64, Float32, Float64, Int32, PRNGKeyArray

from ._errors import PtychoInputError
from ._intensity import mean_frame_energy
from ._patches import check_centres, check_object, patch_kernel
from ._poisson import poisson_counts
from ._rawdata import RawData
from ._scan import scan_raw
from ._scenarios import Scenario, get_scenario, input_error

logger = logging.getLogger(__name__)

_LINES = 400  # segments drawn into the lines image (simulation.md §3.1 step 4)
# Frames per jitted call: max(1, _CHUNK_PIXELS // N²); part of the noise stream's definition.
_CHUNK_PIXELS = 1 << 22


# ---------------------------------------------------------------------------------------------
# Object (simulation.md §3)


def _line_pixels(r0: int, c0: int, r1: int, c1: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixels of the segment (r0, c0)-(r1, c1), endpoints included, as `skimage.draw.line` (§3.2).

    Closed form of the integer Bresenham walk: at major step k the minor offset is
    `(2·minor·k + major) // (2·major)` (the error term never needs two minor steps at once).
    """
    ext_r, ext_c = abs(r1 - r0), abs(c1 - c0)
    step_r = 1 if r1 > r0 else -1
    step_c = 1 if c1 > c0 else -1
    if ext_r > ext_c:  # steep: walk along rows
        k = np.arange(ext_r, dtype=np.int64)
        rows = r0 + step_r * k
        cols = c0 + step_c * ((2 * ext_c * k + ext_r) // (2 * ext_r))
    else:  # walk along columns, also for equal extents
        k = np.arange(ext_c, dtype=np.int64)
        minor = (2 * ext_r * k + ext_c) // (2 * ext_c) if ext_c else k
        cols = c0 + step_c * k
        rows = r0 + step_r * minor
    return np.append(rows, r1), np.append(cols, c1)


def make_lines_object(size: int, *, seed: int) -> Complex64[np.ndarray, "size size"]:
    """The random-lines object of upstream `mk_lines_img` (simulation.md §3), bit-identical.

    400 segments with endpoints from a local `np.random.RandomState(seed)` (four legacy uniforms
    each, order r0, c0, r1, c1) on a (2·size)² canvas, smoothed by `G1 + 2·G5 + 5·G10`
    (`scipy.ndimage.gaussian_filter` on the three-channel 3-D array, float64), centre-cropped to
    size × size and cast to complex64 (real, strictly positive). The global NumPy RNG is untouched.

    Args:
        size: object side length in pixels (392 in the study).
        seed: legacy RNG seed (42 in the study).

    Returns:
        (size, size) complex64 host array.
    """
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise input_error("make_lines_object: size", "a positive int", size)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32:
        raise input_error("make_lines_object: seed", "an int in [0, 2**32)", seed)
    S, M = int(size), 2 * int(size)
    rng = np.random.RandomState(int(seed))
    img = np.zeros((M, M), np.float64)
    for _ in range(_LINES):
        r0, c0, r1, c1 = (int(M * rng.uniform()) for _ in range(4))
        rows, cols = _line_pixels(r0, c0, r1, c1)
        img[rows, cols] = 1.0
    lo, hi = S // 2, M - (S + 1) // 2  # upstream slices S//2 : -S//2 (floor division)
    obj3 = (
        _smooth_crop(img, 1, lo, hi)
        + 2 * _smooth_crop(img, 5, lo, hi)
        + 5 * _smooth_crop(img, 10, lo, hi)
    )
    return obj3.astype(np.complex64)


def _smooth_crop(img: np.ndarray, sigma: int, lo: int, hi: int) -> np.ndarray:
    """Channel 0 of `gaussian_filter(stack([img]*3, -1), sigma)[lo:hi, lo:hi]`, bit-equal, in a quarter of the work.

    `gaussian_filter` filters axis 0, then 1, then 2, each line on its own: the three channels
    are equal through the first two passes, rows outside `lo:hi` are not needed after the first
    and pixels outside the crop not after the second, so the axis-0 pass runs on one channel,
    the axis-1 pass on the kept rows and the channel pass on the crop alone (same lines, same
    weights, same boundary handling, hence the same numbers).
    """
    import scipy.ndimage  # imported on use: `import ptycho_jax` does not pay for it

    g1 = scipy.ndimage.gaussian_filter1d
    rows = g1(img, sigma, axis=0)[lo:hi]
    both = g1(rows, sigma, axis=1)[:, lo:hi]
    return g1(np.stack([both, both, both], axis=-1), sigma, axis=2)[..., 0]


# ---------------------------------------------------------------------------------------------
# Probe (simulation.md §4)


def _gaussian_window(M: int, std: float) -> Float64[np.ndarray, " M"]:
    """`scipy.signal.windows.gaussian(M, std, sym=True)`, the same float64 operations in NumPy.

    `exp(-n² / (2·std²))` with `n = arange(M) - (M - 1)/2` (bit-equal; spares importing
    `scipy.signal`, about half a second).
    """
    if M <= 1:
        return np.ones(M, np.float64)
    n = np.arange(0, M, dtype=np.float64) - (M - 1.0) / 2.0
    sig2 = 2 * std * std
    return np.exp(-(n**2) / sig2)


def make_idealized_probe(
    N: int, *, default_probe_scale: float = 0.7
) -> Complex64[np.ndarray, "N N"]:
    """Upstream's idealized default probe `get_default_probe(N)` cast to complex64 (simulation.md §4.1).

    A Gaussian window `w` (std `N / (q·π²)`, q = `default_probe_scale`, scaled to max 1) makes a
    binary disk `w_i·w_j > 0.5`, smoothed by `gaussian_filter(·, 1)` plus 1e-9. Not normalised: pass
    the result to `normalize_probe`.
    """
    if isinstance(N, bool) or not isinstance(N, (int, np.integer)) or N < 1:
        raise input_error("make_idealized_probe: N", "a positive int", N)
    q = float(default_probe_scale)
    if not (math.isfinite(q) and q > 0):
        raise input_error(
            "make_idealized_probe: default_probe_scale", "a finite number > 0", default_probe_scale
        )
    import scipy.ndimage

    w = _gaussian_window(int(N), N / (q * np.pi**2))
    w = w / w.max()
    disk = (np.outer(w, w) > 0.5).astype(np.float64)
    return (scipy.ndimage.gaussian_filter(disk, 1) + 1e-9).astype(np.complex64)


def normalize_probe(probe: ArrayLike, *, probe_scale: float) -> Complex64[np.ndarray, "N N"]:
    """`probe / (probe_scale · mean|mask·probe|)` in upstream's float32 arithmetic (simulation.md §4.2).

    `mask` is the disk `d < N//4` around the centre of the (N, N) grid (`d` from `arange(N) - N//2
    + 0.5`). All in NumPy float32: pairwise float32 mean, `norm = float32(probe_scale · mean)`, the
    reciprocal `float32(1/norm)` once, then real and imaginary parts each multiplied by it, which
    reproduces upstream's complex64 division bit-for-bit.

    Raises:
        PtychoInputError: not a square 2-D complex64 array, non-positive scale, or zero norm.
    """
    p = np.asarray(probe)
    if p.ndim != 2 or p.shape[0] != p.shape[1] or p.dtype != np.complex64:
        raise input_error(
            "normalize_probe: probe",
            "a square (N, N) complex64 array",
            f"shape {p.shape} dtype {p.dtype}",
        )
    s = float(probe_scale)
    if not (math.isfinite(s) and s > 0):
        raise input_error("normalize_probe: probe_scale", "a finite number > 0", probe_scale)
    N = p.shape[0]
    centred = np.arange(N) - N // 2 + 0.5
    cx, cy = np.meshgrid(centred, centred)
    mask = np.sqrt(cx**2 + cy**2) < N // 4
    mean = np.mean(np.abs(mask * p))  # float32, NumPy pairwise summation
    norm = np.float32(s) * mean  # = Python float × float32 under NumPy >= 2 (stays float32)
    if not (np.isfinite(norm) and norm > 0):
        raise input_error(
            "normalize_probe: probe", "a non-zero mean |probe| inside the central disk", float(norm)
        )
    r = np.float32(1.0) / norm
    out = np.empty_like(p)
    out.real = p.real * r
    out.imag = p.imag * r
    return out


def _load_custom_probe(path: str, N: int) -> np.ndarray:
    """`probeGuess` of an NPZ file as complex64 (simulation.md §4.3)."""
    if not os.path.exists(path):
        raise input_error("Scenario.probe_path", "an existing NPZ file", path)
    with np.load(path, allow_pickle=False) as npz:
        if "probeGuess" not in npz.files:
            raise PtychoInputError(
                f"Scenario.probe_path: expected key 'probeGuess' in {path!r}, got keys {npz.files}"
            )
        p = np.asarray(npz["probeGuess"])
    if p.shape != (N, N):
        raise PtychoInputError(
            f"Scenario.probe_path: probeGuess: expected shape ({N}, {N}), got {p.shape}"
        )
    return p.astype(np.complex64)


# ---------------------------------------------------------------------------------------------
# Scan positions (simulation.md §5)


def make_scan_positions(
    n: int, *, object_shape: tuple[int, int], buffer: float | None = 10.0, seed: int = 42
) -> tuple[Float64[np.ndarray, " n"], Float64[np.ndarray, " n"]]:
    """Uniform random scan positions `(x, y)` of upstream's non-grid simulation (simulation.md §5).

    `buffer` (None: `0.35·min(H, W)`) is capped at `min(H, W)/2 - 1`; then a local
    `RandomState(seed)` draws all n x-values in `[buffer, W - buffer)`, then all n y-values in
    `[buffer, H - buffer)` (legacy `uniform`). Upstream hard-codes `seed = 42` here, whatever the
    scenario's `sim_seed`; the default reproduces it.

    Args:
        n: number of positions.
        object_shape: (H, W) of the object (rows, columns).
        buffer: margin in pixels kept free on every side.
        seed: legacy RNG seed.

    Returns:
        `(x, y)`, each (n,) float64 object-pixel coordinates (x = column).
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise input_error("make_scan_positions: n", "a positive int", n)
    if len(object_shape) != 2 or min(object_shape) < 3:
        raise input_error(
            "make_scan_positions: object_shape", "(H, W) with H, W >= 3", tuple(object_shape)
        )
    H, W = (int(v) for v in object_shape)
    if buffer is None:
        buffer = 0.35 * min(H, W)
    if not (math.isfinite(buffer) and buffer >= 0):
        raise input_error("make_scan_positions: buffer", "a finite number >= 0", buffer)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32:
        raise input_error("make_scan_positions: seed", "an int in [0, 2**32)", seed)
    buffer = min(float(buffer), min(H, W) / 2 - 1)
    rng = np.random.RandomState(int(seed))
    x = rng.uniform(buffer, W - buffer, int(n))
    y = rng.uniform(buffer, H - buffer, int(n))
    return x, y


# ---------------------------------------------------------------------------------------------
# Diffraction (simulation.md §6)


@ft.partial(jax.jit, static_argnames=("N",))
def _patches_and_energy(
    obj: Complex64[Array, "H W"],
    centres: Float32[Array, "n 2"],
    probe: Complex64[Array, "N N"],
    *,
    N: int,
) -> tuple[Complex64[Array, "n N N"], Float64[Array, " n"]]:
    """Object patches (§6 step 2) and per-frame `Σ (|Y|·|P|)²` (float32 terms, float64 sum); needs x64."""
    patches = patch_kernel(obj, centres, N=N, fma=True)
    term = jnp.abs(patches) * jnp.abs(probe)[None, :, :]
    energy = jnp.sum((term * term).astype(jnp.float64), axis=(1, 2))
    return patches, energy


# The diffraction program is mostly the Poisson sampler's ~140 small loop kernels, each its own
# LLVM module; XLA:CPU's older loop emitters compile them in about two thirds of the time of the
# default fusion emitters (2.6 s -> 1.8 s on the default report, 2-core CPU) with the same
# arithmetic: the draws are pinned by digest and golden in tests/test_simulate.py. An XLA that does
# not know the option rejects it; `_diffract` then compiles with the defaults.
_DIFFRACT_COMPILER_OPTIONS = MappingProxyType({"xla_cpu_use_fusion_emitters": False})
_compiler_options_ok = [True]


def _diffract_program(
    patches: Complex64[Array, "n N N"],
    probe: Complex64[Array, "N N"],
    scale: Float32[Array, ""],
    key: PRNGKeyArray,
    chunk: Int32[Array, ""],
    *,
    noise: bool,
) -> Float32[Array, "n N N"]:
    """Diffraction amplitudes `sqrt(Poisson(|fftshift(FFT(s·O·P))|²/N²)) / s` (§6 steps 3-8); needs x64.

    The noise of chunk `chunk` is drawn with `fold_in(key, chunk)` (folded in here: one program
    fewer to compile and look up than an eager `fold_in`).
    """
    N = patches.shape[-1]
    amp = jnp.abs(patches)
    phase = jnp.angle(patches)
    obj = jax.lax.complex(scale * (amp * jnp.cos(phase)), scale * (amp * jnp.sin(phase)))
    psi = obj * probe[None, :, :]
    far = jnp.fft.fft2(psi, axes=(-2, -1))
    intensity = (far.real * far.real + far.imag * far.imag) / float(N * N)
    amplitude = jnp.sqrt(jnp.fft.fftshift(intensity, axes=(-2, -1)))
    if noise:
        amplitude = jnp.sqrt(poisson_counts(jr.fold_in(key, chunk), amplitude * amplitude))
    return amplitude / scale


_diffract_default = jax.jit(_diffract_program, static_argnames=("noise",))
try:
    _diffract_cheap = jax.jit(
        _diffract_program,
        static_argnames=("noise",),
        compiler_options=dict(_DIFFRACT_COMPILER_OPTIONS),
    )
except TypeError:  # a JAX without per-function compiler options
    _diffract_cheap = _diffract_default


def _diffract(patches, probe, scale, key, chunk, *, noise: bool) -> Float32[Array, "n N N"]:
    """`_diffract_program`, compiled with `_DIFFRACT_COMPILER_OPTIONS` where XLA knows them."""
    if _compiler_options_ok[0]:
        try:
            return _diffract_cheap(patches, probe, scale, key, chunk, noise=noise)
        except Exception as e:  # XlaRuntimeError / JaxRuntimeError, by JAX version
            if "compile option" not in str(e):
                raise
            _compiler_options_ok[0] = False
            logger.info("XLA rejected %s (%s); compiling with defaults",
                        dict(_DIFFRACT_COMPILER_OPTIONS), e)  # fmt: skip
    return _diffract_default(patches, probe, scale, key, chunk, noise=noise)


def _seed_key(seed: int) -> jax.Array:
    """`jax.random.key(seed)` for a seed in [0, 2**32), built on the host where JAX's default PRNG is threefry.

    A threefry key of such a seed is the pair `[0, seed]`; wrapping it directly spares the seeding
    program (compiled, or looked up in the persistent cache, on every run of the CLI).
    """
    if jax.config.jax_default_prng_impl == "threefry2x32" and 0 <= seed < 2**32:
        return jr.wrap_key_data(np.array([0, seed], np.uint32), impl="threefry2x32")
    return jr.key(seed)


def _check_key(key) -> jax.Array:
    if (
        isinstance(key, jax.Array)
        and jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
        and key.shape == ()
    ):
        return key
    if isinstance(key, (jax.Array, np.ndarray)) and key.dtype == np.uint32 and key.shape == (2,):
        return jr.wrap_key_data(jnp.asarray(key))
    raise PtychoInputError(
        f"simulate: key: expected a scalar jax.random.key(...) (threefry), got "
        f"{type(key).__name__} {getattr(key, 'shape', '')} {getattr(key, 'dtype', '')}"
    )


@dataclasses.dataclass(frozen=True)
class _Simulated:
    raw: RawData
    sim_scale: float
    energy: np.ndarray


def _simulate_positions(
    obj: np.ndarray,
    probe: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    *,
    nphotons: float,
    key: jax.Array,
    noise: bool,
    metadata: dict,
) -> _Simulated:
    """Host driver of §6: chunked patch/energy pass, scale s on the host, chunked diffraction pass."""
    n, N = x.shape[0], probe.shape[0]
    chunk = min(n, max(1, _CHUNK_PIXELS // (N * N)))
    centres = np.stack([x, y], axis=1).astype(
        np.float32
    )  # the upstream float32 cast of the offsets
    pad = (-n) % chunk
    if pad:  # pad to whole chunks with a real position so every call has one shape (one compile)
        centres = np.concatenate([centres, np.repeat(centres[:1], pad, axis=0)])
    starts = range(0, n + pad, chunk)
    with jax.enable_x64(True):
        # device_put, not jnp.asarray: the same arrays without a conversion program to compile
        # (jnp.asarray stages one per shape, looked up even on a persistent-cache hit)
        obj_d, probe_d = jax.device_put(obj), jax.device_put(probe)
        parts = [
            _patches_and_energy(obj_d, jax.device_put(centres[i : i + chunk]), probe_d, N=N)
            for i in starts
        ]
        energy = np.concatenate([np.asarray(e) for _, e in parts])[:n]
        mean_energy = float(np.mean(energy))
        if not (math.isfinite(mean_energy) and mean_energy > 0):
            raise PtychoInputError(
                f"simulate: mean frame energy Σ|O·P|²: expected > 0, got {mean_energy} "
                "(object or probe zero at every position)"
            )
        scale = np.float32(
            np.sqrt(nphotons / mean_energy)
        )  # float64 sum and sqrt, one rounding (§6 step 4)
        s_d = jax.device_put(scale)
        diff = [
            _diffract(p, probe_d, s_d, key, np.int32(j), noise=noise)
            for j, (p, _) in enumerate(parts)
        ]
        diff3d = np.concatenate([np.asarray(d) for d in diff])[:n]
        patches = np.concatenate([np.asarray(p) for p, _ in parts])[:n]
    # ≈ s up to Poisson noise (§6 step 9); Σ diff3d² by the core's one float64 frame-energy sum
    norm_Y_I = float(np.float32(np.sqrt(nphotons / np.float64(mean_frame_energy(diff3d)))))
    metadata = dict(metadata, sim_scale=float(scale), noise=bool(noise), n_positions=int(n),
                    noise_key_data=[int(v) for v in np.asarray(jr.key_data(key)).ravel()])  # fmt: skip
    raw = scan_raw(
        x,
        y,
        diff3d,
        probe=probe,
        obj=obj,
        Y=patches[..., None],
        norm_Y_I=norm_Y_I,
        metadata=metadata,
    )
    logger.info("simulated %d frames of %dx%d: s = %.7f, norm_Y_I = %.7f", n, N, N, scale, norm_Y_I)
    return _Simulated(raw=raw, sim_scale=float(scale), energy=energy)


def simulate_from_positions(
    obj: ArrayLike,
    probe: ArrayLike,
    *,
    xcoords: ArrayLike,
    ycoords: ArrayLike,
    nphotons: float,
    key: jax.Array,
    noise: bool = True,
) -> RawData:
    """Simulated RawData for given object, probe and positions, as upstream `RawData.from_simulation`.

    `diff3d = sqrt(Poisson(|fftshift(FFT2(s·O·P))|²/N²)) / s` (amplitudes, simulation.md §6) with
    the float32 simulation scale `s = sqrt(nphotons / mean_m Σ(|O|·|P|)²)`; `Y` holds the
    un-illuminated object patches, `norm_Y_I = sqrt(nphotons / mean_m Σ diff3d²)`, and
    `metadata["sim_scale"]` is s. `noise=False` gives the expected amplitudes `A/s` (no draw).
    Frames go in chunks of `max(1, 2**22 // N²)` (1024 for N = 64); chunk j draws its noise
    with `fold_in(key, j)`, so the draws depend only on `key`, N and the positions.

    Args:
        obj: (H, W) complex64 object.
        probe: (N, N) complex64 probe (already normalised).
        xcoords, ycoords: (n,) float positions in object pixels (x = column); cast to float32 for
            the patches, as upstream.
        nphotons: mean photon count per frame over the whole set.
        key: `jax.random.key(...)` for the photon noise.
        noise: draw Poisson counts (True) or return the expected amplitudes.

    Raises:
        PtychoInputError: bad shapes or dtypes, non-finite positions, zero energy.
    """
    where = "simulate_from_positions"
    check_object(obj, where)
    p = np.asarray(probe)
    if p.ndim != 2 or p.shape[0] != p.shape[1] or p.dtype != np.complex64 or p.shape[0] < 2:
        raise input_error(
            f"{where}: probe", "a square (N, N) complex64 array", f"shape {p.shape} dtype {p.dtype}"
        )
    x, y = np.asarray(xcoords), np.asarray(ycoords)
    check_centres(np.stack([x, y], axis=1) if x.ndim == 1 and x.shape == y.shape else x, where)
    x, y = x.astype(np.float64), y.astype(np.float64)
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise input_error(f"{where}: xcoords/ycoords", "finite values", "NaN/Inf")
    n = float(nphotons)
    if not (math.isfinite(n) and n > 0):
        raise input_error(f"{where}: nphotons", "a finite number > 0", nphotons)
    meta = {"source": "ptycho_jax.simulate_from_positions", "nphotons": n}
    sim = _simulate_positions(
        np.asarray(obj), p, x, y, nphotons=n, key=_check_key(key), noise=bool(noise), metadata=meta
    )
    return sim.raw


# ---------------------------------------------------------------------------------------------
# Split (simulation.md §7) and the scenario entry points


def _split_order(coords: np.ndarray, split_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    n = coords.shape[0]
    if not 0.0 < split_fraction < 1.0:
        raise input_error("split_raw_by_axis: split_fraction", "a number in (0, 1)", split_fraction)
    test = int(round(n * split_fraction))  # noqa: RUF046 (as upstream)
    if test <= 0 or test >= n:
        raise input_error(
            "split_raw_by_axis: split_fraction",
            f"a test count in [1, {n - 1}] for {n} positions",
            test,
        )
    order = np.argsort(coords)  # default quicksort, as upstream; no ties for continuous coordinates
    return order[: n - test], order[n - test :]


def split_raw_by_axis(
    raw: RawData, *, split_fraction: float = 0.5, axis: Literal["x", "y"] = "y"
) -> tuple[RawData, RawData]:
    """`(train, test)`: the positions with the smallest / largest `axis` coordinates (simulation.md §7).

    `test = int(round(n · split_fraction))` positions go to the test half; each half is gathered
    in ascending coordinate order; probe, object, `norm_Y_I` and metadata are shared.

    Raises:
        PtychoInputError: bad axis or fraction, or an empty half.
    """
    if axis not in ("x", "y"):
        raise input_error("split_raw_by_axis: axis", "'x' or 'y'", axis)
    coords = raw.xcoords if axis == "x" else raw.ycoords
    train_idx, test_idx = _split_order(coords, float(split_fraction))
    return raw.subset(train_idx), raw.subset(test_idx)


@dataclasses.dataclass(frozen=True, eq=False, kw_only=True)
class SimulatedData:
    """A simulated scenario split into train (low y) and test (high y) halves.

    Attributes:
        train: RawData of the train half (`metadata["split"] == "train"`).
        test: RawData of the test half.
        sim_scale: float32 simulation scale s (as a Python float) of the full set.
        scenario: the Scenario simulated.
        train_energy: (train_count,) float64 noise-free `Σ|O·P|²` per train frame, in `train` order
            (the expectation of `Σ diff3d²`).
        test_energy: (test_count,) float64, likewise for `test`.
    """

    train: RawData
    test: RawData
    sim_scale: float
    scenario: Scenario
    train_energy: Float64[np.ndarray, " m_train"]
    test_energy: Float64[np.ndarray, " m_test"]


def _resolve(scenario: Scenario | str) -> Scenario:
    if isinstance(scenario, str):
        return get_scenario(scenario)
    if not isinstance(scenario, Scenario):
        raise input_error(
            "simulate: scenario", "a Scenario or a preset name", type(scenario).__name__
        )
    return scenario


def _simulate_scenario(scenario: Scenario | str, key, noise: bool) -> tuple[Scenario, _Simulated]:
    sc = _resolve(scenario)
    key = _seed_key(sc.sim_seed) if key is None else _check_key(key)
    obj = make_lines_object(sc.object_size, seed=sc.object_seed)
    if sc.probe_mode == "custom":
        probe = _load_custom_probe(sc.probe_path, sc.N)
    else:
        probe = make_idealized_probe(sc.N, default_probe_scale=sc.default_probe_scale)
    probe = normalize_probe(probe, probe_scale=sc.probe_scale)
    x, y = make_scan_positions(
        sc.total_images, object_shape=obj.shape, buffer=sc.buffer, seed=sc.position_seed
    )
    meta = {"source": "ptycho_jax.simulate", "scenario": sc.to_dict()}
    sim = _simulate_positions(
        obj, probe, x, y, nphotons=sc.nphotons, key=key, noise=bool(noise), metadata=meta
    )
    return sc, sim


def simulate_raw(
    scenario: Scenario | str, *, key: jax.Array | None = None, noise: bool = True
) -> RawData:
    """The unsplit simulated RawData of a scenario (all `total_images` positions, simulation order).

    See `simulate`; `metadata` holds the scenario, `sim_scale` and the noise key.
    """
    return _simulate_scenario(scenario, key, noise)[1].raw


def simulate(
    scenario: Scenario | str, *, key: jax.Array | None = None, noise: bool = True
) -> SimulatedData:
    """Simulate a sim_lines scenario and split it by y, as the upstream study runner (simulation.md §1).

    Object, probe, positions and the split are bit-identical to upstream; the Poisson draws use
    `key` (default `jax.random.key(scenario.sim_seed)`; see `simulate_from_positions`) — upstream
    drew them from TensorFlow's global RNG, so only their statistics can match.

    Args:
        scenario: a Scenario or a preset name (`"gs1_ideal"`, `"gs2_ideal"`).
        key: PRNG key for the photon noise.
        noise: False returns the expected (noise-free) amplitudes.

    Returns:
        SimulatedData with train and test halves, the simulation scale and per-frame expected energies.

    Raises:
        PtychoInputError: unknown scenario name, bad key.
    """
    sc, sim = _simulate_scenario(scenario, key, noise)
    axis = sc.split_axis
    coords = sim.raw.xcoords if axis == "x" else sim.raw.ycoords
    train_idx, test_idx = _split_order(coords, sc.split_fraction)
    halves = []
    for part, idx in (("train", train_idx), ("test", test_idx)):
        sub = sim.raw.subset(idx)
        halves.append(
            dataclasses.replace(sub, metadata=dict(sim.raw.metadata, split=part, split_axis=axis))
        )
    return SimulatedData(
        train=halves[0],
        test=halves[1],
        sim_scale=sim.sim_scale,
        scenario=sc,
        train_energy=sim.energy[train_idx],
        test_energy=sim.energy[test_idx],
    )
