"""Unit tests of `ptycho_jax.crosscheck.diagnose`: each class on small synthetic arrays, the measured
fallback, the shift estimator, large-array sampling, and odd input that must never raise.

The classes on a real port's code path are in tests/test_crosscheck_mutations.py.
"""

import math
import types

import numpy as np
import pytest

from ptycho_jax.crosscheck import diagnose as D
from ptycho_jax.crosscheck.diagnose import DiagnosisContext, diagnose, estimate_shift


def _smooth_frames(B=6, H=32, C=3, seed=0):
    """(B, H, H, C) band-limited random frames (smooth enough for exact Fourier shifts)."""
    rng = np.random.RandomState(seed)
    spec = rng.randn(B, H, H, C) + 1j * rng.randn(B, H, H, C)
    k = np.fft.fftfreq(H)
    mask = (np.abs(k)[:, None] < 0.12) & (np.abs(k)[None, :] < 0.12)
    return np.real(np.fft.ifft2(spec * mask[None, :, :, None], axes=(1, 2)))


def _fourier_shift(a, dy, dx):
    """Content of `a` moved by (dy, dx) pixels (periodic, exact for band-limited frames)."""
    H, W = a.shape[1], a.shape[2]
    ky = np.fft.fftfreq(H)[:, None]
    kx = np.fft.fftfreq(W)[None, :]
    ph = np.exp(-2j * np.pi * (ky * dy + kx * dx))
    return np.real(np.fft.ifft2(np.fft.fft2(a, axes=(1, 2)) * ph[None, :, :, None], axes=(1, 2)))


# -- scale factors of any magnitude -------------------------------------------------------------
def test_inverted_scaler_factor_is_s_squared():
    rng = np.random.RandomState(1)
    x = rng.rand(4, 8, 8, 4).astype(np.float32) + 0.1
    s = 494.106  # the seed-era training scale of the goldens
    ref = (x / np.float32(s)).astype(np.float32)
    port = (x * np.float32(s)).astype(np.float32)
    ctx = DiagnosisContext(N=64, C=4, quantities={"s": s, "nphotons": 1e9})
    dg = diagnose("scaler_out", port, ref, context=ctx)
    assert dg.kind == "scale_factor"
    assert "244141" in dg.message  # s² = 2.44e5
    assert "s²" in dg.message and "inverted scaler" in dg.message and "s = 494.106" in dg.message
    # without the chain's quantities the factor is still found, and said to match nothing
    bare = diagnose("scaler_out", port, ref)
    assert bare.kind == "scale_factor" and "244141" in bare.message
    assert "matches no expression" in bare.message


def test_torch_normalisation_factor_names_both_energies():
    rng = np.random.RandomState(2)
    ref = rng.rand(4, 16, 16, 4).astype(np.float32)
    e_raw, e_grouped = 1000.0, 1086.8
    f = 2 * math.sqrt(e_grouped / e_raw)  # 2.085, ptycho_torch's factor on the goldens
    port = (ref * np.float32(f)).astype(np.float32)
    q = D.chain_quantities(scale=988.21, nphotons=1e9, gain=0.05, E_raw=e_raw, E_grouped=e_grouped)
    dg = diagnose("X_full", port, ref, context=DiagnosisContext(N=64, C=4, quantities=q))
    assert dg.kind == "scale_factor" and "2.08499" in dg.message
    assert "2·√(E_grouped/E_raw)" in dg.message and "raw vs grouped energy" in dg.message
    assert "E_raw = 1000" in dg.message and "E_grouped = 1086.8" in dg.message


@pytest.mark.parametrize(
    "factor, words",
    [
        (3.0, ["√C"]),  # C = 9
        (1 / 9, ["1/C"]),
        (4.0, ["4 = N²/(N/2)²"]),
        (math.sqrt(1e9), ["√nphotons"]),
        (1 / 988.21, ["1/s"]),
    ],
)
def test_scale_expressions(factor, words):
    rng = np.random.RandomState(3)
    ref = rng.rand(3, 8, 8, 9) + 0.5
    port = ref * factor
    q = {"s": 988.21, "nphotons": 1e9}
    dg = diagnose("X", port, ref, context=DiagnosisContext(N=64, C=9, quantities=q))
    assert dg.kind == "scale_factor", dg.message
    for w in words:
        assert w in dg.message, (w, dg.message)


def test_render_expressions():
    assert D._render([("E_grouped", 0.5), ("E_raw", -0.5)], 2.0) == "2·√(E_grouped/E_raw)"
    assert D._render([("s", 2.0)], 1.0) == "s²"
    assert D._render([("s", -2.0)], 1.0) == "1/s²"
    assert D._render([("C", -0.5)], 1.0) == "1/√C"
    assert D._render([("nphotons", 0.5)], 1.0) == "√nphotons"
    assert D._render([("s", 1.0), ("N", 1.0)], 0.5) == "s·N/2"


# -- sub-pixel and integer shifts -----------------------------------------------------------------
@pytest.mark.parametrize("dy, dx", [(0.5, 0.5), (0.3, -0.2), (-0.5, 0.0), (1.25, -0.75)])
def test_estimate_shift_recovers_fourier_shifts(dy, dx):
    ref = _smooth_frames()
    port = _fourier_shift(ref, dy, dx)
    got_dy, got_dx, res = estimate_shift(port, ref)
    assert got_dy == pytest.approx(dy, abs=0.03)
    assert got_dx == pytest.approx(dx, abs=0.03)
    assert res < 0.3  # bilinear interpolation of a band-limited frame is close, not exact


def test_subpixel_shift_is_named_with_the_offset():
    ref = _smooth_frames().astype(np.float32)
    port = _fourier_shift(ref, 0.5, 0.5).astype(np.float32)
    dg = diagnose("Y", port, ref)
    assert dg.kind == "subpixel_shift"
    assert "+0.50 rows, +0.50 cols" in dg.message and "half-pixel" in dg.message


def test_integer_shift_is_named():
    ref = _smooth_frames().astype(np.float32)
    port = np.roll(ref, (-1, 2), axis=(1, 2))
    dg = diagnose("Y", port, ref)
    assert dg.kind == "pixel_shift" and "-1 rows, +2 cols" in dg.message


# -- dtype-only differences ---------------------------------------------------------------------
def test_int_dtype_only():
    nn = np.arange(128, dtype=np.int32).reshape(32, 4)
    dg = diagnose("nn_indices", nn.astype(np.int64), nn)
    assert dg.kind == "dtype_only"
    assert dg.message.startswith("dtype only: port int64 vs reference int32, values equal")
    other = nn.astype(np.int64)
    other[3, 1] = 999
    dg = diagnose("nn_indices", other, nn)
    assert dg.kind == "integer_mismatch" and "1 of 128" in dg.message
    assert "also dtype: port int64 vs reference int32" in dg.message


def test_float_dtype_only_and_truncation():
    rng = np.random.RandomState(4)
    r64 = rng.rand(8, 1, 2, 4) * 100
    dg = diagnose("coords_nn", r64.astype(np.float32), r64)
    assert dg.kind == "dtype_only" and "values equal after rounding to float32" in dg.message
    r32 = rng.rand(4, 8, 8, 2).astype(np.float32)
    dg = diagnose("X", r32.astype(np.float64) * (1 + 1e-7), r32)
    assert dg.kind == "dtype_only" and "within float32 precision" in dg.message
    # float64 values rounded through float32 (same dtype) stay float_truncation
    dg = diagnose("coords_offsets", r64.astype(np.float32).astype(np.float64), r64)
    assert dg.kind == "float_truncation"
    # width change and a real difference: classified on the values, width noted
    dg = diagnose("X", (r32 * 3).astype(np.float64), r32)
    assert dg.kind == "scale_factor" and "values also differ" in dg.message


# -- layout, channels -----------------------------------------------------------------------------
def test_channel_first_layout():
    ref = _smooth_frames(B=4, H=16, C=3).astype(np.float32)
    dg = diagnose("Y", np.moveaxis(ref, -1, 1), ref)
    assert dg.kind == "layout" and "channel-first (B, C, N, N)" in dg.message
    assert "[0, 3, 1, 2]" in dg.message
    # constant data: every axis order fits, so none is named
    ones = np.ones((4, 8, 8, 2), np.float32)
    dg = diagnose("X", np.ones((2, 8, 8, 4), np.float32), ones)
    assert dg.kind == "shape_mismatch" and "transposed" in dg.message


@pytest.mark.parametrize(
    "fn, words",
    [
        (lambda a: np.swapaxes(a, 1, 2), "transposed frames"),
        (lambda a: a[:, ::-1], "flipped vertically"),
        (lambda a: a[:, :, ::-1], "flipped horizontally"),
        (lambda a: a[:, ::-1, ::-1], "rotated by 180°"),
    ],
)
def test_frame_layouts(fn, words):
    ref = _smooth_frames(B=4, H=16, C=2).astype(np.float32)
    dg = diagnose("X", np.ascontiguousarray(fn(ref)), ref)
    assert dg.kind == "layout" and words in dg.message


def test_dropped_and_duplicated_channels():
    ref = _smooth_frames(B=4, H=16, C=4).astype(np.float32)
    dg = diagnose("diffraction", ref[..., [0, 1, 3]], ref)
    assert dg.kind == "channels_dropped" and "[2] missing" in dg.message
    assert "[0, 1, 3]" in dg.message
    dg = diagnose("diffraction", ref[..., [0, 0, 2, 3]], ref)
    assert dg.kind == "channels_duplicated"
    assert "reference channel 0 appears as port channels [0, 1]" in dg.message
    # constant data: ambiguous, not named
    ones = np.ones((4, 8, 8, 2), np.float32)
    assert diagnose("X", ones[..., :1], ones).kind == "shape_mismatch"


def test_sign_and_xy_swap_unchanged():
    rng = np.random.RandomState(5)
    rel = rng.randn(8, 1, 2, 4)
    assert diagnose("coords_relative", -rel, rel).kind == "sign_flip"
    assert diagnose("coords_nn", rel[:, :, ::-1, :], rel).kind == "xy_swap"


# -- measured fallback ----------------------------------------------------------------------------
def test_unclassified_reports_best_fit_scale_and_shift():
    ref = _smooth_frames().astype(np.float32)
    rng = np.random.RandomState(6)
    port = (ref * 1.7 + 0.3 * rng.randn(*ref.shape)).astype(np.float32)
    dg = diagnose("X", port, ref, context=DiagnosisContext(max_ulp=3e7, max_rel=2.0))
    assert dg.kind == "unclassified"
    assert "max ulp 3e+07" in dg.message and "no class fits" in dg.message
    assert "best-fit scale factor 1.7" in dg.message and "relative residual" in dg.message
    assert "best-fit shift" in dg.message


# -- cheap on large arrays, never raises ----------------------------------------------------------
def test_large_arrays_are_sampled():
    rng = np.random.RandomState(7)
    ref = (rng.rand(2048, 16, 16, 4) + 0.1).astype(np.float32)  # 2.1 M elements
    port = ref[..., [1, 0, 2, 3]]
    dg = diagnose("X", port, ref)
    assert dg.kind == "channel_permutation" and "[1, 0, 2, 3]" in dg.message
    assert "classified on" in dg.message and "of 2048 rows" in dg.message
    dg = diagnose("X", ref * np.float32(7.5), ref)
    assert dg.kind == "scale_factor" and "7.5" in dg.message


ODD = [
    ("both empty, different shapes", np.zeros((0, 4)), np.zeros((0, 3))),
    ("empty, same shape, int vs float", np.zeros((0,), np.int32), np.zeros((0,), np.float32)),
    ("0-d", np.float32(1.0), np.float32(2.0)),
    ("0-d vs 1-d", np.float32(1.0), np.ones(3, np.float32)),
    (
        "all NaN",
        np.full((2, 8, 8, 2), np.nan, np.float32),
        np.full((2, 8, 8, 2), np.nan, np.float32),
    ),
    (
        "NaN on both sides at one place",
        np.where(np.eye(8)[None, :, :, None] > 0, np.nan, 1.5).astype(np.float32),
        np.where(np.eye(8)[None, :, :, None] > 0, np.nan, 1.0).astype(np.float32),
    ),
    ("Inf vs -Inf", np.array([np.inf, 1.0]), np.array([-np.inf, 1.0])),
    ("all zero reference", np.ones((3, 8, 8, 1)), np.zeros((3, 8, 8, 1))),
    ("object arrays", np.array([1, "a"], dtype=object), np.array([1, "b"], dtype=object)),
    ("strings", np.array(["a", "b"]), np.array(["a", "c"])),
    ("bool", np.array([True, False]), np.array([True, True])),
    (
        "complex vs real",
        np.ones((2, 8, 8, 2), np.complex64) * 1j,
        np.ones((2, 8, 8, 2), np.float32),
    ),
    ("float16 vs float64", np.ones(4, np.float16), np.full(4, 1.0001)),
    ("huge values", np.full((2, 2), 3e38, np.float32), np.full((2, 2), -3e38, np.float32)),
    ("int vs float, equal", np.arange(6, dtype=np.int64), np.arange(6, dtype=np.float64)),
    ("ragged list", [[1, 2], [3]], [[1, 2], [4]]),
    ("None", None, np.ones(3)),
]


@pytest.mark.parametrize("label, port, ref", ODD, ids=[o[0] for o in ODD])
def test_odd_input_never_raises(label, port, ref):
    dg = diagnose("X", port, ref, context=DiagnosisContext(N=8, C=2, quantities={"s": 3.0}))
    assert dg.kind in D.KINDS
    assert isinstance(dg.message, str) and dg.message
    assert dg.message != "unclassified"


def test_odd_input_classes():
    nan = np.where(np.eye(8)[None, :, :, None] > 0, np.nan, 1.0).astype(np.float32)
    dg = diagnose("X", nan * np.float32(1.5), nan)
    assert dg.kind == "scale_factor" and "1.5" in dg.message
    dg = diagnose("X", np.arange(6, dtype=np.int64), np.arange(6, dtype=np.float64))
    assert dg.kind == "dtype_only"
    assert diagnose("X", np.zeros((0, 4)), np.zeros((0, 3))).kind == "shape_mismatch"
    allnan = np.full((2, 8, 8, 2), np.nan, np.float32)
    dg = diagnose("X", allnan, allnan.copy())
    assert dg.kind == "unclassified" and "same places" in dg.message
    dg = diagnose("X", np.array([np.inf, 1.0]), np.array([-np.inf, 1.0]))
    assert dg.kind == "inf_introduced" and "opposite sign" in dg.message
    ref = _smooth_frames(B=2, H=8, C=2).astype(np.complex64)
    dg = diagnose("Y", ref * np.complex64(1j), ref)
    assert dg.kind == "scale_factor" and "+90°" in dg.message


# -- the harness's quantities ----------------------------------------------------------------------
def test_harness_quantities():
    rng = np.random.RandomState(8)
    frames = rng.rand(10, 8, 8).astype(np.float32)
    raw = types.SimpleNamespace(diff3d=frames)
    params = types.SimpleNamespace(N=8, nphotons=1e6, variant="main")
    grouped = frames[[0, 1, 2, 3, 0, 1]].reshape(3, 2, 8, 8).transpose(0, 2, 3, 1)
    outs = {
        "grouped": {"diffraction": grouped},
        "normalize": {"normalize_gain": np.float32(0.5)},
        "intensity_scales": {"seed_era_dataset_derived_scale_normalized_X": 7.0},
    }
    cache = {}
    q = D.harness_quantities(
        raw=raw,
        params=params,
        reference_outputs=outs,
        stage="normalize",
        array_name="X_full",
        cache=cache,
    )
    e = np.sum(frames.astype(np.float64) ** 2, axis=(1, 2))
    assert q["E_raw"] == pytest.approx(e.mean(), rel=1e-12)
    assert q["E_grouped"] == pytest.approx(e[[0, 1, 2, 3, 0, 1]].mean(), rel=1e-12)
    assert q["s"] == pytest.approx(1000 / 4)  # float32 closed form √nphotons / (N/2)
    assert q["gain"] == 0.5 and q["nphotons"] == 1e6
    q = D.harness_quantities(
        raw=raw,
        params=params,
        reference_outputs=outs,
        stage="scaler",
        array_name="seed_era.scaler_out",
        cache=cache,
    )
    assert q["s"] == 7.0
    # broken input: no quantities, no exception
    assert (
        D.harness_quantities(
            raw=None, params=None, reference_outputs={}, stage="x", array_name="y", cache={}
        )
        == {}
    )


# -- zero-filled, rounding, row counts, mirrored and shifted -------------------------------------
def test_zero_filled_rounding_and_row_count():
    rng = np.random.RandomState(9)
    ref = rng.rand(16, 1, 2, 4) * 100
    dg = diagnose("coords_start_offsets", np.zeros((16, 1, 2, 4), np.float32), ref)
    assert dg.kind == "zero_filled" and "all zeros" in dg.message and "128 of 128" in dg.message
    x = rng.rand(4, 8, 8, 2).astype(np.float32)
    near = x.copy()
    near[0, 1, 2, 0] = np.nextafter(near[0, 1, 2, 0], np.float32(2))
    near[1, 3, 3, 1] = np.nextafter(np.nextafter(near[1, 3, 3, 1], np.float32(2)), np.float32(2))
    ctx = DiagnosisContext(max_ulp=2.0, max_rel=1.2e-7, n_beyond=1, n_total=x.size)
    dg = diagnose("scaler_inv_out", near, x, context=ctx)
    assert dg.kind == "rounding" and "at most 2 ulp" in dg.message and "1 of 512" in dg.message
    nn = np.arange(64, dtype=np.int64).reshape(16, 4)
    dg = diagnose("nn_indices", np.tile(nn, (8, 1)), nn)
    assert dg.kind == "shape_mismatch" and "port 128 vs reference 16" in dg.message


def test_mirrored_patches_with_a_subpixel_shift():
    member = _smooth_frames(B=4, H=32, C=4).astype(np.float32)
    mirrored = member[..., ::-1].copy() * np.float32(1.3) + np.float32(0.2)  # anything else
    port = _fourier_shift(member, -0.5, -0.5).astype(np.float32)
    ctx = DiagnosisContext(counterparts={"Y_I": ("|per-member patches|", member)})
    dg = diagnose("Y_I", port, mirrored, context=ctx)
    assert dg.kind == "mirrored_patches" and "moved by -0.50 rows, -0.50 cols" in dg.message
