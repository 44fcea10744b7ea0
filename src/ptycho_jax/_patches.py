"""Bilinear object-patch extraction as local gathers (pipeline.md §5.1, §5.2, §5.4; simulation.md §6 step 2)."""

import functools as ft
import logging

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike
from jaxtyping import Array, Complex64, Float32, Float64

from ._errors import PtychoInputError
from ._params import PatchPositions

logger = logging.getLogger(__name__)


def _dtype_of(a) -> np.dtype:
    return np.dtype(a.dtype) if hasattr(a, "dtype") else np.asarray(a).dtype


def _describe(a) -> str:
    return f"shape {tuple(np.shape(a))} dtype {_dtype_of(a)}"


def _fma_f64(
    a: Float32[Array, "*s"], b: Float32[Array, "*s"], c: Float32[Array, "*s"]
) -> Float32[Array, "*s"]:
    """`fma(a, b, c)` rounded once to float32, emulated in float64 (a·b is exact there); needs x64."""
    return (a.astype(jnp.float64) * b.astype(jnp.float64) + c.astype(jnp.float64)).astype(
        jnp.float32
    )


@ft.partial(jax.jit, static_argnames=("N", "fma", "C"))
def patch_kernel(
    obj: Complex64[Array, "H W"],
    centres: Float32[Array, "P 2"],
    *,
    N: int,
    fma: bool,
    C: int | None = None,
) -> Complex64[Array, "P N N"] | Complex64[Array, "B N N C"]:
    """Gather the four bilinear corners of every patch pixel from `obj` (zero outside) and blend them.

    With `C`, patches b·C + c are computed directly in the channel-last (B, N, N, C) layout, the
    same operations per element (same bits), so no (P, N, N) array is written and then transposed.

    Padded-canvas coordinates: canvas pixel (i, j) is `obj[i - N//2, j - N//2]` or 0. Patch pixel
    (r, q) samples the canvas at `(sx, sy) = (float32(q + cx), float32(r + cy))`. With `fma=True`
    (x64 must be enabled) the blend is `fma(wd, Id, fma(wc, Ic, fma(wa, Ia, wb*Ib)))` emulated in
    float64, the reference's evaluation order; otherwise a plain float32 sum that XLA may contract.
    """
    H, W = obj.shape
    pad = N // 2
    ramp = jnp.arange(N, dtype=jnp.float32)
    sx = ramp[None, :] + centres[:, 0:1]  # (P, N): column source coordinate per patch column
    sy = ramp[None, :] + centres[:, 1:2]  # (P, N): row source coordinate per patch row
    if C is None:
        row_axis, col_axis = (lambda a: a[:, :, None]), (lambda a: a[:, None, :])
    else:  # (P, N) -> (B, N, C), then rows (B, N, 1, C) and columns (B, 1, N, C)
        channel_last = lambda a: a.reshape(-1, C, N).transpose(0, 2, 1)
        sx, sy = channel_last(sx), channel_last(sy)
        row_axis, col_axis = (lambda a: a[:, :, None, :]), (lambda a: a[:, None, :, :])
    x0 = jnp.floor(sx)
    y0 = jnp.floor(sy)
    wx = col_axis(sx - x0)  # exact in float32
    wy = row_axis(sy - y0)
    # Clip before the integer cast so far-away centres cannot overflow int32; a clipped corner is
    # outside the object either way and so contributes 0.
    hi = float(max(H, W) + N + 2)
    ix = jnp.clip(x0, -2.0, hi).astype(jnp.int32) - pad  # object column of the left corners
    iy = jnp.clip(y0, -2.0, hi).astype(jnp.int32) - pad  # object row of the top corners

    def corner(dy: int, dx: int) -> Complex64[Array, "P N N"] | Complex64[Array, "B N N C"]:
        rows = iy + dy
        cols = ix + dx
        inside = row_axis((rows >= 0) & (rows < H)) & col_axis((cols >= 0) & (cols < W))
        value = obj[row_axis(jnp.clip(rows, 0, H - 1)), col_axis(jnp.clip(cols, 0, W - 1))]
        return jnp.where(inside, value, jnp.zeros((), obj.dtype))

    ia, ib, ic, id_ = corner(0, 0), corner(0, 1), corner(1, 0), corner(1, 1)
    wa = (1.0 - wx) * (1.0 - wy)
    wb = wx * (1.0 - wy)
    wc = (1.0 - wx) * wy
    wd = wx * wy

    def blend(a, b, c, d):
        if fma:
            return _fma_f64(wd, d, _fma_f64(wc, c, _fma_f64(wa, a, wb * b)))
        return wa * a + wb * b + wc * c + wd * d

    re = blend(ia.real, ib.real, ic.real, id_.real)
    im = blend(ia.imag, ib.imag, ic.imag, id_.imag)
    return jax.lax.complex(re, im)


def check_object(obj: ArrayLike, where: str) -> None:
    if np.ndim(obj) != 2:
        raise PtychoInputError(
            f"{where}: obj: expected a 2-D (H, W) complex64 array, got {_describe(obj)}"
        )
    if _dtype_of(obj) != np.complex64:
        raise PtychoInputError(
            f"{where}: obj: expected dtype complex64, got {_describe(obj)}; cast with .astype(np.complex64)"
        )
    if min(np.shape(obj)) < 1:
        raise PtychoInputError(
            f"{where}: obj: expected a non-empty (H, W) array, got {_describe(obj)}"
        )


def check_centres(centres: ArrayLike, where: str) -> None:
    if np.ndim(centres) != 2 or np.shape(centres)[1] != 2:
        raise PtychoInputError(
            f"{where}: centres: expected a 2-D (P, 2) [x, y] array, got {_describe(centres)}"
        )
    dtype = _dtype_of(centres)
    if dtype not in (np.float32, np.float64):
        raise PtychoInputError(
            f"{where}: centres: expected dtype float32 (or float64, cast once), got {dtype}"
        )


def _is_traced(*xs) -> bool:
    return any(isinstance(x, jax.core.Tracer) for x in xs)


def extract_patches(obj: ArrayLike, centres: ArrayLike, *, N: int) -> Complex64[Array, "P N N"]:
    """Bilinear N×N patches of `obj` centred on `centres`, as upstream `get_image_patches` (pipeline.md §5).

    The object is zero-padded by `N//2` on every side (conceptually: the kernel gathers the four
    bilinear corners of each patch pixel from the unpadded object, with zero fill per corner, so
    nothing is padded or translated per patch). Patch pixel (row r, col q) samples the padded
    canvas at `(float32(q + cx), float32(r + cy))`, i.e. the object at `(cx + q - N//2,
    cy + r - N//2)`; the patch centre pixel `(N//2, N//2)` lands on `(cx, cy)`. Weights are float32
    and not renormalised; real and imaginary parts use the same weights.

    Evaluation order: on concrete inputs the blend is the reference's fused multiply-add chain,
    emulated in float64 under a scoped `jax.enable_x64` (bit-identical to the golden patches).
    Called on tracers (inside another `jit`), x64 cannot be switched on, so a plain float32 blend
    is used (XLA may contract it; within ~3e-7·max|Y| of the reference, pipeline.md §5.2).

    Args:
        obj: (H, W) complex64 object.
        centres: (P, 2) `[x, y]` patch centres in object pixels (x = column), float32; float64 is
            cast to float32 once, which is the upstream cast point.
        N: patch size (static; a new N recompiles).

    Returns:
        (P, N, N) complex64 patches.

    Raises:
        PtychoInputError: wrong rank or dtype, non-positive N, NaN/Inf centres.
    """
    where = "extract_patches"
    N, centres, traced = _checked_inputs(obj, centres, N, where)
    if traced:
        return patch_kernel(jnp.asarray(obj), centres, N=N, fma=False)
    with jax.enable_x64(True):
        out = patch_kernel(jnp.asarray(obj), jnp.asarray(centres), N=N, fma=True)
    return out


def _checked_inputs(obj, centres, N, where: str):
    """`(N, float32 centres, traced)` after the checks of `extract_patches`."""
    if not isinstance(N, (int, np.integer)) or isinstance(N, bool) or N < 1:
        raise PtychoInputError(f"{where}: N: expected a positive int, got {N!r}")
    check_object(obj, where)
    check_centres(centres, where)
    if _is_traced(obj, centres):
        return int(N), jnp.asarray(centres).astype(jnp.float32), True
    centres32 = np.asarray(centres).astype(np.float32)
    finite = np.isfinite(centres32)
    if not finite.all():
        bad = np.argwhere(~finite)[0]
        raise PtychoInputError(
            f"{where}: centres: expected finite float32 values, got {int((~finite).sum())} NaN/Inf "
            f"(first at index {tuple(int(i) for i in bad)}); values beyond float32 range overflow on the cast"
        )
    return int(N), centres32, False


@ft.partial(jax.jit, static_argnames=("N", "C", "fma"))
def group_patch_kernel(
    obj: Complex64[Array, "H W"], centres: Float32[Array, "P 2"], *, N: int, C: int, fma: bool
) -> Complex64[Array, "B N N C"]:
    """`patch_kernel` with the channel-last layout in the same program: one (B, N, N, C) output, no
    (P, N, N) intermediate of its own (its bits are those of `patch_kernel`)."""
    return patch_kernel(obj, centres, N=N, fma=fma, C=C)


def group_patch_centres(
    coords_offsets: Float64[np.ndarray, "B 1 2 1"] | None,
    coords_relative: Float64[np.ndarray, "B 1 2 C"] | None,
    coords_nn: Float64[np.ndarray, "B 1 2 C"] | None,
    *,
    positions: PatchPositions,
) -> Float32[np.ndarray, "BC 2"]:
    """Flat (B·C, 2) float32 `[x, y]` patch centres of grouped positions, in flat order b·C + c.

    `positions="upstream"`: `float32(coords_offsets + coords_relative)`, summed in float64 then
    cast, the literal upstream `get_image_patches` fallback; with `local_offset_sign = -1` and C > 1
    this is `2·centre - position`, each member mirrored through its group centre (pipeline.md §5.4).
    `positions="member"`: `float32(coords_nn)`, each member at its own scan position (the golden
    `Y_from_sim_patches`). Only the arrays the chosen mode uses are required (others may be None).

    Raises:
        PtychoInputError: unknown `positions`, a needed array missing or of the wrong shape.
    """
    where = "group_patch_centres"

    def need(name, a, last):
        if a is None:
            raise PtychoInputError(
                f"{where}: {name}: expected a (B, 1, 2, C) float array for positions={positions!r}, got None"
            )
        a = np.asarray(a)
        if (
            a.ndim != 4
            or a.shape[1] != 1
            or a.shape[2] != 2
            or (last is not None and a.shape[3] != last)
        ):
            want = "(B, 1, 2, 1)" if last == 1 else "(B, 1, 2, C)"
            raise PtychoInputError(f"{where}: {name}: expected shape {want}, got {_describe(a)}")
        if not np.issubdtype(a.dtype, np.floating):
            raise PtychoInputError(f"{where}: {name}: expected a float64 array, got {_describe(a)}")
        return a.astype(np.float64, copy=False)

    if positions == "upstream":
        off = need("coords_offsets", coords_offsets, 1)
        rel = need("coords_relative", coords_relative, None)
        if rel.shape[0] != off.shape[0]:
            raise PtychoInputError(
                f"{where}: coords_relative: expected B = {off.shape[0]} groups (as coords_offsets), got {rel.shape[0]}"
            )
        return np.ascontiguousarray(patch_centres(None, off, rel, positions=positions))
    if positions == "member":
        return np.ascontiguousarray(
            patch_centres(need("coords_nn", coords_nn, None), None, None, positions=positions)
        )
    raise PtychoInputError(
        f"{where}: positions: expected 'upstream' or 'member', got {positions!r}"
    )


def patch_centres(members, offsets, relative, *, positions: PatchPositions):
    """The patch-centre rule on float64 NumPy or JAX coordinates: flat (B·C, 2) float32 `[x, y]`, order b·C + c.

    "upstream": `float32(offsets + relative)` (float64 sum, then one cast, pipeline.md §5.1 step 2);
    "member": `float32(members)`.
    """
    xy = (offsets + relative) if positions == "upstream" else members
    B, _, _, C = xy.shape
    return xy.astype(np.float32)[:, 0].transpose(0, 2, 1).reshape(B * C, 2)


def extract_group_patches(
    obj: ArrayLike, centres_flat: ArrayLike, *, N: int, C: int
) -> Complex64[Array, "B N N C"]:
    """Grouped channel-last patches: `extract_patches` at flat centres b·C + c, reshaped to (B, N, N, C).

    Args:
        obj: (H, W) complex64 object.
        centres_flat: (B·C, 2) `[x, y]` centres, e.g. from `group_patch_centres`.
        N: patch size.
        C: channels per group (gridsize²).

    Raises:
        PtychoInputError: as `extract_patches`, or the centre count is not a multiple of C.
    """
    if not isinstance(C, (int, np.integer)) or isinstance(C, bool) or C < 1:
        raise PtychoInputError(f"extract_group_patches: C: expected a positive int, got {C!r}")
    P = np.shape(centres_flat)[0] if np.ndim(centres_flat) >= 1 else 0
    if P % int(C) != 0:
        raise PtychoInputError(
            f"extract_group_patches: centres_flat: expected a multiple of C = {C} rows (B·C), got {P}"
        )
    N, centres, traced = _checked_inputs(obj, centres_flat, N, "extract_patches")
    if traced:
        return group_patch_kernel(jnp.asarray(obj), centres, N=N, C=int(C), fma=False)
    with jax.enable_x64(True):
        return group_patch_kernel(jnp.asarray(obj), jnp.asarray(centres), N=N, C=int(C), fma=True)
