"""An independent TensorFlow reference of the data chain (pipeline.md §3.8, §4–§9).

Written from `reference/pipeline.md`, not from `ptycho_jax`: it shares the I/O types (a
`RawData`-like object with upstream field names, dicts keyed like the upstream grouped dict) and
nothing else. Where upstream computes with NumPy (coordinates in float64, the loader's `np.mean`,
`np.abs`/`np.angle` in the container) this module does too; where upstream uses TensorFlow
(`tf.reduce_sum` in float32 or float64, `** 2` through TF's pow kernel, `tf.exp` of the float32
`log_scale`, the bilinear translation) it uses the same TF op, so TF-CPU's own reduction order and
rounding come out as upstream's. Its formulas (Σx², `X = gain·D`, the scales) are therefore its
own on purpose, written again rather than shared with `ptycho_jax`'s core.

TensorFlow is imported lazily, on the first call that needs it.
"""

import functools as ft
import logging
import math
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np

logger = logging.getLogger(__name__)

LOCAL_OFFSET_SIGN = -1.0
"""`local_offset_sign` of [SEED]/[MAIN] (pipeline.md §4)."""


@ft.cache
def _tf():
    """Import TensorFlow on first use (it takes seconds and is an optional dependency).

    With `TF_CPP_MIN_LOG_LEVEL=3` (the CLI sets it unless -v) the C++ lines TensorFlow writes to
    fd 2 while it loads (absl's preamble, oneDNN's notice), which that variable does not stop, are
    discarded; an import error still raises with its message."""
    import os

    if os.environ.get("TF_CPP_MIN_LOG_LEVEL") != "3":
        import tensorflow as tf

        return tf
    import sys

    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        import tensorflow as tf

        tf.constant(0.0) + 1.0  # the first op logs too (oneDNN's notice)
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    return tf


# ---------------------------------------------------------------------------------------------
# §3.8 / §4: gather and coordinates


def relative_coords(coords_nn: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Group centres and sign-flipped member offsets, as upstream `get_relative_coords` (§4).

    Args:
        coords_nn: (B, 1, 2, C) float64 member positions, [x, y] on axis 2.

    Returns:
        `(offsets, relative)`: (B, 1, 2, 1) NumPy float64 channel mean and
        (B, 1, 2, C) `-1 * (coords_nn - offsets)`.
    """
    if coords_nn.ndim != 4:
        raise ValueError(f"coords_nn: expected rank 4 (B, 1, 2, C), got shape {coords_nn.shape}")
    offsets = np.mean(coords_nn, axis=3, keepdims=True)
    relative = LOCAL_OFFSET_SIGN * (coords_nn - offsets)
    return offsets, relative


def _coords_nn(x: np.ndarray, y: np.ndarray, nn: np.ndarray) -> np.ndarray:
    """(B, 1, 2, C) float64 `[x, y]` of every member; built as upstream (stack, transpose)."""
    stacked = np.stack([np.asarray(x)[nn], np.asarray(y)[nn]])  # (2, B, C)
    return np.transpose(stacked, (1, 0, 2))[:, None, :, :]


def group_coordinates(raw: Any, nn_indices: np.ndarray) -> dict[str, np.ndarray]:
    """The six coordinate arrays of the grouped dict (§3.8, §4), float64 NumPy."""
    nn = np.asarray(nn_indices)
    out: dict[str, np.ndarray] = {}
    cnn = _coords_nn(raw.xcoords, raw.ycoords, nn)
    off, rel = relative_coords(cnn)
    out.update(coords_nn=cnn, coords_offsets=off, coords_relative=rel)
    if getattr(raw, "xcoords_start", None) is not None:
        snn = _coords_nn(raw.xcoords_start, raw.ycoords_start, nn)
        soff, srel = relative_coords(snn)
        out.update(coords_start_nn=snn, coords_start_offsets=soff, coords_start_relative=srel)
    return out


def gather_diffraction(diff3d: np.ndarray, nn_indices: np.ndarray) -> np.ndarray:
    """(B, N, N, C) `diff3d[nn[b, c]]` with the group axis moved last (`tf.gather`, exact)."""
    tf = _tf()
    g = tf.gather(tf.convert_to_tensor(diff3d), tf.convert_to_tensor(np.asarray(nn_indices)))
    return tf.transpose(g, (0, 2, 3, 1)).numpy()


def gather_simulated_patches(Y: np.ndarray, nn_indices: np.ndarray) -> np.ndarray:
    """Rule (a) of §3.8: gather precomputed patches `Y[nn]`, channel axis last, singleton dropped."""
    tf = _tf()
    g = tf.gather(tf.convert_to_tensor(Y), tf.convert_to_tensor(np.asarray(nn_indices)))
    if g.shape.rank == 5:
        g = tf.squeeze(tf.transpose(g, (0, 2, 3, 1, 4)), axis=-1)
    elif g.shape.rank == 4:
        g = tf.transpose(g, (0, 2, 3, 1))
    else:
        raise ValueError(f"RawData.Y: expected (M, N, N, 1) or (M, N, N), got {Y.shape}")
    return g.numpy()


# ---------------------------------------------------------------------------------------------
# §5: patch extraction (bilinear translate, zero fill per corner)


def extract_patches(obj: np.ndarray, positions: np.ndarray, *, N: int) -> np.ndarray:
    """Bilinear N×N patches of `obj` centred on float32 `positions`, as `get_image_patches` (§5).

    The object is zero-padded by N//2; patch pixel (r, q) samples the padded object at
    `(sx, sy) = (float32(q + px), float32(r + py))`; each of the four corners outside the padded
    image contributes 0 and the weights are not renormalised (§5.2). Real and imaginary parts use
    the same float32 weights.

    Args:
        obj: (H, W) complex object.
        positions: (P, 2) float32 `[x, y]` object-pixel positions (global + local offsets).
        N: patch size.

    Returns:
        (P, N, N) complex64 patches.
    """
    tf = _tf()
    obj = np.asarray(obj)
    if obj.ndim != 2:
        raise ValueError(f"objectGuess: expected 2-D (H, W), got shape {obj.shape}")
    pad = N // 2
    padded = tf.pad(tf.convert_to_tensor(obj.astype(np.complex64)), [[pad, pad], [pad, pad]])
    Hp, Wp = int(padded.shape[0]), int(padded.shape[1])
    planes = tf.stack([tf.math.real(padded), tf.math.imag(padded)], axis=-1)  # (Hp, Wp, 2)
    flat = tf.reshape(planes, (Hp * Wp, 2))

    pos = tf.convert_to_tensor(np.asarray(positions, dtype=np.float32))
    grid = tf.range(N, dtype=tf.float32)
    sx = grid[None, None, :] + pos[:, 0][:, None, None]  # (P, 1, N)  float32 add
    sy = grid[None, :, None] + pos[:, 1][:, None, None]  # (P, N, 1)
    x0f, y0f = tf.floor(sx), tf.floor(sy)
    wx, wy = sx - x0f, sy - y0f
    x0, y0 = tf.cast(x0f, tf.int64), tf.cast(y0f, tf.int64)
    x1, y1 = x0 + 1, y0 + 1

    def corner(yi, xi):
        inside = (xi >= 0) & (xi <= Wp - 1) & (yi >= 0) & (yi <= Hp - 1)
        idx = tf.clip_by_value(yi, 0, Hp - 1) * Wp + tf.clip_by_value(xi, 0, Wp - 1)
        vals = tf.gather(flat, idx)  # (P, N, N, 2)
        return tf.where(inside[..., None], vals, tf.zeros_like(vals))

    one = tf.constant(1.0, tf.float32)
    w00 = ((one - wx) * (one - wy))[..., None]
    w10 = (wx * (one - wy))[..., None]
    w01 = ((one - wx) * wy)[..., None]
    w11 = (wx * wy)[..., None]
    out = w00 * corner(y0, x0) + w10 * corner(y0, x1) + w01 * corner(y1, x0) + w11 * corner(y1, x1)
    return tf.complex(out[..., 0], out[..., 1]).numpy()


def image_patches(
    obj: np.ndarray, global_offsets: np.ndarray, local_offsets: np.ndarray, *, N: int
) -> np.ndarray:
    """(B, N, N, C) complex64 patches at `float32(global + local)`, as `get_image_patches` (§5.1).

    With upstream's `coords_relative` as `local_offsets` this is the literal mirrored-position
    behaviour for C > 1 (§5.4); with `global = coords_nn`, `local = 0` it is the per-member one.
    """
    off = (np.asarray(global_offsets) + np.asarray(local_offsets)).astype(np.float32)
    B, _, _, C = off.shape
    flat = np.transpose(off[:, 0, :, :], (0, 2, 1)).reshape(B * C, 2)  # row b*C + c, [x, y]
    p = extract_patches(obj, flat, N=N)
    return np.ascontiguousarray(np.transpose(p.reshape(B, C, N, N), (0, 2, 3, 1)))


def grouped_patches(
    raw: Any,
    grouped: Mapping[str, np.ndarray],
    *,
    N: int,
    patch_positions: Literal["upstream", "member"] = "upstream",
) -> np.ndarray | None:
    """The grouped dict's `Y` (§3.8 rules a-c), or per-member patches with `"member"`."""
    nn = grouped["nn_indices"]
    if getattr(raw, "Y", None) is not None:
        return gather_simulated_patches(raw.Y, nn)
    obj = getattr(raw, "objectGuess", None)
    if obj is None:
        return None
    if patch_positions == "upstream":
        return image_patches(obj, grouped["coords_offsets"], grouped["coords_relative"], N=N)
    if patch_positions == "member":
        cnn = grouped["coords_nn"]
        return image_patches(obj, cnn, np.zeros_like(cnn), N=N)
    raise ValueError(f"patch_positions: expected 'upstream' or 'member', got {patch_positions!r}")


# ---------------------------------------------------------------------------------------------
# §6: normalize_data


def normalize_data(
    diffraction: np.ndarray, N: int, *, variant: Literal["main", "seed"] = "main"
) -> tuple[np.ndarray, np.float32]:
    """Scale amplitudes so the mean per-frame energy is (N/2)², as upstream `normalize_data`.

    `"main"` (§6.3): cast to float64, float64 `tf.reduce_sum` over (1, 2), NumPy mean, float32
    factor times the float32 input. `"seed"` (§6.2, also `loader.normalize_data`): float32 squares,
    float32 `tf.reduce_sum` over (1, 2) in TF-CPU's order, float32 `np.mean`, float32 factor.

    Returns:
        `(X_full, gain)`: float32 (B, N, N, C) and the float32 factor.
    """
    # its own Σx² and X = gain·D on purpose: the independent TF reference, not ptycho_jax's formulas
    tf = _tf()
    D = tf.convert_to_tensor(np.asarray(diffraction, dtype=np.float32))
    half_sq = (N / 2) ** 2
    if variant == "main":
        D64 = tf.cast(D, tf.float64)
        sums = tf.reduce_sum(D64 * D64, axis=(1, 2)).numpy()
        gain = np.float32(np.sqrt(half_sq / np.mean(sums)))
    elif variant == "seed":
        sums = tf.reduce_sum(tf.square(D), axis=(1, 2)).numpy()  # float32 (B, C)
        mean = np.mean(sums)  # float32, NumPy pairwise
        gain = np.float32(np.sqrt(np.float32(half_sq) / mean))
    else:
        raise ValueError(f"variant: expected 'main' or 'seed', got {variant!r}")
    X = (tf.constant(gain, tf.float32) * D).numpy()
    return X, gain


# ---------------------------------------------------------------------------------------------
# §8: intensity scales


def closed_form_scale_f32(N: int, nphotons: float) -> float:
    """[MAIN] `calculate_intensity_scale`: `sqrt(float32(nphotons)) / float32(N/2)`, TF float32."""
    tf = _tf()
    s = tf.sqrt(tf.constant(nphotons, tf.float32)) / tf.constant(N / 2, tf.float32)
    return float(s.numpy())


def closed_form_scale_f64(N: int, nphotons: float) -> float:
    """Report fallback `sqrt(nphotons) / (N/2)` in float64 (§8.4)."""
    tf = _tf()
    s = tf.sqrt(tf.constant(nphotons, tf.float64)) / tf.constant(N / 2, tf.float64)
    return float(s.numpy())


def mean_energy_f64(x: np.ndarray) -> float:
    """Mean over axis 0 of the float64 sum of squares over all other axes (`tf.reduce_sum`)."""
    tf = _tf()
    x64 = tf.cast(tf.convert_to_tensor(x), tf.float64)
    axes = tuple(range(1, x64.shape.rank))
    return float(tf.reduce_mean(tf.reduce_sum(x64 * x64, axis=axes)).numpy())


def dataset_scale(x: np.ndarray, nphotons: float, *, N: int | None = None) -> tuple[float, float]:
    """`(sqrt(nphotons / E), E)` with E the float64 mean per-sample energy over non-batch axes.

    For raw frames (M, N, N) this is the report's dataset-derived scale (§8.4); for the
    container X (B, N, N, C) it is the [SEED] training scale (§8.2), which falls back to the
    closed form `sqrt(nphotons)/(N/2)` when `E <= 1e-12` (pass `N` to enable the fallback).
    """
    E = mean_energy_f64(x)
    if E > 1e-12:
        return math.sqrt(nphotons / E), E
    if N is None:
        raise ValueError(f"dataset_scale: mean energy E={E} is not positive")
    return math.sqrt(nphotons) / (N / 2), E


def scale_nphotons(X: np.ndarray, nphotons: float) -> float:
    """Container `norm_Y_I` (§7.1 step 7): TF float32 `X ** 2` (pow kernel), sums, mean, sqrt."""
    tf = _tf()
    Xt = tf.convert_to_tensor(np.asarray(X, dtype=np.float32))
    sq = Xt**2  # TF's pow kernel, as upstream (not an exact square on every element)
    per_frame = tf.reduce_sum(sq, axis=(1, 2))
    mean = tf.reduce_mean(per_frame)
    return float(tf.sqrt(tf.constant(nphotons, tf.float32) / mean).numpy())


# ---------------------------------------------------------------------------------------------
# §9: IntensityScaler / IntensityScaler_inv


def make_log_scale(scale: float, *, trainable: bool = True):
    """The shared float32 `log_scale` variable, initialised to `float32(np.log(scale))`."""
    tf = _tf()
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"intensity_scale: expected a finite value > 0, got {scale!r}")
    return tf.Variable(
        np.float32(np.log(scale)), dtype=tf.float32, trainable=trainable, name="log_scale"
    )


@ft.cache
def _layer_classes():
    """Build the Keras layer pair on first use (keeps the Keras import lazy)."""
    tf = _tf()

    class IntensityScaler(tf.keras.layers.Layer):
        """`x / exp(log_scale)`, true float32 division by the TF scalar exp."""

        def __init__(self, log_scale, **kwargs):
            super().__init__(**kwargs)
            self._log_scale = log_scale

        def call(self, x):
            return x / tf.exp(self._log_scale)

    class IntensityScalerInv(tf.keras.layers.Layer):
        """`exp(log_scale) * x`, sharing the forward layer's variable."""

        def __init__(self, log_scale, **kwargs):
            super().__init__(**kwargs)
            self._log_scale = log_scale

        def call(self, x):
            return tf.exp(self._log_scale) * x

    return IntensityScaler, IntensityScalerInv


def make_scaler_pair(scale: float, *, trainable: bool = True):
    """`(log_scale, scaler, scaler_inv)`: a Keras layer pair sharing one float32 variable."""
    fwd_cls, inv_cls = _layer_classes()
    log_scale = make_log_scale(scale, trainable=trainable)
    return (
        log_scale,
        fwd_cls(log_scale, name="intensity_scaler"),
        inv_cls(log_scale, name="intensity_scaler_inv"),
    )


def apply_scaler(x: np.ndarray, scale: float) -> dict[str, np.ndarray]:
    """`log_scale`, `scaler_out = x / exp(log_scale)` and the round trip `scaler_inv_out`."""
    tf = _tf()
    log_scale, fwd, inv = make_scaler_pair(scale)
    xt = tf.convert_to_tensor(np.asarray(x, dtype=np.float32))
    out = fwd(xt)
    back = inv(out)
    return {
        "log_scale": np.asarray(log_scale.numpy(), dtype=np.float32),
        "scaler_out": np.asarray(out),
        "scaler_inv_out": np.asarray(back),
    }


# ---------------------------------------------------------------------------------------------
# §7: container


def make_container(
    grouped: Mapping[str, Any], X_full: np.ndarray, probe: np.ndarray, *, nphotons: float
) -> dict[str, np.ndarray]:
    """`PtychoDataContainer` fields from a grouped dict (§7.1, no split; §7.2)."""
    tf = _tf()
    X = np.asarray(X_full)
    if X.dtype != np.float32:
        X = X.astype(np.float32)
    coords = np.asarray(grouped["coords_start_relative"]).astype(np.float32)
    Y = grouped.get("Y")
    if Y is None:
        Y_I = np.ones(X.shape, np.float32)
        Y_phi = np.zeros(X.shape, np.float32)
    else:
        Y = np.asarray(Y)
        Y_I = np.abs(Y).astype(np.float32)
        Y_phi = np.angle(Y).astype(np.float32)
    if X.shape[-1] != Y_I.shape[-1]:
        raise ValueError(f"container: X has {X.shape[-1]} channels but Y_I has {Y_I.shape[-1]}")
    Y_complex = tf.cast(tf.convert_to_tensor(Y_I), tf.complex64) * tf.exp(
        tf.complex(tf.zeros_like(Y_phi), tf.convert_to_tensor(Y_phi))
    )
    return {
        "X": X,
        "Y_I": Y_I,
        "Y_phi": Y_phi,
        "Y_complex": Y_complex.numpy(),
        "coords_nominal": coords,
        "coords_true": coords.copy(),
        "probe": np.asarray(probe),
        "norm_Y_I": np.float32(scale_nphotons(X, nphotons)),
        "nn_indices": np.asarray(grouped["nn_indices"]),
        "global_offsets": np.asarray(grouped["coords_offsets"]),
        "local_offsets": np.asarray(grouped["coords_relative"]),
    }


# ---------------------------------------------------------------------------------------------
# the whole chain, given groups


def grouped_dict(
    raw: Any,
    nn_indices: np.ndarray,
    *,
    N: int,
    patch_positions: Literal["upstream", "member"] = "upstream",
) -> dict[str, Any]:
    """Upstream's grouped dict for injected `nn_indices` (§3.8), without `X_full`."""
    nn = np.asarray(nn_indices)
    if nn.ndim != 2:
        raise ValueError(f"nn_indices: expected 2-D (B, C), got shape {nn.shape}")
    n = len(raw.xcoords)
    if nn.size and (nn.min() < 0 or nn.max() >= n):
        raise ValueError(f"nn_indices: expected values in [0, {n}), got [{nn.min()}, {nn.max()}]")
    out: dict[str, Any] = {"nn_indices": nn}
    out["diffraction"] = gather_diffraction(raw.diff3d, nn)
    out.update(group_coordinates(raw, nn))
    out["Y"] = grouped_patches(raw, out, N=N, patch_positions=patch_positions)
    return out
