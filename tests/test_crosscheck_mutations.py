"""Mutation matrix: a correct backend broken in one stage must be caught, with the right class named.

Runs on a small synthetic scan (`crosscheck.synthetic.synthetic_raw`: 64 positions, N = 32, gridsize 2) so every cross-check takes a
fraction of a second; the reference and the unbroken port share one TF backend instance (its
per-instance memo makes every repeated stage free).
"""

import math

import numpy as np
import pytest

pytest.importorskip("tensorflow")

import ptycho_jax as pj
from crosscheck.backends import TFBackend
from crosscheck.run import format_failure, run_crosscheck
from crosscheck.synthetic import synthetic_raw

N = 32
PARAMS = pj.ChainParams(N=N, gridsize=2, K=4, n_groups=16, seed=3, nphotons=1e6)


class Mutated:
    """Wraps a backend and rewrites one stage's outputs with `fn(outputs) -> outputs`."""

    def __init__(self, base, stage: str, fn, name: str):
        self.base, self.stage, self.fn, self.name = base, stage, fn, name

    def __getattr__(self, item):
        attr = getattr(self.base, item)
        if item != self.stage:
            return attr

        def broken(*args, **kwargs):
            return self.fn(
                {
                    k: (np.array(v, copy=True) if isinstance(v, np.ndarray) else v)
                    for k, v in attr(*args, **kwargs).items()
                }
            )

        return broken


@pytest.fixture(scope="module")
def raw():
    return synthetic_raw()


@pytest.fixture(scope="module")
def tf_backend():
    return TFBackend()


def _set(key, f):
    def apply(out):
        out[key] = f(out[key])
        return out

    return apply


def _nan_at_one(a):
    a = a.copy()
    a.flat[12345 % a.size] = np.nan
    return a


def _perturb(a):
    rng = np.random.RandomState(1)
    return (a * (1 + 1e-4 * rng.uniform(-1, 1, a.shape))).astype(a.dtype)


MUTATIONS = {
    # name: (stage, mutation, failing array, expected class, words in the message)
    "X_full_doubled": (
        "normalize",
        _set("X_full", lambda a: a * np.float32(2)),
        "X_full",
        "scale_factor",
        ["2", "double-scaling"],
    ),
    "X_full_times_N_over_2": (
        "normalize",
        _set("X_full", lambda a: a * np.float32(N / 2)),
        "X_full",
        "scale_factor",
        ["N/2"],
    ),
    "channels_permuted": (
        "grouped",
        _set("diffraction", lambda a: a[..., ::-1]),
        "diffraction",
        "channel_permutation",
        ["[3, 2, 1, 0]"],
    ),
    "xy_swapped": (
        "grouped",
        _set("coords_nn", lambda a: a[:, :, ::-1, :]),
        "coords_nn",
        "xy_swap",
        ["x↔y"],
    ),
    "relative_sign_flipped": (
        "grouped",
        _set("coords_relative", lambda a: -a),
        "coords_relative",
        "sign_flip",
        ["relative offsets"],
    ),
    "mirrored_patches": (
        "patches",
        lambda o: dict(o, Y=o["Y_member"]),
        "Y",
        "mirrored_patches",
        ["per-member"],
    ),
    "patches_shifted": (
        "patches",
        _set("Y_member", lambda a: np.roll(a, 1, axis=1)),
        "Y_member",
        "pixel_shift",
        ["+1 rows"],
    ),
    "offsets_through_float32": (
        "grouped",
        _set("coords_offsets", lambda a: a.astype(np.float32).astype(np.float64)),
        "coords_offsets",
        "float_truncation",
        ["float32"],
    ),
    "nan_injected": ("normalize", _set("X_full", _nan_at_one), "X_full", "nan_introduced", ["NaN"]),
    "relative_perturbation_1e-4": (
        "normalize",
        _set("X_full", _perturb),
        "X_full",
        "unclassified",
        ["max ulp"],
    ),
    "uniform_1e-4_scale": (
        "container",
        _set("X", lambda a: a * np.float32(1 + 1e-4)),
        "X",
        "scale_factor",
        ["1+0.0001"],
    ),
    "scaler_double_scaled": (
        "scaler",
        _set("scaler_out", lambda a: a / np.float32(2)),
        "seed_era.scaler_out",
        "scale_factor",
        ["double-scaling"],
    ),
    "gain_through_float64": (
        "normalize",
        _set("normalize_gain", lambda g: np.float64(g)),
        "normalize_gain",
        "float_truncation",
        ["float64"],
    ),
}


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_mutation_is_caught_and_named(name, raw, tf_backend):
    stage, fn, array, kind, words = MUTATIONS[name]
    port = Mutated(tf_backend, stage, fn, f"tf+{name}")
    res = run_crosscheck(raw, port=port, reference=tf_backend, params=PARAMS)
    text = format_failure(res)
    assert not res.passed, text
    failed = [s.name for s in res.stages if not s.passed]
    assert failed == [stage], text
    deltas = {a.name: a for a in res.stage(stage).arrays}
    d = deltas[array]
    assert not d.passed
    assert d.diagnosis_class == kind, text
    for w in words:
        assert w in d.diagnosis, (w, d.diagnosis)
    assert d.diagnosis in text


def test_unbroken_tf_passes(raw, tf_backend):
    port = Mutated(tf_backend, "none", None, "tf-copy")
    res = run_crosscheck(raw, port=port, reference=tf_backend, params=PARAMS)
    assert res.passed, format_failure(res)
    assert [s.name for s in res.stages] == [
        "grouping",
        "grouped",
        "normalize",
        "patches",
        "intensity_scales",
        "scaler",
        "container",
    ]
    assert all(s.skipped is None for s in res.stages)


@pytest.mark.parametrize("variant", ["main", "seed"])
def test_unbroken_jax_passes_against_tf(raw, tf_backend, variant):
    params = pj.ChainParams(
        N=N, gridsize=2, K=4, n_groups=16, seed=3, nphotons=1e6, variant=variant
    )
    res = run_crosscheck(raw, port="jax", reference=tf_backend, params=params)
    assert res.passed, format_failure(res)


def test_wrong_variant_is_a_near_one_scale_factor(raw, tf_backend):
    """A port normalising with float32 sums where float64 is expected: X_full off by a factor ≈ 1."""

    def seed_normalize(out):
        from crosscheck import tf_reference as R

        diff = tf_backend.grouped(raw, PARAMS, nn_indices=None)["diffraction"]
        out["X_full"], out["normalize_gain"] = R.normalize_data(diff, N, variant="seed")
        return out

    port = Mutated(tf_backend, "normalize", seed_normalize, "tf-seed-normalize")
    res = run_crosscheck(raw, port=port, reference=tf_backend, params=PARAMS)
    d = {a.name: a for a in res.stage("normalize").arrays}["X_full"]
    if d.passed:  # the float32 and float64 sums round to the same gain for this data
        pytest.skip("seed and main gains coincide on this synthetic input")
    assert d.diagnosis_class == "scale_factor" and "near 1" in d.diagnosis


def test_scale_family_names_the_dataset_ratio(raw, tf_backend):
    scales = tf_backend.intensity_scales(raw, PARAMS)
    ratio = (
        scales["main_head_train_pinn_calculate_intensity_scale"]
        / scales["seed_era_dataset_derived_scale_normalized_X"]
    )
    assert not math.isclose(ratio, 1, rel_tol=1e-3)
    mutation = _set("seed_era_dataset_derived_scale_normalized_X", lambda s: s * ratio)
    port = Mutated(tf_backend, "intensity_scales", mutation, "tf-wrong-scale")
    res = run_crosscheck(raw, port=port, reference=tf_backend, params=PARAMS)
    d = {a.name: a for a in res.stage("intensity_scales").arrays}[
        "seed_era_dataset_derived_scale_normalized_X"
    ]
    assert d.diagnosis_class == "scale_factor"
    assert (
        "closed-form/dataset training scale" in d.diagnosis and "wrong-scale family" in d.diagnosis
    )
