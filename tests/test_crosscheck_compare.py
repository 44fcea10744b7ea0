"""Metrics, tolerance table, grouping invariants and the classifier, without TensorFlow."""

import math

import numpy as np
import pytest

from ptycho_jax.crosscheck import grouping as G
from ptycho_jax.crosscheck.compare import (
    Tolerance,
    ToleranceError,
    ToleranceTable,
    compare_arrays,
    ulp_distance,
)
from ptycho_jax.crosscheck.diagnose import DiagnosisContext, diagnose


# -- ULP distance ---------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_ulp_distance_counts_representable_values(dtype):
    x = np.array([1.0, -1.0, 0.0, 1e-30, 3.5], dtype)
    up = np.nextafter(x, dtype(np.inf))
    np.testing.assert_array_equal(ulp_distance(up, x), 1)
    two = np.nextafter(up, dtype(np.inf))
    np.testing.assert_array_equal(ulp_distance(two, x), 2)
    # +0 and -0 are the same value; the smallest subnormals either side of 0 are 2 apart
    assert ulp_distance(np.array([-0.0], dtype), np.array([0.0], dtype))[0] == 0
    tiny = np.array([np.finfo(dtype).smallest_subnormal], dtype)
    assert ulp_distance(-tiny, tiny)[0] == 2
    assert math.isnan(ulp_distance(np.array([np.nan], dtype), np.array([1.0], dtype))[0])


def test_ulp_distance_in_another_dtype():
    b = np.array([988.2117919921875])
    a = b + float(np.spacing(np.float32(988.2117919921875)))
    np.testing.assert_allclose(ulp_distance(a, b, dtype=np.float32), 1.0)


# -- compare_arrays -----------------------------------------------------------------------------
def test_compare_float_metrics_and_worst_index():
    r = np.linspace(1, 2, 24, dtype=np.float32).reshape(2, 3, 4)
    p = r.copy()
    p[1, 2, 3] = np.nextafter(np.nextafter(r[1, 2, 3], np.float32(9)), np.float32(9))
    d = compare_arrays("a", p, r, Tolerance(ulp=1))
    assert not d.passed and d.n_beyond == 1 and d.max_ulp == 2 and d.worst_index == (1, 2, 3)
    assert d.worst_port == float(p[1, 2, 3]) and d.worst_ref == float(r[1, 2, 3])
    assert d.max_abs == pytest.approx(2 * float(np.spacing(np.float32(2.0))))
    assert compare_arrays("a", p, r, Tolerance(ulp=2)).passed
    assert compare_arrays("a", p, r, Tolerance(rtol=1e-6)).passed
    assert not compare_arrays("a", p, r, Tolerance(exact=True)).passed
    assert compare_arrays("a", r, r, Tolerance(exact=True)).passed


def test_compare_nan_inf_and_dtype_and_shape():
    r = np.array([1.0, np.nan, np.inf, 4.0], np.float32)
    assert compare_arrays("a", r.copy(), r, Tolerance(exact=True)).passed  # NaN == NaN, inf == inf
    p = r.copy()
    p[0] = np.nan
    d = compare_arrays("a", p, r, Tolerance(ulp=1))
    assert not d.passed and (d.nan_port, d.nan_ref, d.inf_port, d.inf_ref) == (2, 1, 1, 1)
    assert d.worst_index == (0,)
    d = compare_arrays("a", r.astype(np.float64), r, Tolerance(ulp=1))
    assert not d.passed and d.n_beyond == 0 and d.dtype_port == "float64"
    assert compare_arrays("a", r.astype(np.float64), r, Tolerance(ulp=1, check_dtype=False)).passed
    d = compare_arrays("a", r[:3], r, Tolerance(ulp=1))
    assert not d.passed and d.status == "shape_mismatch"


def test_compare_integers_exact_and_complex():
    r = np.arange(12, dtype=np.int32).reshape(3, 4)
    p = r.copy()
    p[2, 1] = 99
    d = compare_arrays("nn", p, r, Tolerance(ulp=5))  # integers are always exact
    assert not d.passed and d.n_beyond == 1 and d.worst_index == (2, 1) and d.worst_port == 99
    rc = (np.arange(8) + 1j * np.arange(8)).astype(np.complex64)
    pc = rc.copy()
    pc[3] += np.complex64(1e-6j)
    d = compare_arrays("Y", pc, rc, Tolerance(atol_max_rel=1e-6))
    assert d.passed and d.max_abs == pytest.approx(1e-6, rel=0.1)
    assert not compare_arrays("Y", pc, rc, Tolerance(exact=True)).passed


def test_to_json_is_plain():
    import json

    d = compare_arrays("a", np.array([np.nan, 1.0]), np.array([1.0, 1.0]), Tolerance(ulp=1))
    json.dumps(d.to_json(), allow_nan=False)


# -- tolerance table ----------------------------------------------------------------------------
def test_default_table_lookup_order():
    t = ToleranceTable.default()
    assert t.rule("grouped", "coords_nn", np.float64).exact
    assert t.rule("normalize", "X_full", np.float32) == Tolerance(ulp=1)
    assert t.rule("patches", "Y", np.complex64).atol_max_rel == 1e-6
    assert t.rule("container", "Y_I", np.float32).atol_max_rel == 1e-6  # array entry beats dtype
    assert t.rule("container", "coords_nominal", np.float32).exact
    assert t.rule("intensity_scales", "raw_dataset_scale", np.float64).ulp_dtype == "float32"
    assert t.rule("nowhere", "x", np.float16).ulp == 1  # falls back to default.float
    assert t.rule("normalize", "nn", np.int64).exact


def test_user_override_merges_and_validates(tmp_path):
    f = tmp_path / "tol.toml"
    f.write_text(
        "[stages.normalize.float32]\nrtol = 1e-3\n\n[stages.container.arrays.X]\nulp = 4\n"
    )
    t = ToleranceTable.load(f)
    assert t.rule("normalize", "X_full", np.float32) == Tolerance(ulp=1, rtol=1e-3)
    assert t.rule("container", "X", np.float32).ulp == 4
    assert t.rule("grouped", "diffraction", np.float32).exact
    assert t.sources[-1] == str(f)
    f.write_text("[stages.normalize.float32]\nulps = 3\n")
    with pytest.raises(ToleranceError, match="unknown keys"):
        ToleranceTable.load(f)
    f.write_text("[stages.normalize.float32]\nrtol = -1\n")
    with pytest.raises(ToleranceError, match="rtol"):
        ToleranceTable.load(f)
    f.write_text("not = [valid")
    with pytest.raises(ToleranceError, match="TOML"):
        ToleranceTable.load(f)
    with pytest.raises(ToleranceError, match="cannot read"):
        ToleranceTable.load(tmp_path / "missing.toml")


# -- grouping ------------------------------------------------------------------------------------
def _grid(n=6):
    yy, xx = np.mgrid[0:n, 0:n]
    return np.stack([xx.ravel() * 10.0, yy.ravel() * 10.0], axis=1)


def test_group_invariants_accept_valid_groups_including_grid_ties():
    pos = _grid()
    for seed in range(5):
        nn = G.select_groups(pos, gridsize=2, K=4, n_groups=12, seed=seed)
        assert nn.dtype == np.int32 and nn.shape == (12, 4)
        assert G.group_violations(pos, nn, gridsize=2, K=4) == []
    nn = G.select_groups(
        pos, gridsize=2, K=6, n_groups=100, oversample=True, neighbor_pool_size=6, seed=1
    )
    assert nn.shape == (100, 4) and nn.dtype == np.int64
    assert G.group_violations(pos, nn, gridsize=2, K=6) == []
    nn1 = G.select_groups(pos, gridsize=1, n_groups=10, seed=2)
    assert nn1.shape == (10, 1) and G.group_violations(pos, nn1, gridsize=1, K=4) == []


def test_group_invariants_reject_bad_groups():
    pos = _grid()
    nn = G.select_groups(pos, gridsize=2, K=4, n_groups=8, seed=0)
    bad = nn.copy()
    bad[0, 1] = bad[0, 0]
    assert any("repeated" in v for v in G.group_violations(pos, bad, gridsize=2, K=4))
    far = nn.copy()
    far[1] = [0, 5, 30, 35]  # the four corners of the grid
    assert any(
        "not among the K=4 nearest" in v for v in G.group_violations(pos, far, gridsize=2, K=4)
    )
    assert "expected shape" in G.group_violations(pos, nn[:, :3], gridsize=2, K=4)[0]
    assert "values must lie" in G.group_violations(pos, nn + 100, gridsize=2, K=4)[0]
    dup = np.array([[3], [3]])
    assert "drawn twice" in G.group_violations(pos, dup, gridsize=1, K=4)[0]


def test_select_groups_errors():
    pos = _grid(2)
    with pytest.raises(ValueError, match="only n=3"):
        G.select_groups(pos[:3], gridsize=2, K=4, n_groups=1, seed=0)
    with pytest.raises(ValueError, match="K=3 must be >= C=4"):
        G.select_groups(pos, gridsize=2, K=3, n_groups=1, seed=0)
    with pytest.raises(ValueError, match="oversampling"):
        G.select_groups(pos, gridsize=2, K=4, n_groups=10, seed=0)


def test_sequential_groups_ignore_seed():
    pos = _grid()
    a = G.select_groups(pos, gridsize=2, K=4, n_groups=5, seed=1, sequential=True)
    b = G.select_groups(pos, gridsize=2, K=4, n_groups=5, seed=2, sequential=True)
    np.testing.assert_array_equal(a, b)


# -- diagnose, branches the mutation matrix does not reach ------------------------------------
def test_diagnose_shape_inf_and_integer_permutation():
    r = np.ones((4, 8, 8, 2), np.float32)
    assert diagnose("X", r[..., :1], r).kind == "shape_mismatch"
    assert "transposed" in diagnose("X", np.ones((2, 8, 8, 4), np.float32), r).message
    p = r.copy()
    p[0, 0, 0, 0] = np.inf
    assert diagnose("X", p, r).kind == "inf_introduced"
    nn = np.arange(12).reshape(3, 4)
    dg = diagnose("nn_indices", nn[:, [1, 0, 2, 3]], nn)
    assert dg.kind == "channel_permutation" and "[1, 0, 2, 3]" in dg.message
    other = nn.copy()
    other[1, 2] = 77
    assert diagnose("nn_indices", other, nn).kind == "integer_mismatch"


def test_diagnose_scale_family_and_scalars():
    rng = np.random.RandomState(0)
    r = rng.rand(8, 16, 16, 4).astype(np.float32) + 0.1
    ctx = DiagnosisContext(N=16, C=4)
    dg = diagnose("X", (r * np.float32(math.sqrt(2))).astype(np.float32), r, context=ctx)
    assert dg.kind == "scale_factor" and "√2" in dg.message
    dg = diagnose("X", (r * np.float32(4)).astype(np.float32), r, context=ctx)
    assert "C" in dg.message and "wrong-scale" in dg.message
    dg = diagnose("X", (r * np.float32(3.3)).astype(np.float32), r, context=ctx)
    assert dg.kind == "scale_factor" and "family" not in dg.message
    # a scalar 2x off is a scale factor, a scalar a few ulp off is not
    assert (
        diagnose("s", np.float64(2.0 * 988.2), np.float64(988.2), context=ctx).kind
        == "scale_factor"
    )
    near = diagnose(
        "s",
        np.float64(988.2 * (1 + 1e-7)),
        np.float64(988.2),
        context=DiagnosisContext(max_ulp=1.5, max_rel=1e-7),
    )
    assert near.kind == "rounding" and "1.5 ulp" in near.message
