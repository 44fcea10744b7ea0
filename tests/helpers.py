"""Helpers shared by several test modules (no test module imports another `test_*` module;
tests/test_structure.py checks it): a small RawData, the tests folder, and the chain comparisons
of the sharded, streamed and distributed tests. Upstream's goldens: `_golden` (`SHARED`, the one
definition of the ../shared/golden path)."""

import os
import pathlib
import subprocess
import sys
import warnings

import numpy as np
from _golden import max_ulp

import ptycho_jax as pj
from ptycho_jax.internal import scan_raw

TESTS = pathlib.Path(__file__).resolve().parent
"""The tests folder (scripts the tests run as subprocesses live here)."""


def make_raw(m=6, n=8, **overrides) -> pj.RawData:
    """A small RawData (`m` random positions, n×n random frames, a flat 64² object) built by the
    core's `scan_raw`; `overrides` replace any RawData field (start positions stay the drawn ones)."""
    rng = np.random.default_rng(0)
    x = rng.uniform(10, 50, m)
    y = rng.uniform(10, 50, m)
    fields = dict(
        xcoords=x,
        ycoords=y,
        xcoords_start=x.copy(),
        ycoords_start=y.copy(),
        diff3d=rng.random((m, n, n), dtype=np.float32),
        probe=np.ones((n, n), np.complex64),
        scan_index=np.zeros(m, np.int64),
        obj=np.ones((64, 64), np.complex64),
    )
    renamed = {"probeGuess": "probe", "objectGuess": "obj"}
    fields.update({renamed.get(k, k): v for k, v in overrides.items()})
    return scan_raw(fields.pop("xcoords"), fields.pop("ycoords"), fields.pop("diff3d"), **fields)


# Exact (gathers, indices, coordinates, and what is computed from them elementwise).
BIT_EQUAL = (
    "diffraction",
    "Y",
    "nn_indices",
    "coords_nn",
    "coords_offsets",
    "coords_relative",
    "coords_start_nn",
    "coords_start_offsets",
    "coords_start_relative",
    "c.coords_nominal",
    "c.coords_true",
    "c.probe",
    "c.global_offsets",
    "c.local_offsets",
    "c.Y_I",
    "c.Y_phi",
)
# Downstream of a cross-device reduction: within 1 float32 ulp (observed: 0).
WITHIN_ULP = ("X_full", "normalize_gain", "c.X", "c.norm_Y_I", "log_scale", "scaled_X")


def _fields(result) -> dict:
    g, c = result.grouped, result.container
    out = {k: getattr(g, k) for k in ("diffraction", "X_full", "Y", "normalize_gain", "nn_indices")}
    out |= {k: getattr(g, k) for k in BIT_EQUAL if k.startswith("coords")}
    out |= {
        "c." + k: getattr(c, k)
        for k in (
            "X",
            "Y_I",
            "Y_phi",
            "coords_nominal",
            "coords_true",
            "probe",
            "norm_Y_I",
            "global_offsets",
            "local_offsets",
        )
    }
    out["log_scale"] = result.scaler.log_scale_f32
    out["scaled_X"] = result.scaler(c.X)  # the scaler applied per shard when X is sharded
    return out


def chain_deltas(got, ref) -> dict:
    """Per field: same shape and dtype, bytes equal, max ulp distance; per scale: float32 ulp and relative error."""
    a, b = _fields(got), _fields(ref)
    out = {}
    for k in a:
        x, y = a[k], b[k]
        if x is None or y is None:
            out[k] = {"both_none": x is None and y is None}
            continue
        x, y = np.asarray(x), np.asarray(y)
        same = x.shape == y.shape and x.dtype == y.dtype
        entry = {"same_shape_dtype": same, "bit_equal": same and x.tobytes() == y.tobytes()}
        if same and np.issubdtype(x.dtype, np.inexact):
            entry["max_ulp"] = max_ulp(x, y)
        out[k] = entry
    for k, v in ref.intensity_scales.items():
        w = got.intensity_scales[k]
        out["scale." + k] = {
            "f32_ulp": max_ulp(np.float32(w), np.float32(v)),
            "rel": abs(w - v) / abs(v),
        }
    out["training_scale"] = {
        "f32_ulp": max_ulp(np.float32(got.training_scale), np.float32(ref.training_scale))
    }
    return out


def assert_equal_chain(d):
    """Two chains' `chain_deltas`: the exact fields bit-equal, the rest within 1 ULP."""
    for k in BIT_EQUAL:
        if "both_none" in d[k]:
            assert d[k]["both_none"], k
        else:
            assert d[k]["same_shape_dtype"] and d[k]["bit_equal"], (k, d[k])
    for k in WITHIN_ULP:
        assert d[k]["same_shape_dtype"] and d[k]["max_ulp"] <= 1, (k, d[k])
    for k, v in d.items():
        if k.startswith("scale.") or k == "training_scale":
            assert v["f32_ulp"] <= 1, (k, v)
        if k.startswith("scale."):
            assert v["rel"] <= 1e-14, (k, v)  # float64 sums in another order


def console(*args: str, cwd) -> subprocess.CompletedProcess:
    """`python -m ptycho_jax ARGS` in a fresh process in `cwd`, as a user runs the console script
    (this checkout's package first on the path, whatever the folder it runs in)."""
    src = str(TESTS.parent / "src")
    path = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)
    return subprocess.run(
        [sys.executable, "-m", "ptycho_jax", *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": path},
    )


def golden_group(g, **kw) -> pj.GroupedData:
    """`pj.group` with a golden case's own parameters (N = 64, K = 4, seed 42; the mirrored-patch
    note silenced); `kw` adds or replaces ChainParams fields."""
    p = g.params
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pj.MirroredPatchWarning)
        return pj.group(
            g.raw,
            N=64,
            gridsize=p["gridsize"],
            K=4,
            n_groups=p["n_groups"],
            seed=42,
            sequential=p["sequential"],
            **kw,
        )
