"""The TensorFlow reference (ptycho_jax.crosscheck.tf_reference) against the upstream goldens.

Two sources per case: the full goldens in ../shared/golden (when present) and the trimmed copy in
tests/data/crosscheck (always): the frames the groups use, sha256 digests of the golden arrays and
slices of the arrays compared with a tolerance. Tolerances are the core issue's: coords and grouped
diffraction bit-equal, X_full / gain / scales / scaler outputs within 1 float32 ulp, Y within
1e-6·max|Y|, container fields equal (norm_Y_I within 1 ulp).
"""

import functools
import hashlib
import json
import math
import pathlib

import numpy as np
import pytest
from _golden import SHARED as GOLDEN

pytest.importorskip("tensorflow")

import ptycho_jax as pj
from ptycho_jax.crosscheck import grouping as G
from ptycho_jax.crosscheck import tf_reference as R
from ptycho_jax.crosscheck._keys import COORD_KEYS

ROOT = pathlib.Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data" / "crosscheck"
CASES = ("gs2_ideal", "gs1_ideal", "gs2_sequential")
SOURCES = ("trimmed", "full")
NPHOTONS = 1e9
N = 64


def _sha(a) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def _f32_ulps(a: float, b: float) -> float:
    """|a − b| in float32 ulps of b."""
    return abs(float(a) - float(b)) / float(np.spacing(np.float32(abs(b))))


class Trimmed:
    """Golden expectations from tests/data/crosscheck (digests + slices)."""

    def __init__(self, case: str):
        inp = np.load(DATA / "input_trim.npz")
        ids = inp["frame_ids"]
        frames = np.concatenate([np.load(DATA / f"frames_{i}.npz")["diff3d"] for i in (1, 2)])
        self.raw = pj.RawData(
            xcoords=inp["xcoords"][ids],
            ycoords=inp["ycoords"][ids],
            xcoords_start=inp["xcoords_start"][ids],
            ycoords_start=inp["ycoords_start"][ids],
            diff3d=frames,
            probeGuess=inp["probeGuess"],
            scan_index=inp["scan_index"][ids],
            objectGuess=inp["objectGuess"],
        )
        self.all_positions = np.stack([inp["xcoords"], inp["ycoords"]], axis=1)
        self.c = np.load(DATA / f"case_{case}.npz")
        self.golden_nn = self.c["nn_indices"]
        self.nn = np.searchsorted(ids, self.golden_nn).astype(self.golden_nn.dtype)
        self.dig = json.loads((DATA / "golden_digests.json").read_text())[case]
        self.params = self.dig["params"]
        self.has_raw_frames = False

    def exact(self, key: str, arr) -> None:
        d = self.dig[key]
        arr = np.asarray(arr)
        assert (list(arr.shape), str(arr.dtype)) == (d["shape"], d["dtype"]), key
        assert _sha(arr) == d["sha256"], f"{key}: not bit-equal to the golden array"

    def ulp(self, key: str, arr, *, slice_key: str | None = None, maxulp: int = 1) -> None:
        d = self.dig[key]
        arr = np.asarray(arr)
        assert (list(arr.shape), str(arr.dtype)) == (d["shape"], d["dtype"]), key
        if _sha(arr) == d["sha256"]:
            return
        assert slice_key is not None, f"{key}: differs from the golden array and no slice is stored"
        ref = self.c[slice_key]
        np.testing.assert_array_max_ulp(arr[: len(ref)], ref, maxulp=maxulp)

    def patches(self, which: str, arr) -> None:
        ref = self.c[f"{which}_slice"]
        tol = 1e-6 * float(self.c[f"{which}_maxabs"])
        assert np.asarray(arr).dtype == np.complex64
        assert float(np.max(np.abs(np.asarray(arr)[: len(ref)] - ref))) <= tol
        assert math.isclose(
            float(np.abs(arr).max()), float(self.c[f"{which}_maxabs"]), rel_tol=1e-6
        )

    def scalar(self, name: str) -> float:
        return float(self.c[f"s4_{name}"])

    def gain(self, variant: str) -> np.float32:
        return self.c["normalize_gain"] if variant == "main" else self.c["gain_loader"]

    def norm_Y_I(self) -> np.float32:
        return self.c["norm_Y_I"]

    def Y_I(self, arr) -> None:
        ref = self.c["Y_I_slice"]
        tol = 1e-6 * float(self.c["Y_maxabs"])
        assert float(np.max(np.abs(np.asarray(arr)[: len(ref)] - ref))) <= tol


class Full:
    """Golden expectations from the full ../shared/golden case folder."""

    def __init__(self, case: str):
        d = GOLDEN / case
        self.raw = pj.RawData.from_npz(d / "input_rawdata.npz")
        self.all_positions = np.stack([self.raw.xcoords, self.raw.ycoords], axis=1)
        self.st = {
            f: np.load(d / f)
            for f in (
                "stage1_grouping.npz",
                "stage2_normalize.npz",
                "stage3_container.npz",
                "stage4_intensity.npz",
            )
        }
        self.golden_nn = self.nn = self.st["stage1_grouping.npz"]["nn_indices"]
        cp = json.loads((d / "params.json").read_text())["case_params"]
        self.params = {
            k: cp[k] for k in ("gridsize", "K", "n_groups", "group_seed", "sequential_sampling")
        }
        self.has_raw_frames = True

    def _get(self, key: str):
        f, k = key.split("/")
        return self.st[f][k]

    def exact(self, key: str, arr) -> None:
        ref = self._get(key)
        arr = np.asarray(arr)
        assert arr.dtype == ref.dtype and arr.shape == ref.shape, key
        np.testing.assert_array_equal(arr, ref, err_msg=key)

    def ulp(self, key: str, arr, *, slice_key: str | None = None, maxulp: int = 1) -> None:
        ref = self._get(key)
        arr = np.asarray(arr)
        assert arr.dtype == ref.dtype and arr.shape == ref.shape, key
        np.testing.assert_array_max_ulp(arr, ref, maxulp=maxulp)

    def patches(self, which: str, arr) -> None:
        ref = self.st["stage1_grouping.npz"]["Y" if which == "Y" else "Y_from_sim_patches"]
        arr = np.asarray(arr)
        assert arr.dtype == ref.dtype and arr.shape == ref.shape
        assert float(np.max(np.abs(arr - ref))) <= 1e-6 * float(np.abs(ref).max())

    def scalar(self, name: str) -> float:
        return float(self.st["stage4_intensity.npz"][name])

    def gain(self, variant: str) -> np.float32:
        if variant == "main":
            return self.st["stage2_normalize.npz"]["normalize_gain"]
        D = self.st["stage1_grouping.npz"]["diffraction"]
        X = self.st["stage2_normalize.npz"]["X_full_loader_normalize_data"]
        i = int(np.argmax(D))
        return np.float32(X.ravel()[i] / D.ravel()[i])

    def norm_Y_I(self) -> np.float32:
        return self.st["stage3_container.npz"]["norm_Y_I"]

    def Y_I(self, arr) -> None:
        ref = self.st["stage3_container.npz"]["Y_I"]
        assert float(np.max(np.abs(np.asarray(arr) - ref))) <= 1e-6 * float(np.abs(ref).max())


@functools.cache
def golden(source: str, case: str):
    if source == "full":
        if not (GOLDEN / case / "stage1_grouping.npz").is_file():
            pytest.skip(f"full goldens not present at {GOLDEN}")
        return Full(case)
    return Trimmed(case)


@functools.cache
def computed(source: str, case: str) -> dict:
    g = golden(source, case)
    grouped = R.grouped_dict(g.raw, g.nn, N=N, patch_positions="upstream")
    X_main, gain_main = R.normalize_data(grouped["diffraction"], N, variant="main")
    X_seed, gain_seed = R.normalize_data(grouped["diffraction"], N, variant="seed")
    member = R.grouped_patches(g.raw, grouped, N=N, patch_positions="member")
    container = R.make_container(grouped, X_main, g.raw.probeGuess, nphotons=NPHOTONS)
    return {
        "grouped": grouped,
        "X_main": X_main,
        "gain_main": gain_main,
        "X_seed": X_seed,
        "gain_seed": gain_seed,
        "member": member,
        "container": container,
    }


params = pytest.mark.parametrize("source,case", [(s, c) for s in SOURCES for c in CASES])


@params
def test_grouped_coordinates_and_diffraction_bit_equal(source, case):
    g, out = golden(source, case), computed(source, case)["grouped"]
    for key in COORD_KEYS + ("diffraction",):
        g.exact(f"stage1_grouping.npz/{key}", out[key])
    g.exact("stage1_grouping.npz/nn_indices", g.golden_nn)


@params
def test_normalize_both_variants(source, case):
    g, out = golden(source, case), computed(source, case)
    g.ulp("stage2_normalize.npz/X_full", out["X_main"])
    g.ulp("stage2_normalize.npz/X_full_loader_normalize_data", out["X_seed"])
    for variant in ("main", "seed"):
        gain = out[f"gain_{variant}"]
        assert gain.dtype == np.float32
        np.testing.assert_array_max_ulp(gain, g.gain(variant), maxulp=1)
        # X_full is the float32 product gain * D (no other rounding)
        np.testing.assert_array_equal(out[f"X_{variant}"], gain * out["grouped"]["diffraction"])


@params
def test_patches_within_1e6_of_max(source, case):
    g, out = golden(source, case), computed(source, case)
    g.patches("Y", out["grouped"]["Y"])
    g.patches("Y_member", out["member"])


@params
def test_intensity_scales_within_one_float32_ulp(source, case):
    g, out = golden(source, case), computed(source, case)
    X, grouped = out["X_main"], out["grouped"]
    seed_scale, seed_E = R.dataset_scale(X, NPHOTONS, N=N)
    gscale, gE = R.dataset_scale(grouped["diffraction"], NPHOTONS)
    values = {
        "fallback_scale_closed_form": R.closed_form_scale_f64(N, NPHOTONS),
        "main_head_train_pinn_calculate_intensity_scale": R.closed_form_scale_f32(N, NPHOTONS),
        "seed_era_dataset_derived_scale_normalized_X": seed_scale,
        "normalized_X_mean_sum_sq_over_HWC": seed_E,
        "grouped_dataset_scale_over_HWC": gscale,
        "grouped_E_batch_sum_psi2_over_HWC": gE,
        "container_norm_Y_I_diffsim_scale_nphotons": R.scale_nphotons(X, NPHOTONS),
    }
    if g.has_raw_frames:
        values["raw_dataset_scale"], values["raw_E_batch_sum_psi2"] = R.dataset_scale(
            g.raw.diff3d, NPHOTONS
        )
    for name, v in values.items():
        assert _f32_ulps(v, g.scalar(name)) <= 1, (name, v, g.scalar(name))
    # the closed forms are exact
    assert values["main_head_train_pinn_calculate_intensity_scale"] == 988.2117919921875
    assert values["fallback_scale_closed_form"] == g.scalar("fallback_scale_closed_form")


@params
def test_scaler_layers(source, case):
    g, out = golden(source, case), computed(source, case)
    x = out["container"]["X"][:4]
    for prefix in ("seed_era", "main_head"):
        scale = g.scalar(f"{prefix}_intensity_scale_in")
        res = R.apply_scaler(x, scale)
        assert res["log_scale"].dtype == np.float32
        assert res["log_scale"] == np.float32(g.scalar(f"{prefix}_log_scale"))
        g.ulp(
            f"stage4_intensity.npz/{prefix}_scaler_out",
            res["scaler_out"],
            slice_key=f"{prefix}_scaler_out_slice",
        )
        g.ulp(
            f"stage4_intensity.npz/{prefix}_scaler_inv_out",
            res["scaler_inv_out"],
            slice_key=f"{prefix}_scaler_inv_out_slice",
        )


@params
def test_container_fields(source, case):
    g, c = golden(source, case), computed(source, case)["container"]
    for key in (
        "coords_nominal",
        "coords_true",
        "probe",
        "nn_indices",
        "global_offsets",
        "local_offsets",
        "Y_phi",
    ):
        g.exact(f"stage3_container.npz/{key}", c[key] if key != "nn_indices" else g.golden_nn)
    assert np.array_equal(c["nn_indices"], g.nn)
    g.ulp("stage3_container.npz/X", c["X"])
    g.Y_I(c["Y_I"])
    assert c["norm_Y_I"].dtype == np.float32
    np.testing.assert_array_max_ulp(c["norm_Y_I"], g.norm_Y_I(), maxulp=1)


@params
def test_reference_grouping_reproduces_seeded_groups(source, case):
    g = golden(source, case)
    p = g.params
    nn = G.select_groups(
        g.all_positions,
        gridsize=p["gridsize"],
        K=p["K"],
        n_groups=p["n_groups"],
        seed=p["group_seed"],
        sequential=p["sequential_sampling"],
    )
    assert nn.dtype == g.golden_nn.dtype
    np.testing.assert_array_equal(nn, g.golden_nn)
    assert G.group_violations(g.all_positions, nn, gridsize=p["gridsize"], K=p["K"]) == []


def test_keras_layers_share_one_variable():
    log_scale, fwd, inv = R.make_scaler_pair(494.1046755)
    assert log_scale.dtype.name == "float32" and log_scale.trainable
    assert float(log_scale.numpy()) == float(np.float32(np.log(494.1046755)))
    x = np.linspace(0, 10, 64, dtype=np.float32).reshape(4, 4, 4)
    np.testing.assert_array_max_ulp(np.asarray(inv(fwd(x))), x, maxulp=1)
    log_scale.assign(np.float32(0.0))  # both layers read the same variable
    np.testing.assert_array_equal(np.asarray(fwd(x)), x)
    np.testing.assert_array_equal(np.asarray(inv(x)), x)
    with pytest.raises(ValueError, match="intensity_scale"):
        R.make_log_scale(0.0)


def test_extract_patches_zero_fills_each_corner():
    obj = np.ones((8, 8), np.complex64)
    # a patch centred near the top-left corner half-hangs over the zero padding
    p = R.extract_patches(obj, np.array([[0.5, 0.5]], np.float32), N=4)
    assert p.shape == (1, 4, 4) and p.dtype == np.complex64
    # sample points: x = q + 0.5 in padded coordinates (pad 2) -> object x = q - 1.5
    expected_row = np.array([0.0, 0.5, 1.0, 1.0], np.float32)
    np.testing.assert_allclose(p[0].real, np.outer(expected_row, expected_row), atol=1e-7)
    with pytest.raises(ValueError, match="objectGuess"):
        R.extract_patches(np.ones((2, 2, 2)), np.zeros((1, 2), np.float32), N=4)
