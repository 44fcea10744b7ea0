"""Patch extraction: golden stage-1 patches (mirrored and per-member), edge behaviour, errors."""

import pathlib

import jax
import jaxtyping
import numpy as np
import pytest
from _compile_count import count_compiles
from _golden import SHARED

import ptycho_jax as pj

DATA = pathlib.Path(__file__).parent / "data" / "sim"
CASES = ("gs1_ideal", "gs2_ideal", "gs2_sequential")
POSITIONS = {"upstream": "Y", "member": "Y_from_sim_patches"}
# A value outside an argument's annotation is rejected at the call by the runtime type check
# (jaxtyping + beartype, on for every test run through pyproject's addopts), which names it.
TYPE_ERRORS = jaxtyping.TypeCheckError


@pytest.fixture(scope="module")
def fixture():
    with np.load(DATA / "sim_golden.npz") as f:
        return {k: f[k] for k in f.files}


def _check_patches(got, ref):
    got, ref = np.asarray(got), np.asarray(ref)
    assert got.shape == ref.shape and got.dtype == ref.dtype == np.complex64
    diff = np.abs(got - ref)
    worst = np.unravel_index(np.argmax(diff), diff.shape)
    tol = 1e-6 * np.abs(ref).max()
    assert diff.max() <= tol, (
        f"max|diff| {diff.max():.3g} > {tol:.3g} at {worst}; {np.sum(diff > tol)} over"
    )
    if jax.default_backend() == "cpu":
        # The fma-chain evaluation reproduces the reference bit-for-bit (simulation.md §6 step 2).
        np.testing.assert_array_equal(got, ref)


def _group_patches(obj, s1, positions):
    centres = pj.group_patch_centres(
        s1["coords_offsets"], s1["coords_relative"], s1["coords_nn"], positions=positions
    )
    C = s1["coords_nn"].shape[-1]
    assert centres.shape == (s1["coords_nn"].shape[0] * C, 2) and centres.dtype == np.float32
    return pj.extract_group_patches(obj, centres, N=s1["Y"].shape[1], C=C)


@pytest.mark.parametrize("positions", sorted(POSITIONS))
@pytest.mark.parametrize("case", CASES)
def test_golden_group_patches_trimmed(fixture, case, positions):
    s1 = {
        k: fixture[f"{case}/{k}"] for k in ("coords_offsets", "coords_relative", "coords_nn", "Y")
    }
    ref = fixture[f"{case}/{POSITIONS[positions]}"]
    _check_patches(_group_patches(fixture["objectGuess"], s1, positions), ref)


@pytest.mark.parametrize("positions", sorted(POSITIONS))
@pytest.mark.parametrize("case", CASES)
def test_golden_group_patches_full(case, positions):
    path = SHARED / case / "stage1_grouping.npz"
    if not path.exists():
        pytest.skip("full goldens (../shared/golden) not present")
    with np.load(path) as f:
        s1 = {
            k: f[k]
            for k in ("coords_offsets", "coords_relative", "coords_nn", "Y", POSITIONS[positions])
        }
    with np.load(SHARED / case / "input_rawdata.npz") as f:
        obj = f["objectGuess"]
    _check_patches(_group_patches(obj, s1, positions), s1[POSITIONS[positions]])


def test_simulation_patches_match_golden(fixture):
    # RawData.Y of the simulation: un-illuminated patches at each (float32-cast) scan position.
    centres = np.stack([fixture["xcoords"], fixture["ycoords"]], axis=1)[
        : len(fixture["Y_sim_patches"])
    ]
    got = pj.extract_patches(fixture["objectGuess"], centres.astype(np.float32), N=64)
    _check_patches(got, fixture["Y_sim_patches"][..., 0])
    # float64 centres are cast to float32 once: the same patches
    np.testing.assert_array_equal(
        np.asarray(pj.extract_patches(fixture["objectGuess"], centres, N=64)), np.asarray(got)
    )


def test_mirrored_and_member_patches_differ(fixture):
    # gridsize 2: the literal upstream fallback samples 2·centre − position (pipeline.md §5.4)
    ref_up, ref_mem = fixture["gs2_ideal/Y"], fixture["gs2_ideal/Y_from_sim_patches"]
    assert np.abs(ref_up - ref_mem).max() > 1.0
    # gridsize 1: relative = -0.0, both modes coincide
    np.testing.assert_array_equal(fixture["gs1_ideal/Y"], fixture["gs1_ideal/Y_from_sim_patches"])


def _reference_patches(obj, centres, N):
    """Straightforward NumPy: zero-pad by N//2, bilinear with per-corner zero fill outside the canvas."""
    pad = N // 2
    canvas = np.pad(obj, pad)
    Hc, Wc = canvas.shape
    out = np.zeros((len(centres), N, N), np.complex128)

    def at(i, j):
        return canvas[i, j] if 0 <= i < Hc and 0 <= j < Wc else 0.0

    for p, (cx, cy) in enumerate(np.asarray(centres, np.float32)):
        for r in range(N):
            for q in range(N):
                sx, sy = np.float32(q + cx), np.float32(r + cy)
                x0, y0 = int(np.floor(sx)), int(np.floor(sy))
                wx, wy = float(sx) - x0, float(sy) - y0
                out[p, r, q] = (
                    (1 - wx) * (1 - wy) * at(y0, x0)
                    + wx * (1 - wy) * at(y0, x0 + 1)
                    + (1 - wx) * wy * at(y0 + 1, x0)
                    + wx * wy * at(y0 + 1, x0 + 1)
                )
    return out


@pytest.mark.parametrize("N", [4, 5, 8])
def test_edge_patches_against_numpy(N):
    rng = np.random.RandomState(0)
    H, W = 7, 9
    obj = (rng.normal(size=(H, W)) + 1j * rng.normal(size=(H, W))).astype(np.complex64)
    centres = np.array(
        [[0.0, 0.0], [0.25, 0.75], [W - 1, H - 1], [W - 1.5, 0.5], [-0.5, H - 0.25], [-3.0, -2.5],
         [W + 1.75, H + 2.0], [4.0, 3.0], [1e6, -1e6], [2.5, 8.999]],
        np.float32,
    )  # fmt: skip
    got = np.asarray(pj.extract_patches(obj, centres, N=N))
    ref = _reference_patches(obj, centres, N)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-6 * np.abs(obj).max())
    # the centre pixel lands on the centre point; far away patches are all zero
    np.testing.assert_allclose(got[7, N // 2, N // 2], obj[3, 4], rtol=1e-6)
    assert not np.any(got[8])


def test_traced_call_matches_host_call(fixture):
    obj = fixture["objectGuess"]
    centres = np.stack([fixture["xcoords"], fixture["ycoords"]], axis=1)[:8].astype(np.float32)
    host = np.asarray(pj.extract_patches(obj, centres, N=64))
    traced = np.asarray(jax.jit(lambda o, c: pj.extract_patches(o, c, N=64))(obj, centres))
    np.testing.assert_allclose(traced, host, rtol=0, atol=1e-6 * np.abs(host).max())


def test_second_call_does_not_recompile():
    obj = np.ones((16, 16), np.complex64)
    centres = np.array([[3.5, 4.25], [8.0, 8.0]], np.float32)
    pj.extract_patches(obj, centres, N=4)
    with count_compiles() as compiles:
        pj.extract_patches(obj, centres + np.float32(1.5), N=4)
    assert compiles() == 0


def test_group_patch_centres_worked_example():
    # pipeline.md §4: points x = (10, 12, 10, 12), y = (20, 20, 22, 22), local_offset_sign = -1
    nn = np.array([[10, 12, 10, 12], [20, 20, 22, 22]], np.float64)[None, None]  # (1, 1, 2, 4)
    offsets = nn.mean(axis=3, keepdims=True)
    relative = -1.0 * (nn - offsets)
    up = pj.group_patch_centres(offsets, relative, None, positions="upstream")
    np.testing.assert_array_equal(
        up, np.array([[12, 22], [10, 22], [12, 20], [10, 20]], np.float32)
    )
    mem = pj.group_patch_centres(None, None, nn, positions="member")
    np.testing.assert_array_equal(
        mem, np.array([[10, 20], [12, 20], [10, 22], [12, 22]], np.float32)
    )


def test_group_patch_centres_cast_after_sum():
    # float32(global + local) with the sum in float64, not float32(global) + float32(local)
    off = np.array([100.1], np.float64).reshape(1, 1, 1, 1).repeat(2, axis=2)
    rel = np.array([1e-5], np.float64).reshape(1, 1, 1, 1).repeat(2, axis=2)
    got = pj.group_patch_centres(off, rel, None, positions="upstream")
    assert got[0, 0] == np.float32(100.1 + 1e-5)


def test_group_patches_flat_order(fixture):
    obj = fixture["objectGuess"]
    centres = np.array(
        [[100, 120], [101.5, 121], [150, 160.25], [151, 161], [200, 210], [201, 211]], np.float32
    )
    flat = np.asarray(pj.extract_patches(obj, centres, N=8))
    grouped = np.asarray(pj.extract_group_patches(obj, centres, N=8, C=2))
    assert grouped.shape == (3, 8, 8, 2)
    for b in range(3):
        for c in range(2):
            np.testing.assert_array_equal(grouped[b, :, :, c], flat[b * 2 + c])


def test_errors():
    obj = np.ones((8, 8), np.complex64)
    ok = np.zeros((2, 2), np.float32)
    with pytest.raises(pj.PtychoInputError, match=r"obj: expected a 2-D"):
        pj.extract_patches(obj[None], ok, N=4)
    with pytest.raises(pj.PtychoInputError, match=r"obj: expected dtype complex64.*complex128"):
        pj.extract_patches(obj.astype(np.complex128), ok, N=4)
    with pytest.raises(pj.PtychoInputError, match=r"centres: expected a 2-D \(P, 2\)"):
        pj.extract_patches(obj, np.zeros((2, 3), np.float32), N=4)
    with pytest.raises(pj.PtychoInputError, match=r"centres: expected dtype float32.*int64"):
        pj.extract_patches(obj, np.zeros((2, 2), np.int64), N=4)
    with pytest.raises(
        pj.PtychoInputError,
        match=r"centres: expected finite.*2 NaN/Inf \(first at index \(1, 0\)\)",
    ):
        pj.extract_patches(obj, np.array([[0, 0], [np.nan, np.inf]], np.float32), N=4)
    with pytest.raises(pj.PtychoInputError, match=r"N: expected a positive int, got 0"):
        pj.extract_patches(obj, ok, N=0)
    with pytest.raises(
        pj.PtychoInputError, match=r"centres_flat: expected a multiple of C = 4 rows.*got 2"
    ):
        pj.extract_group_patches(obj, ok, N=4, C=4)
    with pytest.raises(TYPE_ERRORS, match=r"positions"):
        pj.group_patch_centres(None, None, np.zeros((1, 1, 2, 1)), positions="mirror")
    with pytest.raises(
        pj.PtychoInputError, match=r"coords_nn: expected a \(B, 1, 2, C\) float array.*got None"
    ):
        pj.group_patch_centres(None, None, None, positions="member")
    with pytest.raises(TYPE_ERRORS, match=r"coords_offsets"):
        pj.group_patch_centres(
            np.zeros((1, 1, 2, 4)), np.zeros((1, 1, 2, 4)), None, positions="upstream"
        )
