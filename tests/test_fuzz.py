"""Fuzzing bad input (specs/bad-input.md §Fuzzer): random corruptions of RawData fields, chain parameters and NPZ bytes.

Every outcome must be a correct result (finite outputs; all-zero object patches only with a
warning) or one of our named errors (a `PtychoInputError` subclass through the API; exit code 2
with one `ptycho-jax: error:` line through the CLI) — never another exception, a traceback, or a
NaN that travels on. Derandomised with bounded examples here; a longer run:

    PTYCHO_FUZZ_EXAMPLES=2000 .venv/bin/python -m pytest -q tests/test_fuzz.py

(`PTYCHO_FUZZ_EXAMPLES` scales every fuzz test; `PTYCHO_FUZZ_RANDOM=1` draws fresh examples
instead of the fixed derandomised ones.)
"""

import io
import os
import warnings

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ptycho_jax as pj
from ptycho_jax._validate import AllZeroPatchesWarning, _axis_extent
from ptycho_jax.app.cli import main

N = 8
M = 12
EXAMPLES = int(os.environ.get("PTYCHO_FUZZ_EXAMPLES", "0")) or None
DERANDOMIZE = os.environ.get("PTYCHO_FUZZ_RANDOM", "") != "1"


def fuzz_settings(ci_examples: int):
    return settings(
        max_examples=EXAMPLES or ci_examples,
        derandomize=DERANDOMIZE,
        deadline=None,
        database=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.function_scoped_fixture,
        ],
    )


def base_fields(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    x = rng.uniform(6, 58, M)
    y = rng.uniform(6, 58, M)
    return dict(
        xcoords=x,
        ycoords=y,
        xcoords_start=x.copy(),
        ycoords_start=y.copy(),
        diff3d=(rng.random((M, N, N), dtype=np.float32) + 0.05),
        probeGuess=(rng.random((N, N)) + 1j * rng.random((N, N))).astype(np.complex64),
        scan_index=np.zeros(M, np.int64),
        objectGuess=(rng.random((64, 64)) + 0.5).astype(np.complex64),
    )


FIELDS = tuple(base_fields())
DTYPES = (
    np.float16,
    np.float32,
    np.float64,
    np.int32,
    np.int64,
    np.uint8,
    np.bool_,
    np.complex64,
    np.complex128,
)
SPECIAL = (np.nan, np.inf, -np.inf, 0.0, -1.0, 1e30, -1e30, 1e-30, 3e7, 5000.0, -5000.0)


def _cast(a, dtype):
    with warnings.catch_warnings():
        warnings.simplefilter(
            "ignore"
        )  # complex -> real, overflow on the cast: that is the corruption
        return np.asarray(a).astype(dtype)


@st.composite
def corruption(draw):
    """(description, corrupt(fields) -> fields) for one random field."""
    name = draw(st.sampled_from(FIELDS + ("Y",)))
    kind = draw(st.sampled_from(("dtype", "shape", "value", "fill", "none", "scale", "shift")))
    dtype = draw(st.sampled_from(DTYPES))
    special = draw(st.sampled_from(SPECIAL))
    frac = draw(st.floats(0, 1))
    axis_delta = draw(st.sampled_from((-1, 1)))
    size_delta = draw(st.sampled_from((-M, -1, 1, 3)))

    def apply(f):
        f = dict(f)
        if name == "Y":
            a = np.ones((M, N, N, 1), np.complex64)
        else:
            a = f[name]
        if a is None:  # an earlier corruption removed the field
            return f
        if (
            kind == "none"
        ):  # None only where the API takes it; elsewhere it is a type error, not a value
            a = None if name in ("objectGuess", "Y", "scan_index") else a
        elif kind == "dtype":
            a = _cast(a, dtype)
        elif kind == "shape":
            if axis_delta < 0 and a.ndim > 0:
                a = a.reshape(-1)[: max(1, a.size // 2)] if a.ndim == 1 else a[..., 0]
            elif axis_delta > 0:
                a = a[..., None]
            if a.ndim >= 1:
                n0 = max(0, a.shape[0] + size_delta)
                a = np.resize(a, (n0, *a.shape[1:])) if n0 else a[:0]
        elif kind == "value":
            a = np.array(a, copy=True)
            if a.size:
                i = min(int(frac * a.size), a.size - 1)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    try:
                        a.reshape(-1)[i] = special
                    except (OverflowError, ValueError):
                        pass
        elif kind == "fill":
            a = np.array(a, copy=True)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    a[...] = special
                except (OverflowError, ValueError):
                    pass
        elif kind == "scale":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                a = (a * special).astype(a.dtype) if np.isfinite(special) else a
        elif kind == "shift":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                a = (a + special).astype(a.dtype) if np.isfinite(special) else a
        if name == "Y" and a is not None:
            f["Y"] = a
        elif name != "Y":
            f[name] = a
        if name in ("xcoords", "ycoords") and kind in ("shift", "scale") and a is not None:
            f[name + "_start"] = a  # move the whole scan, not only the nominal positions
        return f

    return (
        f"{kind} {name} ({np.dtype(dtype).name}, {special}, {frac:.3g}, {axis_delta}, {size_delta})",
        apply,
    )


GOOD_PARAMS = {
    "gridsize": (1, 2),
    "K": (4, 6),
    "n_groups": (4, 8),
    "seed": (None, 0, 42, 2**32 - 1),
    "nphotons": (1e9, 1.0, 1e-30, 1e30),
    "variant": ("main", "seed"),
    "patch_positions": ("upstream", "member"),
    "oversample": (False, True),
    "sequential": (False, True),
    "neighbor_pool_size": (None, 4, 6),
}
BAD_PARAMS = {  # type-correct values the chain must refuse or handle
    "gridsize": (0, 3, -1),
    "K": (0, 3),
    "n_groups": (0, 30, 1000),
    "nphotons": (1e300, 0.0, -1.0, float("nan"), float("inf")),
    "neighbor_pool_size": (0, 2),
}


def params_strategy(bad: bool):
    """Chain parameters: valid values only, or each parameter corrupted with probability ~1/3."""

    def one(name):
        good = st.sampled_from(GOOD_PARAMS[name])
        if not bad or name not in BAD_PARAMS:
            return good
        return st.one_of(good, good, st.sampled_from(BAD_PARAMS[name]))

    return st.fixed_dictionaries({name: one(name) for name in GOOD_PARAMS})


good_params = params_strategy(bad=False)
any_params = params_strategy(bad=True)


def check_result(result, caught) -> None:
    """A chain result is correct: finite everywhere, and all-zero object patches only with a warning."""
    c = result.container
    for name in ("X", "Y_I", "Y_phi", "coords_nominal", "coords_true", "norm_Y_I"):
        a = np.asarray(getattr(c, name))
        assert np.isfinite(a).all(), f"container.{name} has NaN/Inf"
    for k, v in result.intensity_scales.items():
        assert np.isfinite(v) and v > 0, f"intensity scale {k} = {v}"
    assert np.isfinite(result.training_scale) and result.training_scale > 0
    assert np.asarray(c.X).any(), "X all zero"
    if result.grouped.Y is not None and not np.asarray(c.Y_I).any():
        assert any(issubclass(w.category, AllZeroPatchesWarning) for w in caught), (
            "all-zero Y without a warning"
        )
    named = (
        pj.MirroredPatchWarning,
        pj.DuplicatePositionWarning,
        pj.PatchOutsideObjectWarning,
        AllZeroPatchesWarning,
        UserWarning,
    )
    for w in caught:
        assert issubclass(w.category, named) and not issubclass(w.category, RuntimeWarning), (
            f"unnamed warning {w.category.__name__}: {w.message}"
        )


OUTCOMES: dict[str, int] = {}


def run_api(fields: dict, params: dict | None) -> str:
    """Construct and run; returns 'error' or 'ok'; anything else fails the test."""
    outcome = _run_api(fields, params)
    OUTCOMES[outcome] = OUTCOMES.get(outcome, 0) + 1
    return outcome


def _run_api(fields: dict, params: dict | None) -> str:
    try:
        raw = pj.RawData(**fields)
    except pj.PtychoInputError as e:
        assert str(e) and "\n" not in str(e)
        return f"raw error {type(e).__name__}"
    if params is None:
        return "ok"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = pj.run_chain(raw, pj.ChainParams(**params))
        except pj.PtychoInputError as e:
            assert str(e)
            return f"chain error {type(e).__name__}"
    check_result(result, caught)
    return "ok"


@fuzz_settings(60)
@given(corruption(), good_params)
def test_fuzz_rawdata_fields_through_the_chain(corrupt, params):
    _, apply = corrupt
    run_api(apply(base_fields()), params)


@fuzz_settings(30)
@given(st.lists(corruption(), min_size=2, max_size=3))
def test_fuzz_several_fields_at_once(corrupts):
    f = base_fields()
    for _, apply in corrupts:
        f = apply(f)
    run_api(f, dict(gridsize=1, K=4, n_groups=8, seed=1, patch_positions="member"))


@fuzz_settings(40)
@given(any_params)
def test_fuzz_chain_parameters(params):
    run_api(base_fields(), params)


def _npz_bytes(fields: dict) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **fields)
    return buf.getvalue()


@st.composite
def npz_corruption(draw):
    kind = draw(st.sampled_from(("truncate", "flip", "rename", "drop", "append", "garbage", "npy")))
    frac = draw(st.floats(0, 1))
    bit = draw(st.integers(0, 7))
    key = draw(st.sampled_from(FIELDS))
    count = draw(st.integers(1, 8))
    return kind, frac, bit, key, count


def corrupt_npz(kind, frac, bit, key, count) -> bytes:
    f = base_fields()
    if kind == "rename":
        f[key + "_x"] = f.pop(key)
        return _npz_bytes(f)
    if kind == "drop":
        f.pop(key)
        return _npz_bytes(f)
    if kind == "npy":
        buf = io.BytesIO()
        np.save(buf, f[key])
        return buf.getvalue()
    data = bytearray(_npz_bytes(f))
    if kind == "truncate":
        return bytes(data[: int(frac * len(data))])
    if kind == "flip":
        rng = np.random.default_rng(int(frac * 1e6))
        for i in rng.integers(0, len(data), count):
            data[i] ^= 1 << bit
        return bytes(data)
    if kind == "append":
        return bytes(data) + bytes(count * 7)
    return bytes(np.random.default_rng(count).integers(0, 256, int(frac * 4096), dtype=np.uint8))


@fuzz_settings(60)
@given(npz_corruption())
def test_fuzz_npz_bytes(tmp_path_factory, corrupt):
    path = tmp_path_factory.mktemp("npz") / "raw.npz"
    path.write_bytes(corrupt_npz(*corrupt))
    try:
        raw = pj.RawData.from_npz(path)
    except pj.RawDataError as e:
        assert str(path) in str(e) or "RawData." in str(e)
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = pj.run_chain(
                raw, pj.ChainParams(gridsize=1, K=4, n_groups=8, seed=1, patch_positions="member")
            )
        except pj.PtychoInputError:
            return
    check_result(result, caught)


@fuzz_settings(12)
@given(
    npz_corruption(),
    corruption(),
    st.sampled_from(("1", "2")),
    st.sampled_from(("8", "0", "-3", "x")),
)
def test_fuzz_cli(tmp_path_factory, capsys, npz, field, gridsize, groups):
    tmp = tmp_path_factory.mktemp("cli")
    data = tmp / "data.npz"
    if npz[0] in ("truncate", "flip", "garbage"):
        data.write_bytes(corrupt_npz(*npz))
    else:  # a corrupted field written as a well-formed NPZ
        f = field[1](base_fields())
        try:
            data.write_bytes(_npz_bytes({k: v for k, v in f.items() if v is not None}))
        except ValueError:  # np.savez refuses (object arrays): nothing to feed
            return
    out = tmp / "rep"
    argv = [
        "-q",
        "report",
        "--input",
        str(data),
        "--gridsize",
        gridsize,
        "--n-groups",
        groups,
        "--no-figure",
        "--out",
        str(out),
    ]
    try:
        code = main(argv)
    except SystemExit as e:  # argparse: an unparsable flag value (usage line + error line)
        err = capsys.readouterr().err
        assert e.code == 2 and "error: argument" in err
        return
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line]
    assert all(
        line.startswith(("ptycho-jax: error: ", "ptycho-jax: warning: ")) for line in lines
    ), err
    if code == 0:
        assert sorted(p.name for p in out.iterdir()) == [
            "intensity_stats.json",
            "intensity_stats.md",
        ]
    else:
        assert code == 2 and sum(line.startswith("ptycho-jax: error: ") for line in lines) == 1, err
        assert not out.exists() or not any(out.iterdir())


@fuzz_settings(80)
@given(
    st.lists(st.integers(-96 * 8, 96 * 8).map(lambda v: v / 8), min_size=2, max_size=2),
    st.sampled_from(((16, 40),)),
    st.sampled_from((8, 9)),
)
def test_extent_classification_is_exact(xy, shape, n):
    """`_axis_extent` agrees with the patch kernel: inside <=> no zero fill, outside <=> an all-zero patch."""
    H, W = shape
    obj = np.ones((H, W), np.complex64)
    centre = np.asarray([xy], np.float32)
    patch = np.asarray(pj.extract_patches(obj, centre, N=n))[0]
    in_x, out_x, _ = _axis_extent(centre[:, 0], W, n)
    in_y, out_y, _ = _axis_extent(centre[:, 1], H, n)
    # the same patch from a copy of the object padded with ones: equal iff no zero fill was read
    pad = 128  # beyond every drawn centre: the reference never reads a zero fill
    big = np.ones((H + 2 * pad, W + 2 * pad), np.complex64)
    ref = np.asarray(pj.extract_patches(big, centre + np.float32(pad), N=n))[0]
    assert bool(in_x[0] and in_y[0]) == bool((patch == ref).all())
    assert bool(out_x[0] or out_y[0]) == (not patch.any())
