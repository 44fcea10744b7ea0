"""array_stats / float_sum: NumPy's float32 pairwise order, bit for bit (report §2.2)."""

import json
import math
import pathlib

import jaxtyping
import numpy as np
import pytest

import ptycho_jax as pj
from ptycho_jax._stats import STATS_KEYS, float_sum

DATA = pathlib.Path(__file__).parent / "data" / "report"
SHARED = pathlib.Path(__file__).resolve().parents[2] / "shared" / "golden"
CASES = ("gs1_ideal", "gs2_ideal", "gs2_sequential")
STAGE_FILES = {
    "raw_diffraction": ("input_rawdata.npz", "diff3d"),
    "grouped_diffraction": ("stage1_grouping.npz", "diffraction"),
    "grouped_X_full": ("stage2_normalize.npz", "X_full"),
    "container_X": ("stage3_container.npz", "X"),
}
NUMPY_VERSION = tuple(int(p) for p in np.__version__.split(".")[:2])


# -- a slow, literal reference of the recipe: one Python scalar addition at a time --------------


def _ref_pairwise(v: list, dt) -> np.generic:
    n = len(v)
    if n < 8:
        acc = dt(0)
        for x in v:
            acc = dt(acc + x)
        return acc
    if n <= 128:
        r = [v[j] for j in range(8)]
        i = 8
        while i < n - (n % 8):
            for j in range(8):
                r[j] = dt(r[j] + v[i + j])
            i += 8
        s = dt(dt(dt(r[0] + r[1]) + dt(r[2] + r[3])) + dt(dt(r[4] + r[5]) + dt(r[6] + r[7])))
        for k in range(n - n % 8, n):
            s = dt(s + v[k])
        return s
    n2 = n // 2 - (n // 2) % 8
    return dt(_ref_pairwise(v[:n2], dt) + _ref_pairwise(v[n2:], dt))


def _ref_sum(v: np.ndarray, order: str) -> np.generic:
    dt = v.dtype.type
    items = [dt(x) for x in v]
    if order == "numpy2.3":
        return dt(dt(0) + _ref_pairwise(items, dt))
    acc = dt(0)
    for b in range(0, len(items), 8192):
        acc = dt(acc + _ref_pairwise(items[b : b + 8192], dt))
    return acc


def _ref_mean_std(v: np.ndarray, order: str) -> tuple[float, float]:
    dt = v.dtype.type
    n = len(v)
    mean = dt(np.float64(_ref_sum(v, order)) / n)
    d = np.array([dt(dt(x) - mean) for x in v], dtype=v.dtype)
    sq = np.array([dt(x * x) for x in d], dtype=v.dtype)
    var = dt(np.float64(_ref_sum(sq, order)) / n)
    return float(mean), float(dt(math.sqrt(float(var))))


def _sample(n: int, dtype, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # Heavy-tailed positive values, like diffraction amplitudes: rounding actually happens.
    return (rng.exponential(1.0, n) ** 3 * 7.3).astype(dtype)


LENGTHS = (
    0,
    1,
    5,
    7,
    8,
    9,
    15,
    16,
    100,
    127,
    128,
    129,
    136,
    255,
    257,
    1000,
    8191,
    8192,
    8193,
    16391,
    20011,
)


@pytest.mark.parametrize("order", ["numpy2.0", "numpy2.3"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float_sum_matches_scalar_reference(order, dtype):
    for i, n in enumerate(LENGTHS):
        v = _sample(n, dtype, seed=i)
        got, want = float_sum(v, order=order), _ref_sum(v, order)
        assert got.dtype == np.dtype(dtype)
        assert got.tobytes() == want.tobytes(), (n, got, want)


def test_array_stats_matches_scalar_reference_on_self_made_array():
    a = _sample(3 * 7001, np.float32, seed=1).reshape(3, 7001)
    a[0, 5] = np.nan
    a[1, 17] = np.inf
    a[2, 100] = -np.inf
    a[2, 200] = np.nan
    st = pj.array_stats(a)
    finite = a[np.isfinite(a)]
    mean, std = _ref_mean_std(finite, "numpy2.0")
    assert st == {
        "min": float(finite.min()),
        "max": float(finite.max()),
        "mean": mean,
        "std": std,
        "nan_count": 2,
        "shape": [3, 7001],
        "dtype": "float32",
        "finite_count": 3 * 7001 - 4,
        "total_count": 3 * 7001,
    }
    assert list(st) == list(STATS_KEYS)
    # 20999 finite entries: 3 blocks of 8192 in the NumPy 2.0 order (the goldens'); the
    # whole-array order of NumPy >= 2.3 differs here in the last bits, as the spec warns.
    assert (st["mean"], st["std"]) == (42.71298599243164, 177.9208221435547)
    st23 = pj.array_stats(a, order="numpy2.3")
    assert (st23["mean"], st23["std"]) == (42.71299362182617, 177.92083740234375)
    assert (st23["mean"], st23["std"]) == _ref_mean_std(finite, "numpy2.3")


@pytest.mark.skipif(NUMPY_VERSION < (2, 0), reason="NumPy 1.x reductions are not modelled")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_array_stats_matches_installed_numpy(dtype):
    """The order matching the installed NumPy reproduces np.sum/np.mean/np.std bit for bit."""
    order = "numpy2.3" if NUMPY_VERSION >= (2, 3) else "numpy2.0"
    for i, n in enumerate(LENGTHS[1:] + (131072 + 13, 1 << 20)):
        v = _sample(n, dtype, seed=100 + i)
        assert float_sum(v, order=order).tobytes() == np.add.reduce(v).tobytes(), n
        st = pj.array_stats(v, order=order)
        assert st["mean"] == float(np.mean(v)), n
        assert st["std"] == float(np.std(v)), n


def test_array_stats_edge_cases():
    none = pj.array_stats(np.array([np.nan, np.inf, -np.inf], np.float32))
    assert none == {
        "min": None,
        "max": None,
        "mean": None,
        "std": None,
        "nan_count": 1,
        "shape": [3],
        "dtype": "float32",
        "finite_count": 0,
        "total_count": 3,
    }
    empty = pj.array_stats(np.zeros((0, 4), np.float32))
    assert empty["mean"] is None and empty["shape"] == [0, 4] and empty["total_count"] == 0
    ints = pj.array_stats(np.arange(10, dtype=np.int64))
    assert ints["min"] == 0.0 and ints["max"] == 9.0 and isinstance(ints["min"], float)
    assert ints["mean"] == 4.5 and ints["std"] == float(np.std(np.arange(10)))
    assert ints["nan_count"] == 0 and ints["dtype"] == "int64"
    scalar = pj.array_stats(np.float32(2.5))
    assert scalar["shape"] == [] and scalar["mean"] == 2.5 and scalar["std"] == 0.0
    with pytest.raises(
        pj.PtychoInputError, match="expected a real numeric array, got dtype complex64"
    ):
        pj.array_stats(np.zeros(3, np.complex64))
    # The runtime type check (jaxtyping + beartype, on for the test run) rejects it at the call.
    with pytest.raises(jaxtyping.TypeCheckError, match="'numpy2.0'"):
        float_sum(np.zeros(3, np.float32), order="numpy1")


def test_array_stats_accepts_jax_and_ignores_memory_layout():
    import jax.numpy as jnp

    a = _sample(4 * 8 * 8 * 3, np.float32, seed=3).reshape(4, 8, 8, 3)
    st = pj.array_stats(a)
    assert pj.array_stats(jnp.asarray(a)) == st
    # A transposed view with the same logical content gives the same numbers (logical order).
    view = np.ascontiguousarray(a.transpose(0, 3, 1, 2)).transpose(0, 2, 3, 1)
    assert not view.flags["C_CONTIGUOUS"]
    assert pj.array_stats(view) == st


def _golden_json(case: str) -> dict:
    return json.loads((DATA / case / "intensity_stats.json").read_text())


@pytest.mark.parametrize("case", CASES)
def test_fixture_stats_are_the_golden_ones(case):
    """The stage stats shipped in tests/data/report (used everywhere) are as recorded upstream."""
    stats = {s["name"]: s["stats"] for s in _golden_json(case)["stages"]}
    assert list(stats) == list(STAGE_FILES)
    for st in stats.values():
        assert sorted(st) == sorted(STATS_KEYS)
        assert st["nan_count"] == 0 and st["finite_count"] == st["total_count"]
        assert st["total_count"] == math.prod(st["shape"])
    if (SHARED / case / "intensity_stats.json").exists():
        assert (SHARED / case / "intensity_stats.json").read_bytes() == (
            DATA / case / "intensity_stats.json"
        ).read_bytes()


@pytest.mark.skipif(not SHARED.exists(), reason="full goldens (../shared/golden) not present")
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("stage", list(STAGE_FILES))
def test_array_stats_bit_equal_to_golden(case, stage):
    fname, key = STAGE_FILES[stage]
    with np.load(SHARED / case / fname) as z:
        a = z[key]
    want = {s["name"]: s["stats"] for s in _golden_json(case)["stages"]}[stage]
    got = pj.array_stats(a)
    assert got == want
    assert json.dumps(got, sort_keys=True) == json.dumps(want, sort_keys=True)
