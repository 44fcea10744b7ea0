"""`ptycho-jax bench`: the JAX port, the TF reference and upstream-style baselines, stage by stage (specs/benchmarks.md).

Every figure is the median of repeated warm calls with min and max; the implementations of one
stage are called in turn, round after round, so each A/B ratio is taken pair by pair in the
same run. JAX compile time is the first call after `jax.clear_caches()` minus the warm median.
Each figure is also stated against a byte model (what the stage must read and write) and the
device copy bandwidth measured in the same run. Outputs: JSON, Markdown, a log-log PNG.
"""

import argparse
import dataclasses
import datetime
import functools as ft
import gc
import json
import logging
import math
import os
import pathlib
import platform
import re
import resource
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np

logger = logging.getLogger(__name__)

SCHEMA = "ptycho-jax-bench/1"
STAGES = (
    "selection",
    "neighbours",
    "h2d",
    "gather_coords",
    "normalize",
    "gather_normalize",
    "intensity_scale",
    "scaler",
    "container",
    "patches",
    "end_to_end",
)
"""Stages in report order (specs/benchmarks.md §2 says what each one times)."""
CHAIN_STAGES = tuple(s for s in STAGES if s not in ("selection", "neighbours"))
IMPLS = ("jax", "jax-engine", "tf-ref", "upstream-np", "ckdtree")
"""jax: the port (jitted, warm); jax-engine: selection with the JAX neighbour engine (cell list); tf-ref:
crosscheck.tf_reference (+ crosscheck.grouping); upstream-np: upstream's algorithm in NumPy/SciPy;
ckdtree: SciPy's cKDTree (upstream's neighbour search)."""
BASELINE_OF = {"tf-ref": "jax", "upstream-np": "jax", "ckdtree": "jax", "jax-engine": "jax"}

DENSITY = 512 / (369.0 * 181.0)
"""Scan positions per object pixel in gs2_ideal's test half (512 positions over 369 x 181 px):
the synthetic cases keep it, so the object side grows as sqrt(M)."""
NPHOTONS = 1e9
K = 4
"""Neighbours per seed (upstream's default `neighbor_count`); a case uses max(K, C) so gridsize 3 is valid."""
SEED = 1
GIB = 1024**3


# ---------------------------------------------------------------------------------------------
# plan


@dataclasses.dataclass(frozen=True, kw_only=True)
class Case:
    """One problem size and the stages and implementations timed on it."""

    name: str
    M: int  # scan positions
    B: int  # groups
    gridsize: int
    N: int
    stages: tuple[str, ...]
    impls: tuple[str, ...] = ("jax", "tf-ref", "upstream-np")
    repeats: int = 3
    source: str = "synthetic"  # "synthetic", "gs2_ideal" or "positions" (positions only, no frames)
    family: str = "sweep"  # plot grouping: "sweep" (gridsize 2, N 64), "gridsize", "N", "positions", "case"
    upstream_subset: int = 8  # patches timed with the whole-canvas algorithm, then scaled per patch
    skip: tuple[tuple[str, str], ...] = ()  # (stage, reason) left out of this case by the plan

    @property
    def C(self) -> int:
        return self.gridsize * self.gridsize

    @property
    def K(self) -> int:
        return max(K, self.C)

    @property
    def object_side(self) -> int:
        if self.source == "gs2_ideal":
            return 392
        return self.N + math.ceil(math.sqrt(self.M / DENSITY))

    def dims(self) -> dict[str, int]:
        side = self.object_side
        return {"M": self.M, "B": self.B, "C": self.C, "N": self.N, "P": self.B * self.C, "H": side, "W": side}


def _positions_for(B: int, C: int) -> int:
    """Scan positions of a sweep point: one position per group member (capped at 20,000), never fewer than B."""
    return max(B, min(B * C, 20_000))


def build_plan(preset: str, *, device: str) -> list[Case]:
    """The cases of a preset: "tiny" (tests), "quick" (< 3 min on 2 cores) or "full"."""
    gpu = device == "gpu"
    all_chain = CHAIN_STAGES
    if preset == "tiny":
        return [
            Case(name="tiny", M=96, B=16, gridsize=2, N=16, stages=("selection", *all_chain), repeats=2, family="case", upstream_subset=2),
            Case(name="positions-500", M=500, B=50, gridsize=2, N=16, stages=("selection", "neighbours"), impls=("jax", "jax-engine", "tf-ref", "ckdtree"), repeats=2, source="positions", family="positions"),
        ]
    cases = [
        Case(name="gs2_ideal", M=512, B=64, gridsize=2, N=64, stages=("selection", *all_chain), repeats=5 if preset == "quick" else 7, source="gs2_ideal", family="case", upstream_subset=16),
    ]
    if preset == "quick":
        cases.append(Case(name="medium", M=4000, B=1000, gridsize=2, N=64, stages=("selection", *all_chain), repeats=3, family="sweep", upstream_subset=4))
        for M in (10**3, 10**4, 10**5):
            cases.append(_positions_case(M, repeats=3 if M < 10**5 else 2, engine=M < 10**5))
        return cases
    cases.append(Case(name="large", M=20_000, B=5_000, gridsize=2, N=64, stages=("selection", *all_chain), repeats=3, family="sweep", upstream_subset=4))
    for B in (64, 256, 1024, 4096, 16_384, 50_000):
        stages, skip = ["gather_normalize", "scaler", "patches", "container", "intensity_scale", "end_to_end"], []
        if not gpu and B > 1024:
            why = "not planned on CPU above B = 1,024 (each call takes seconds to minutes on 2 cores; the large case has them at B = 5,000)"
            skip += [(s, why) for s in stages[3:]]
            stages = stages[:3]
        if not gpu and B > 16_384:
            skip.append(("patches", "not planned on CPU above B = 16,384 (≈ 12 s per call, ≈ 40 s for the first)"))
            skip.append(("scaler", "not planned on CPU above B = 16,384: X, the materialised divisor, the output and its inverse are four 3.3 GB stacks on top of the inputs, too close to this machine's 23 GiB"))
            stages.remove("patches")
            stages.remove("scaler")
        cases.append(Case(name=f"B{B}", M=_positions_for(B, 4), B=B, gridsize=2, N=64, stages=tuple(stages), repeats=2 if B > 16_384 else 3, upstream_subset=4, skip=tuple(skip)))
    for g in (1, 3):
        B = 512
        cases.append(Case(name=f"g{g}-B{B}", M=_positions_for(B, g * g), B=B, gridsize=g, N=64, stages=all_chain, repeats=3, family="gridsize", upstream_subset=4))
    cases.append(Case(name="N128-B512", M=_positions_for(512, 4), B=512, gridsize=2, N=128, stages=all_chain, repeats=3, family="N", upstream_subset=4))
    for M in (10**3, 10**4, 10**5, 10**6):
        cases.append(_positions_case(M, repeats=3))
    # GPU: under a run time budget, the cases its targets need come first. CPU: the largest
    # (JAX-only) case runs before TensorFlow's allocator has grown its pool, which it keeps.
    first = ("gs2_ideal", "large", "B16384", "B50000", "positions-1e5", "positions-1e6") if gpu else ("gs2_ideal", "B50000")
    cases.sort(key=lambda c: first.index(c.name) if c.name in first else len(first))
    return cases


def _positions_case(M: int, *, repeats: int, engine: bool = True) -> Case:
    return Case(
        name=f"positions-1e{round(math.log10(M))}",
        M=M,
        B=min(5_000, M // 4),
        gridsize=2,
        N=64,
        stages=("selection", "neighbours"),
        impls=("jax", "jax-engine", "tf-ref", "ckdtree") if engine else ("jax", "tf-ref", "ckdtree"),
        repeats=repeats,
        source="positions",
        family="positions",
    )


# ---------------------------------------------------------------------------------------------
# byte model (specs/benchmarks.md §4) and memory estimates (§5)


def stage_bytes(stage: str, d: dict[str, int]) -> int:
    """Fewest bytes `stage` must move through memory: each input read once, each output written once."""
    S = d["P"] * d["N"] ** 2 * 4  # one float32 (B, N, N, C) stack
    R = d["M"] * d["N"] ** 2 * 4  # the raw frames
    coords = 2 * (4 * d["P"] + 2 * d["B"]) * 8 + 2 * 2 * d["P"] * 8  # six float64 arrays written, x/y gathered
    obj = d["H"] * d["W"] * 8
    return {
        "selection": d["M"] * 16 + d["P"] * 8,
        "neighbours": d["M"] * 16 + d["B"] * (K + 1) * 8,
        "h2d": 2 * R,
        "gather_coords": 2 * S + coords,
        "normalize": 2 * S,
        "gather_normalize": 4 * S,  # gather + energy in one pass (R S, W S), then scale (R S, W S)
        "intensity_scale": R + 2 * S,  # raw frames, grouped diffraction, X, each read once
        "scaler": 4 * S,  # forward then inverse
        "container": 5 * S,  # read complex Y (2S) and X (S); write Y_I, Y_phi
        "patches": 2 * S + obj,
        "end_to_end": R + obj + 6 * S + coords,  # read frames and object; write diffraction, X, Y, Y_I, Y_phi
    }[stage]


_PEAK_FACTOR = {  # rough upper estimates of a call's output + temporaries, in units of S
    ("jax", "gather_coords"): 1, ("tf-ref", "gather_coords"): 2,
    ("jax", "normalize"): 1, ("tf-ref", "normalize"): 6,
    ("jax", "gather_normalize"): 2, ("tf-ref", "gather_normalize"): 8,
    ("jax", "intensity_scale"): 1, ("tf-ref", "intensity_scale"): 5,
    ("jax", "scaler"): 3, ("tf-ref", "scaler"): 2,
    ("jax", "container"): 3, ("tf-ref", "container"): 6,
    ("jax", "patches"): 4, ("tf-ref", "patches"): 14, ("upstream-np", "patches"): 0,
    ("jax", "end_to_end"): 10, ("tf-ref", "end_to_end"): 20,
    ("jax", "h2d"): 0,
}  # fmt: skip

_INPUT_SIZE = {  # per-case inputs (`_Inputs`), in units of (S, R): S one grouped stack, R the raw frames
    "diff3d_dev": (0, 1), "nn_dev": (0, 0), "D_dev": (1, 0), "X_dev": (1, 0), "D_np": (1, 0), "X_np": (1, 0),
    "centres": (0, 0), "grouped": (4, 0), "container": (2, 0), "tf_grouped": (3, 0),
}  # fmt: skip

STAGE_INPUTS = {  # the inputs each implementation of a stage reads (built before the stage is timed)
    ("jax", "h2d"): (),
    ("jax", "gather_coords"): ("diff3d_dev", "nn_dev"), ("tf-ref", "gather_coords"): (),
    ("jax", "normalize"): ("D_dev",), ("tf-ref", "normalize"): ("D_np",),
    ("jax", "gather_normalize"): ("diff3d_dev", "nn_dev"), ("tf-ref", "gather_normalize"): (),
    ("jax", "intensity_scale"): ("diff3d_dev", "D_dev", "X_dev"), ("tf-ref", "intensity_scale"): ("D_np", "X_np"),
    ("jax", "scaler"): ("X_dev",), ("tf-ref", "scaler"): ("X_np",),
    ("jax", "container"): ("grouped",), ("tf-ref", "container"): ("tf_grouped", "X_np"),
    ("jax", "patches"): ("centres",), ("tf-ref", "patches"): ("centres",), ("upstream-np", "patches"): ("centres",),
    ("jax", "end_to_end"): (), ("tf-ref", "end_to_end"): (),
}  # fmt: skip


_INPUT_DEPS = {"D_dev": ("diff3d_dev", "nn_dev"), "X_dev": ("D_dev",), "D_np": ("D_dev",), "X_np": ("X_dev",)}


def _with_deps(names: Sequence[str]) -> list[str]:
    out: list[str] = []
    for n in names:
        for d in _with_deps(_INPUT_DEPS.get(n, ())):
            if d not in out:
                out.append(d)
        if n not in out:
            out.append(n)
    return out


def _sizes(case: Case) -> tuple[int, int, int]:
    d = case.dims()
    S = d["P"] * d["N"] ** 2 * 4
    R = d["M"] * d["N"] ** 2 * 4
    return S, R, d["H"] * d["W"] * 8


def raw_bytes(case: Case) -> int:
    """Host memory of the case's RawData (frames and object; positions only for position sweeps)."""
    if case.source == "positions":
        return case.M * 64
    _, R, O = _sizes(case)
    return R + O


def estimate_stage_bytes(case: Case, stage: str, impl: str, *, built: Sequence[str] = ()) -> int:
    """Memory a stage still needs: its inputs not built yet plus its own output and temporaries (estimate)."""
    S, R, _ = _sizes(case)
    if stage in ("selection", "neighbours"):
        return case.M * 64 + case.B * 9 * 64 * 16  # positions, cell tables, one chunk of candidates
    need = 0
    for name in _with_deps(STAGE_INPUTS.get((impl, stage), ())):
        if name not in built:
            s_units, r_units = _INPUT_SIZE[name]
            need += s_units * S + r_units * R
    extra = R if stage in ("h2d", "end_to_end") or (impl == "tf-ref" and stage == "intensity_scale") else 0
    return need + _PEAK_FACTOR.get((impl, stage), 2) * S + extra


# ---------------------------------------------------------------------------------------------
# machine, memory probes, copy bandwidth


def _read_proc(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def machine_description(device) -> dict[str, Any]:
    """CPU model, cores, memory, the JAX device and its kind."""
    cpuinfo = _read_proc("/proc/cpuinfo")
    m = re.search(r"model name\s*:\s*(.+)", cpuinfo)
    meminfo = _read_proc("/proc/meminfo")
    mt = re.search(r"MemTotal:\s+(\d+) kB", meminfo)
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        usable = os.cpu_count()
    stats = _device_memory(device)
    return {
        "cpu_model": m.group(1).strip() if m else platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        "memory_bytes": int(mt.group(1)) * 1024 if mt else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "device": str(device),
        "device_platform": device.platform,
        "device_kind": device.device_kind,
        "device_memory_bytes": None if stats is None else stats.get("bytes_limit"),
    }


def versions(*, with_tf: bool) -> dict[str, str | None]:
    import jax
    import jaxlib
    import scipy

    from . import __version__

    out = {"ptycho_jax": __version__, "jax": jax.__version__, "jaxlib": jaxlib.__version__, "numpy": np.__version__, "scipy": scipy.__version__}
    try:
        import equinox

        out["equinox"] = equinox.__version__
    except (ImportError, AttributeError):  # pragma: no cover
        out["equinox"] = None
    out["tensorflow"] = None
    if with_tf:
        try:
            out["tensorflow"] = _tf_module().__version__
        except ImportError:
            pass
    return out


def git_description() -> dict[str, Any]:
    """HEAD's SHA and whether the code (src/, crosscheck/) differs from it, untracked files included (read-only git calls).

    The environment variable BENCH_GIT_SHA overrides the SHA (a tree copied without `.git`).
    """
    root = pathlib.Path(__file__).resolve().parents[2]
    env_sha = os.environ.get("BENCH_GIT_SHA")

    def git(*a):
        return subprocess.run(["git", *a], cwd=root, capture_output=True, text=True, timeout=20, check=True).stdout.strip()

    try:
        sha = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--", "src", "crosscheck"))  # untracked code counts
    except (OSError, subprocess.SubprocessError):
        return {"sha": env_sha or "unknown", "dirty": None}
    return {"sha": env_sha or sha, "dirty": dirty}


class HostMemory:
    """Peak resident memory of this process around a call (Linux: VmHWM, reset through /proc/self/clear_refs)."""

    def __init__(self):
        self.resettable = False
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.resettable = self._status("VmHWM") is not None
        except OSError:
            pass

    @staticmethod
    def _status(key: str) -> int | None:
        m = re.search(key + r":\s+(\d+) kB", _read_proc("/proc/self/status"))
        return int(m.group(1)) * 1024 if m else None

    def rss(self) -> int:
        v = self._status("VmRSS")
        return v if v is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def reset(self) -> int:
        """Reset the peak to the current RSS (where possible); returns the current RSS."""
        if self.resettable:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        return self.rss()

    def peak(self) -> int | None:
        """Peak RSS since the last reset (None where the peak cannot be reset)."""
        return self._status("VmHWM") if self.resettable else None


def _device_memory(device) -> dict | None:
    try:
        return device.memory_stats()
    except Exception:  # noqa: BLE001 - backends without memory stats raise various errors
        return None


def measure_copy_bandwidth(device, *, nbytes: int, repeats: int = 10) -> dict[str, Any]:
    """Streaming bandwidth of the device, counting bytes read + written, two ways.

    `fresh`: a jitted `x + 1` into a new buffer (what every stage that returns an array pays; on
    CPU this includes the kernel's first-touch page faults of XLA's fresh allocation).
    `in_place`: the same with the input donated, so the output reuses its buffer (the memory
    system's streaming rate). `gbps` is the larger, the limit every figure is compared with.
    """
    import jax
    import jax.numpy as jnp

    n = nbytes // 4
    moved = 2 * n * 4

    def timed(step):
        step()
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            step()
            ts.append(time.perf_counter() - t0)
        return {"median_s": statistics.median(ts), "min_s": min(ts), "max_s": max(ts), "gbps": moved / statistics.median(ts) / 1e9}

    x = jax.device_put(jnp.arange(n, dtype=jnp.float32), device)
    fresh_fn = jax.jit(lambda v: v + 1.0)
    fresh = timed(lambda: fresh_fn(x).block_until_ready())
    donated_fn = jax.jit(lambda v: v + 1.0, donate_argnums=0)
    state = {"x": x + 0.0}

    def donated():
        state["x"] = donated_fn(state["x"])
        state["x"].block_until_ready()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # backends that cannot donate say so; the figure is then a fresh copy
        in_place = timed(donated)
    return {"bytes": moved, "fresh": fresh, "in_place": in_place, "gbps": max(fresh["gbps"], in_place["gbps"])}


# ---------------------------------------------------------------------------------------------
# data


def synthetic_raw(M: int, N: int, *, seed: int, object_side: int | None = None, frames: bool = True):
    """Random RawData: positions uniform over the object interior (gs2_ideal's density), float32 amplitudes in [0, 1)."""
    from ._rawdata import RawData

    rng = np.random.default_rng(seed)
    side = object_side or N + math.ceil(math.sqrt(M / DENSITY))
    lo, hi = N / 2, side - N / 2
    x = rng.uniform(lo, hi, M)
    y = rng.uniform(lo, hi, M)
    diff3d = rng.random((M, N, N), dtype=np.float32) if frames else np.zeros((M, 1, 1), np.float32)
    n = N if frames else 1
    obj = (rng.random((side, side), dtype=np.float32) + 1j * rng.random((side, side), dtype=np.float32)).astype(np.complex64) if frames else None
    return RawData(
        xcoords=x, ycoords=y, xcoords_start=x, ycoords_start=y, diff3d=diff3d,
        probeGuess=np.ones((n, n), np.complex64), scan_index=np.arange(M, dtype=np.int64), objectGuess=obj,
    )  # fmt: skip


def gs2_ideal_raw():
    """gs2_ideal's RawData: the committed golden input, else the full goldens, else simulated, else synthetic."""
    from ._rawdata import RawData

    root = pathlib.Path(__file__).resolve().parents[2]
    for p in (root / "tests/data/golden/input_rawdata.npz", root.parent / "shared/golden/gs2_ideal/input_rawdata.npz"):
        if p.is_file():
            return RawData.from_npz(p), f"golden input {p.relative_to(p.parents[2]) if len(p.parents) > 2 else p}"
    try:
        from ._simulate import simulate

        return simulate("gs2_ideal").test, "simulated gs2_ideal (test half)"
    except Exception as e:  # noqa: BLE001 - fall back to shapes alone
        logger.warning("bench: gs2_ideal input not found and simulation failed (%s); using synthetic data of its shapes", e)
    return synthetic_raw(512, 64, seed=SEED, object_side=392), "synthetic, gs2_ideal shapes"


# ---------------------------------------------------------------------------------------------
# implementations


@ft.cache
def _tf_module():
    import tensorflow as tf

    return tf


def tf_available() -> bool:
    try:
        _tf_module()
        import crosscheck.tf_reference  # noqa: F401
    except ImportError:
        return False
    return True


def upstream_whole_canvas_patches(obj: np.ndarray, centres: np.ndarray, *, N: int) -> np.ndarray:
    """Upstream `get_image_patches`, algorithm as written: for each patch translate the whole padded object, crop N×N.

    The object is zero-padded by N//2; for centre (cx, cy) the whole canvas is translated by
    (−cx, −cy) with bilinear interpolation and zero fill (scipy.ndimage.shift, order 1, mode
    "constant": on a canvas with a zero border this is upstream's per-corner zero fill, and faster
    than "grid-constant"), real and imaginary parts separately, and the top-left N×N block kept. Cost
    per patch is O((H+N)(W+N)), not O(N²): this is what the JAX port's local gathers replace.

    Returns:
        (P, N, N) complex64 patches.
    """
    import scipy.ndimage as ndi

    pad = N // 2
    padded = np.pad(np.asarray(obj, np.complex64), pad)
    planes = (np.ascontiguousarray(padded.real), np.ascontiguousarray(padded.imag))
    out = np.empty((len(centres), N, N), np.complex64)
    for i, (cx, cy) in enumerate(np.asarray(centres, np.float32)):
        shift = (-float(cy), -float(cx))
        re_, im_ = (ndi.shift(p, shift, order=1, mode="constant", cval=0.0, prefilter=False) for p in planes)
        out[i].real = re_[:N, :N]
        out[i].imag = im_[:N, :N]
    return out


def _tf_scales(diff3d, diffraction, X, *, N: int, nphotons: float) -> dict[str, float]:
    """The quantities of `all_intensity_scales`, from crosscheck.tf_reference."""
    import crosscheck.tf_reference as ref

    raw_scale, raw_e = ref.dataset_scale(diff3d, nphotons)
    grouped_scale, grouped_e = ref.dataset_scale(diffraction, nphotons)
    seed_scale, x_e = ref.dataset_scale(X, nphotons, N=N)
    return {
        "fallback": ref.closed_form_scale_f64(N, nphotons),
        "main": ref.closed_form_scale_f32(N, nphotons),
        "seed": seed_scale,
        "raw_e": raw_e,
        "raw_scale": raw_scale,
        "grouped_e": grouped_e,
        "grouped_scale": grouped_scale,
        "norm_Y_I": ref.scale_nphotons(X, nphotons),
        "x_e": x_e,
    }


def _tf_chain(raw, *, N: int, gridsize: int, K: int, B: int, nphotons: float) -> dict[str, Any]:
    """The chain through the TF reference: selection, grouped dict, normalize, container, scales, scaler variable."""
    import crosscheck.grouping as rg
    import crosscheck.tf_reference as ref

    nn = rg.select_groups(raw.positions(), gridsize=gridsize, K=K, nsamples=B, seed=SEED)
    grouped = ref.grouped_dict(raw, nn, N=N)
    X, gain = ref.normalize_data(grouped["diffraction"], N)
    container = ref.make_container(grouped, X, raw.probeGuess, nphotons=nphotons)
    scales = _tf_scales(raw.diff3d, grouped["diffraction"], X, N=N, nphotons=nphotons)
    log_scale = ref.make_log_scale(scales["main"])
    return {"grouped": grouped, "X_full": X, "gain": gain, "container": container, "scales": scales, "log_scale": log_scale}


@ft.cache
def _jitted_scaler_roundtrip():
    import equinox as eqx

    @eqx.filter_jit
    def roundtrip(scaler, x):
        y = scaler(x)
        return y, scaler.inverse(y)

    return roundtrip


class _Inputs:
    """Per-case inputs, built lazily (only what a stage reads, `STAGE_INPUTS`) and kept for the case."""

    def __init__(self, case: Case, device):
        self.case, self.device = case, device
        self._cache: dict[str, Any] = {}

    def built(self) -> list[str]:
        return list(self._cache)

    def get(self, name: str):
        if name not in self._cache:
            self._cache[name] = getattr(self, "_make_" + name)()
        return self._cache[name]

    def _make_raw(self):
        c = self.case
        if c.source == "gs2_ideal":
            raw, origin = gs2_ideal_raw()
            self._cache["origin"] = origin
            return raw
        self._cache["origin"] = "synthetic" + (" positions only" if c.source == "positions" else "")
        return synthetic_raw(c.M, c.N, seed=SEED, frames=c.source != "positions")

    def _make_positions(self):
        return self.get("raw").positions()

    def _make_nn(self):
        from ._grouping import select_groups

        c = self.case
        return select_groups(self.get("positions"), gridsize=c.gridsize, K=c.K, nsamples=c.B, seed=SEED)

    def _make_seeds(self):
        c = self.case
        return np.random.RandomState(SEED).choice(c.M, min(c.B, c.M), replace=False)

    def _put(self, a):
        import jax

        return jax.device_put(a, self.device)

    def _make_diff3d_dev(self):
        return self._put(self.get("raw").diff3d)

    def _make_nn_dev(self):
        return self._put(self.get("nn"))

    def _make_coords(self):
        from ._coords import group_coordinates

        raw = self.get("raw")
        return group_coordinates(raw.xcoords, raw.ycoords, self.get("nn"))

    def _make_D_dev(self):
        from ._grouping import gather_frames

        return gather_frames(self.get("diff3d_dev"), self.get("nn_dev"))

    def _make_X_dev(self):
        from ._normalize import normalize_data

        return normalize_data(self.get("D_dev"), self.case.N)[0]

    def _make_D_np(self):
        return np.array(self.get("D_dev"))

    def _make_X_np(self):
        return np.array(self.get("X_dev"))

    def _make_centres(self):
        from ._patches import group_patch_centres

        nn_coords, offsets, relative = self.get("coords")
        return group_patch_centres(offsets, relative, nn_coords, positions="upstream")

    def _make_grouped(self):
        from ._grouping import grouped_from_indices

        return grouped_from_indices(self.get("raw"), self.get("nn"), N=self.case.N)

    def _make_tf_grouped(self):
        import crosscheck.tf_reference as ref

        return ref.grouped_dict(self.get("raw"), self.get("nn"), N=self.case.N)

    def _make_tf_scaler(self):
        import crosscheck.tf_reference as ref

        _, fwd, inv = ref.make_scaler_pair(self.scale())
        return fwd, inv, _tf_module().convert_to_tensor(self.get("X_np"))

    def scale(self) -> float:
        from ._intensity import closed_form_intensity_scale_f32

        return closed_form_intensity_scale_f32(self.case.N, NPHOTONS)


class Impl(NamedTuple):
    """One implementation of a stage: `call()` runs it once; its time × `scale` is the figure."""

    call: Callable[[], Any]
    scale: float = 1.0
    note: str = ""
    exclude: tuple = ()  # input arrays the output aliases (not counted as produced)


def stage_callables(stage: str, inp: _Inputs, impls: Sequence[str]) -> dict[str, Impl]:
    """`{impl: Impl}` for `stage` on the case's inputs (built here, before any timing)."""
    import jax

    from ._container import make_container
    from ._coords import group_coordinates
    from ._grouping import gather_frames, select_groups
    from ._intensity import all_intensity_scales
    from ._neighbours import jax_neighbours, kdtree_neighbours
    from ._normalize import normalize_data
    from ._patches import extract_group_patches
    from ._pipeline import ChainParams, run_chain
    from ._scaler import IntensityScaler

    c = inp.case
    N = c.N
    out: dict[str, Impl] = {}
    want = set(impls)
    ref = rg = None
    if "tf-ref" in want:
        import crosscheck.grouping as rg
        import crosscheck.tf_reference as ref

    if stage == "selection":
        pos = inp.get("positions")
        kw = {"gridsize": c.gridsize, "K": c.K, "nsamples": c.B, "seed": SEED}
        out["jax"] = Impl(lambda: select_groups(pos, **kw), 1.0, "engine='scipy' (cKDTree + legacy RandomState, upstream's groups)")
        if "jax-engine" in want:
            out["jax-engine"] = Impl(lambda: select_groups(pos, engine="jax", **kw), 1.0, "engine='jax' (jax_neighbours + jax.random draws)")
        if rg is not None:
            out["tf-ref"] = Impl(lambda: rg.select_groups(pos, **kw), 1.0, "crosscheck.grouping.select_groups")
        return out
    if stage == "neighbours":
        pos, seeds = inp.get("positions"), inp.get("seeds")
        out["jax"] = Impl(lambda: jax_neighbours(pos, seeds, k=K), 1.0, f"jax_neighbours (jitted cell list, exhaustive fallback), {len(seeds)} seeds, k={K}")
        out["ckdtree"] = Impl(lambda: kdtree_neighbours(pos, seeds, k=K + 1), 1.0, f"cKDTree build + query, {len(seeds)} seeds, k={K + 1}")
        return out
    raw = inp.get("raw")
    if stage == "h2d":
        out["jax"] = Impl(lambda: jax.device_put(raw.diff3d, inp.device), 1.0, "raw frames host -> device (jax.device_put)")
        return out
    if stage == "end_to_end":
        params = ChainParams(N=N, gridsize=c.gridsize, K=c.K, n_groups=c.B, seed=SEED, nphotons=NPHOTONS)

        def jax_chain():
            r = run_chain(raw, params)
            return r.grouped, r.container, r.scaler

        out["jax"] = Impl(jax_chain, 1.0, "run_chain from host RawData (selection, transfers, patches from objectGuess)", (raw.objectGuess,))
        if ref is not None:
            note = "crosscheck selection + tf_reference stages"
            out["tf-ref"] = Impl(lambda: _tf_chain(raw, N=N, gridsize=c.gridsize, K=c.K, B=c.B, nphotons=NPHOTONS), 1.0, note, (raw.objectGuess, raw.probeGuess))
        return out

    nn = inp.get("nn")
    if stage == "gather_coords":
        diff_dev, nn_dev = inp.get("diff3d_dev"), inp.get("nn_dev")

        def jax_gc():
            start = group_coordinates(raw.xcoords_start, raw.ycoords_start, nn)
            return gather_frames(diff_dev, nn_dev), group_coordinates(raw.xcoords, raw.ycoords, nn), start

        out["jax"] = Impl(jax_gc, 1.0, "gather_frames + group_coordinates x2 (frames on device)")
        if ref is not None:
            out["tf-ref"] = Impl(lambda: (ref.gather_diffraction(raw.diff3d, nn), ref.group_coordinates(raw, nn)), 1.0, "")
    elif stage == "normalize":
        D = inp.get("D_dev")
        out["jax"] = Impl(lambda: normalize_data(D, N), 1.0, "variant main")
        if ref is not None:
            D_np = inp.get("D_np")
            out["tf-ref"] = Impl(lambda: ref.normalize_data(D_np, N), 1.0, "variant main")
    elif stage == "gather_normalize":
        diff_dev, nn_dev = inp.get("diff3d_dev"), inp.get("nn_dev")
        out["jax"] = Impl(lambda: normalize_data(gather_frames(diff_dev, nn_dev), N), 1.0, "gather_frames then normalize_data")
        if ref is not None:
            out["tf-ref"] = Impl(lambda: ref.normalize_data(ref.gather_diffraction(raw.diff3d, nn), N), 1.0, "")
    elif stage == "intensity_scale":
        diff_dev, D, X = inp.get("diff3d_dev"), inp.get("D_dev"), inp.get("X_dev")
        out["jax"] = Impl(lambda: all_intensity_scales(raw_diff3d=diff_dev, grouped_diffraction=D, X=X, N=N, nphotons=NPHOTONS), 1.0, "all_intensity_scales (9 quantities)")
        if ref is not None:
            D_np, X_np = inp.get("D_np"), inp.get("X_np")
            out["tf-ref"] = Impl(lambda: _tf_scales(raw.diff3d, D_np, X_np, N=N, nphotons=NPHOTONS), 1.0, "same 9 quantities")
    elif stage == "scaler":
        X = inp.get("X_dev")
        scale = inp.scale()
        rt = _jitted_scaler_roundtrip()
        out["jax"] = Impl(lambda: rt(IntensityScaler.from_scale(scale), X), 1.0, "from_scale + forward + inverse, filter_jit")
        if ref is not None:
            fwd, inv, Xt = inp.get("tf_scaler")
            out["tf-ref"] = Impl(lambda: inv(fwd(Xt)), 1.0, "Keras layer pair, forward + inverse (eager)")
    elif stage == "container":
        g, probe = inp.get("grouped"), raw.probeGuess
        note = "Y_I/Y_phi from complex Y, norm_Y_I in TF order"
        out["jax"] = Impl(lambda: make_container(g, probe, nphotons=NPHOTONS), 1.0, note, (g.X_full, g.nn_indices, g.coords_offsets, g.coords_relative))
        if ref is not None:
            tg, tX = inp.get("tf_grouped"), inp.get("X_np")
            alias = (tX, probe, tg["nn_indices"], tg["coords_offsets"], tg["coords_relative"])
            out["tf-ref"] = Impl(lambda: ref.make_container(tg, tX, probe, nphotons=NPHOTONS), 1.0, "", alias)
    elif stage == "patches":
        obj, centres = raw.objectGuess, inp.get("centres")
        out["jax"] = Impl(lambda: extract_group_patches(obj, centres, N=N, C=c.C), 1.0, "local bilinear gathers, FMA-order blend")
        if ref is not None:
            B = len(centres) // c.C
            flat = centres.reshape(B, c.C, 2).transpose(0, 2, 1)[:, None].astype(np.float64)  # (B, 1, 2, C), exact
            zeros = np.zeros((B, 1, 2, 1))
            note = "crosscheck gather-based extraction (not upstream's algorithm)"
            out["tf-ref"] = Impl(lambda: ref.image_patches(obj, flat, zeros, N=N), 1.0, note)
        if "upstream-np" in want:
            k = max(1, min(c.upstream_subset, len(centres)))
            sub = centres[:k]
            note = f"whole padded canvas ({c.object_side + 2 * (N // 2)}² px) translated per patch; {k} of {len(centres)} patches timed, scaled per patch"
            out["upstream-np"] = Impl(lambda: upstream_whole_canvas_patches(obj, sub, N=N), len(centres) / k, note)
    else:
        raise ValueError(f"stage: expected one of {STAGES}, got {stage!r}")
    return out


# ---------------------------------------------------------------------------------------------
# timing


@dataclasses.dataclass(kw_only=True)
class Figure:
    """One implementation's timings of one stage on one case (seconds; scaled where `scale` ≠ 1)."""

    case: str
    stage: str
    impl: str
    dims: dict[str, int]
    times_s: list[float]
    first_s: float
    scale: float = 1.0
    bytes: int = 0
    peak_rss_growth_bytes: int | None = None
    device_peak_bytes: int | None = None
    produced_bytes: int | None = None
    note: str = ""

    @property
    def median_s(self) -> float:
        return statistics.median(self.times_s)

    def to_json(self, copy_gbps: float | None) -> dict[str, Any]:
        med = self.median_s
        gbps = self.bytes / med / 1e9 if med > 0 else None
        warm = self.times_s
        return {
            "case": self.case, "stage": self.stage, "impl": self.impl, **self.dims,
            "n": len(warm), "median_s": med, "min_s": min(warm), "max_s": max(warm), "times_s": warm,
            "first_call_s": self.first_s,
            "compile_s": max(0.0, self.first_s - med) if self.impl.startswith("jax") else None,
            "scale": self.scale, "bytes": self.bytes, "gbps": gbps,
            "fraction_of_copy_bandwidth": (gbps / copy_gbps) if (gbps and copy_gbps) else None,
            "peak_rss_growth_bytes": self.peak_rss_growth_bytes, "produced_bytes": self.produced_bytes,
            "memory_ratio": (self.peak_rss_growth_bytes / self.produced_bytes) if (self.peak_rss_growth_bytes is not None and self.produced_bytes) else None,
            "device_peak_bytes": self.device_peak_bytes, "note": self.note,
        }  # fmt: skip


def _block(x):
    import jax

    return jax.block_until_ready(x)


def _clear_jax_caches():
    import jax

    jax.clear_caches()
    gc.collect()


def measure_stage(
    case: Case,
    stage: str,
    calls: dict[str, Impl],
    *,
    repeats: int,
    budget_s: float,
    mem: HostMemory,
    device,
    progress: Callable[[str], None],
) -> tuple[list[Figure], list[dict], list[str]]:
    """First call of each implementation (compile), then up to `repeats` interleaved warm rounds.

    After the first warm round, only as many rounds as fit `budget_s` are run (at least one).
    Memory: peak RSS growth over the warm calls; the bytes of the arrays the last call returned.
    """
    order = [i for i in IMPLS if i in calls]
    firsts: dict[str, float] = {}
    times: dict[str, list[float]] = {i: [] for i in order}
    growth: dict[str, int | None] = {i: None for i in order}
    dev_peak: dict[str, int | None] = {i: None for i in order}
    produced: dict[str, int | None] = {i: None for i in order}
    notes: list[str] = []

    def one(impl: str, *, warm: bool) -> float:
        fn, scale, _, exclude = calls[impl]
        base = mem.reset()
        t0 = time.perf_counter()
        r = fn()
        _block(r)
        dt = (time.perf_counter() - t0) * scale
        peak = mem.peak()
        if warm and peak is not None:
            g = peak - base
            growth[impl] = g if growth[impl] is None else max(growth[impl], g)
        if impl.startswith("jax"):
            st = _device_memory(device)
            if st and "peak_bytes_in_use" in st:
                dev_peak[impl] = st["peak_bytes_in_use"]
        if warm and scale == 1.0:
            produced[impl] = _produced_bytes(r, exclude=exclude)
        del r
        return dt

    for impl in order:
        if impl.startswith("jax"):
            _clear_jax_caches()
        firsts[impl] = one(impl, warm=False)
        scaled = f" (scaled x{calls[impl].scale:.0f} from a subset)" if calls[impl].scale != 1.0 else ""
        progress(f"{case.name}: {stage}: {impl} first call {_fmt_s(firsts[impl])}{scaled}")
    rounds = 0
    t_round = time.perf_counter()
    while rounds < repeats:
        for impl in order:
            times[impl].append(one(impl, warm=True))
        rounds += 1
        if rounds == 1:
            per_round = time.perf_counter() - t_round
            fit = max(1, int(budget_s // max(per_round, 1e-9)))
            if fit < repeats:
                notes.append(f"{case.name}/{stage}: {fit} warm round(s) instead of {repeats} ({_fmt_s(per_round)} per round, budget {budget_s:.0f} s per figure)")
                repeats = fit
    d = case.dims()
    nbytes = stage_bytes(stage, d)
    figs = [
        Figure(case=case.name, stage=stage, impl=i, dims=d, times_s=times[i], first_s=firsts[i], scale=calls[i].scale,
               bytes=nbytes, peak_rss_growth_bytes=growth[i], device_peak_bytes=dev_peak[i], produced_bytes=produced[i],
               note=calls[i].note)
        for i in order
    ]  # fmt: skip
    ratios = []
    for impl in order:
        base = BASELINE_OF.get(impl)
        if base in times and impl != base:
            r = [b / a for a, b in zip(times[base], times[impl]) if a > 0]
            if r:
                ratios.append({"case": case.name, "stage": stage, "numerator": impl, "denominator": base, "median": statistics.median(r), "min": min(r), "max": max(r), "n": len(r)})
    summary = ", ".join(f"{i} {_fmt_s(statistics.median(times[i]))}" for i in order)
    progress(f"{case.name}: {stage}: {summary}")
    return figs, ratios, notes


# ---------------------------------------------------------------------------------------------
# suite


@dataclasses.dataclass(kw_only=True)
class BenchResult:
    """Everything one run measured; `to_json` is the file format."""

    preset: str
    command: str
    machine: dict[str, Any]
    versions: dict[str, Any]
    git: dict[str, Any]
    copy_bandwidth: dict[str, Any]
    cases: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    figures: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    ratios: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    checks: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    cuts: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    errors: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    targets: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    started: str = ""
    wall_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"schema": SCHEMA, **dataclasses.asdict(self)}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> "BenchResult":
        """Read back `to_json`'s document (to re-render Markdown and plot, e.g. of a GPU run)."""
        from ._errors import PtychoInputError

        if doc.get("schema") != SCHEMA:
            raise PtychoInputError(f"bench --render: schema: expected {SCHEMA!r}, got {doc.get('schema')!r}")
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in doc.items() if k in names})


def _produced_bytes(tree, exclude: Sequence[Any] = ()) -> int:
    """Bytes of the distinct arrays in a pytree (device buffers and NumPy arrays), skipping `exclude`."""
    import jax

    skip = {_buffer_key(a) for a in exclude if a is not None}
    seen: dict[Any, int] = {}
    for leaf in jax.tree.leaves(tree):
        if isinstance(leaf, (jax.Array, np.ndarray)) and getattr(leaf, "ndim", 0) > 0:
            k = _buffer_key(leaf)
            if k not in skip:
                seen[k] = int(leaf.nbytes)
    return sum(seen.values())


def _buffer_key(a) -> Any:
    if isinstance(a, np.ndarray):
        return ("np", a.__array_interface__["data"][0], a.nbytes)
    try:
        return ("dev", a.unsafe_buffer_pointer(), a.nbytes)
    except Exception:  # noqa: BLE001 - sharded or deleted arrays
        return ("id", id(a))


def _check_patches(inp: _Inputs, k: int) -> dict[str, Any]:
    """The upstream-np baseline and the port compute the same patches (max |difference| on k patches)."""
    from ._patches import extract_patches

    centres = inp.get("centres")[:k]
    obj = inp.get("raw").objectGuess
    a = upstream_whole_canvas_patches(obj, centres, N=inp.case.N)
    b = np.asarray(extract_patches(obj, centres, N=inp.case.N))
    scale = float(np.abs(b).max()) or 1.0
    return {"case": inp.case.name, "what": "upstream-np vs jax patches", "patches": int(k), "max_abs_diff": float(np.abs(a - b).max()), "max_abs": scale}


def run_suite(
    plan: Sequence[Case],
    *,
    device,
    preset: str,
    command: str = "",
    impls: Sequence[str] = IMPLS,
    repeats: int | None = None,
    budget_gib: float | None = None,
    time_budget_s: float | None = None,
    figure_budget_s: float = 60.0,
    progress: Callable[[str], None] = lambda msg: None,
    checkpoint: Callable[[BenchResult], None] | None = None,
) -> BenchResult:
    """Run every case of `plan` on `device`; cut (and record why) what does not fit memory or time."""
    t_start = time.perf_counter()
    mem = HostMemory()
    t0 = time.perf_counter()
    use_tf = "tf-ref" in impls and tf_available()
    if "tf-ref" in impls and not use_tf:
        progress("tensorflow / crosscheck.tf_reference not importable: tf-ref figures skipped")
    if use_tf:
        progress(f"tensorflow imported in {time.perf_counter() - t0:.1f} s")
    meminfo = _read_proc("/proc/meminfo")
    avail = re.search(r"MemAvailable:\s+(\d+) kB", meminfo)
    avail_b = int(avail.group(1)) * 1024 if avail else 8 * GIB
    host_budget = int(min(budget_gib * GIB if budget_gib else 24 * GIB, mem.rss() + 0.8 * avail_b))
    dev_stats = _device_memory(device)
    dev_budget = int(0.8 * dev_stats["bytes_limit"]) if dev_stats and dev_stats.get("bytes_limit") else None

    copy_bytes = (1 * GIB) if device.platform == "gpu" else (256 * 2**20)
    if preset == "tiny":
        copy_bytes = 16 * 2**20
    with _device_scope(device):
        bw = measure_copy_bandwidth(device, nbytes=copy_bytes)
    progress(f"copy bandwidth {bw['gbps']:.1f} GB/s (read + write, {copy_bytes / 2**20:.0f} MiB; fresh output {bw['fresh']['gbps']:.1f}, in place {bw['in_place']['gbps']:.1f})")
    result = BenchResult(
        preset=preset, command=command, machine=machine_description(device), versions=versions(with_tf=use_tf),
        git=git_description(), copy_bandwidth={"start": bw}, started=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),  # noqa: UP017 (Python 3.10)
    )  # fmt: skip
    result.notes.append(f"host memory budget {host_budget / GIB:.1f} GiB for this process (min of 24 GiB or --budget-gib, and its RSS + 80% of available memory at the start)")
    if dev_budget:
        result.notes.append(f"device memory budget {dev_budget / GIB:.1f} GiB (80% of the device limit)")
    if not use_tf:
        why = "not requested (--impls)" if "tf-ref" not in impls else "TensorFlow or crosscheck.tf_reference not importable here"
        result.notes.append(f"tf-ref: no TF reference figures ({why})")
    else:
        result.notes.append(
            "tf-ref memory: TensorFlow's CPU allocator (oneDNN) keeps freed memory in its pool for the rest of the process, "
            "so its peak-RSS growth figures understate its footprint once the pool is warm, and the RSS in use that the "
            "memory cuts see includes the pool"
        )

    def cut(case, stage, impl, reason):
        result.cuts.append({"case": case.name, "stage": stage, "impl": impl, "reason": reason})
        progress(f"{case.name}: {stage}: {impl} cut: {reason}")

    with warnings.catch_warnings(), _device_scope(device):
        from ._grouping import DuplicatePositionWarning, MirroredPatchWarning

        warnings.simplefilter("ignore", MirroredPatchWarning)
        warnings.simplefilter("ignore", DuplicatePositionWarning)
        for case in plan:
            elapsed = time.perf_counter() - t_start
            if time_budget_s is not None and elapsed > time_budget_s:
                for stage in case.stages:
                    cut(case, stage, "*", f"run time budget of {time_budget_s:.0f} s spent ({elapsed:.0f} s elapsed)")
                continue
            case_impls = [i for i in case.impls if i in impls and (i != "tf-ref" or use_tf)]
            for stage, reason in case.skip:
                cut(case, stage, "*", reason)
            if mem.rss() + raw_bytes(case) > host_budget:
                for stage in case.stages:
                    cut(case, stage, "*", f"the input data need ~{raw_bytes(case) / GIB:.1f} GiB > host budget {host_budget / GIB:.1f} GiB")
                continue
            t0 = time.perf_counter()
            inp = _Inputs(case, device)
            inp.get("raw")
            result.cases.append({"name": case.name, **case.dims(), "gridsize": case.gridsize, "source": inp.get("origin"), "family": case.family, "stages": list(case.stages)})
            progress(f"{case.name}: inputs ready in {time.perf_counter() - t0:.1f} s (M={case.M}, B={case.B}, C={case.C}, N={case.N}, object {case.object_side}²; RSS {_fmt_bytes(mem.rss())})")
            for stage in case.stages:
                # XLA:CPU can keep a call's buffers resident until its executable is dropped; drop them
                # before reading the RSS the memory cuts start from (each stage recompiles anyway).
                _clear_jax_caches()
                allowed = []
                for impl in case_impls:
                    if stage in ("selection",) and impl not in ("jax", "jax-engine", "tf-ref"):
                        continue
                    if stage == "neighbours" and impl not in ("jax", "ckdtree"):
                        continue
                    if stage not in ("selection", "neighbours") and impl not in ("jax", "tf-ref", "upstream-np"):
                        continue
                    if impl == "upstream-np" and stage != "patches":
                        continue
                    if impl == "tf-ref" and stage == "h2d":
                        continue
                    reason = _cut_reason(case, stage, impl, device=device, built=inp.built(), rss=mem.rss(), host_budget=host_budget, dev_budget=dev_budget)
                    if reason:
                        cut(case, stage, impl, reason)
                        continue
                    allowed.append(impl)
                if "jax" not in allowed:
                    continue
                try:
                    calls = stage_callables(stage, inp, allowed)
                    figs, ratios, notes = measure_stage(
                        case, stage, calls, repeats=repeats or case.repeats, budget_s=figure_budget_s, mem=mem, device=device, progress=progress
                    )
                except Exception as e:  # one failing stage must not lose the rest of the run
                    logger.debug("bench: %s/%s failed", case.name, stage, exc_info=True)
                    result.errors.append({"case": case.name, "stage": stage, "error": f"{type(e).__name__}: {e}"})
                    progress(f"{case.name}: {stage}: failed: {type(e).__name__}: {e}")
                    gc.collect()
                    continue
                result.figures.extend(f.to_json(bw["gbps"]) for f in figs)
                result.ratios.extend(ratios)
                result.notes.extend(notes)
                if stage == "patches" and "upstream-np" in allowed:
                    result.checks.append(_check_patches(inp, min(2, case.upstream_subset)))
            del inp
            gc.collect()
            if checkpoint is not None:
                result.targets = evaluate_targets(result)
                result.wall_s = time.perf_counter() - t_start
                checkpoint(result)
        _clear_jax_caches()
        result.copy_bandwidth["end"] = measure_copy_bandwidth(device, nbytes=copy_bytes)
    result.targets = evaluate_targets(result)
    result.wall_s = time.perf_counter() - t_start
    return result


def _device_scope(device):
    """`jax.default_device(device)` (arrays created from NumPy land on `device`)."""
    import jax

    scope = getattr(jax, "default_device", None)
    if scope is None:  # pragma: no cover - older/newer JAX without it: the default backend is used
        import contextlib

        logger.warning("bench: jax.default_device unavailable; arrays go to the default backend")
        return contextlib.nullcontext()
    return scope(device)


def _cut_reason(case: Case, stage: str, impl: str, *, device, built: Sequence[str], rss: int, host_budget: int, dev_budget: int | None) -> str | None:
    """Why `impl` of `stage` cannot run on `case` here (memory estimate, time), or None."""
    need = estimate_stage_bytes(case, stage, impl, built=built)
    on_device = impl in ("jax", "jax-engine") and device.platform != "cpu"
    if on_device:
        st = _device_memory(device) or {}
        in_use = st.get("bytes_in_use", 0)
        if dev_budget is not None and in_use + need > dev_budget:
            return f"needs ~{(in_use + need) / GIB:.1f} GiB of device memory (estimate) > budget {dev_budget / GIB:.1f} GiB"
    elif rss + need > host_budget:
        return f"needs ~{(rss + need) / GIB:.1f} GiB of host memory (estimate: {rss / GIB:.1f} in use + {need / GIB:.1f}) > budget {host_budget / GIB:.1f} GiB"
    return None


# ---------------------------------------------------------------------------------------------
# targets (issue 5), reported not asserted


def _fig(result: BenchResult, case: str, stage: str, impl: str) -> dict | None:
    for f in result.figures:
        if f["case"] == case and f["stage"] == stage and f["impl"] == impl:
            return f
    return None


def _ratio(result: BenchResult, case: str, stage: str, num: str) -> dict | None:
    for r in result.ratios:
        if r["case"] == case and r["stage"] == stage and r["numerator"] == num:
            return r
    return None


def evaluate_targets(result: BenchResult) -> list[dict[str, Any]]:
    """The issue's targets, evaluated on the largest case present (large, else medium, else the first)."""
    names = [c["name"] for c in result.cases]
    big = next((n for n in ("large", "medium", "tiny", "gs2_ideal") if n in names), None)
    out: list[dict[str, Any]] = []
    gpu = result.machine.get("device_platform") == "gpu"

    def add(name, value, goal, ok, detail):
        out.append({"target": name, "value": value, "goal": goal, "met": ok, "detail": detail})

    if big is not None:
        r = _ratio(result, big, "end_to_end", "tf-ref")
        if r:
            add(f"end-to-end JAX vs TF reference ({big})", r["median"], ">= 10x", r["median"] >= 10, f"TF/JAX pair ratios median {r['median']:.2f} (min {r['min']:.2f}, max {r['max']:.2f}, n={r['n']})")
        r = _ratio(result, big, "patches", "upstream-np")
        if r:
            add(f"object patches vs upstream whole-canvas ({big})", r["median"], ">= 1000x", r["median"] >= 1000, f"upstream/JAX median {r['median']:.0f} (min {r['min']:.0f}, max {r['max']:.0f}); upstream timed on a subset, scaled per patch")
        m = _fig(result, big, "end_to_end", "jax")
        if m and m["memory_ratio"] is not None:
            add(f"peak host memory / arrays produced ({big}, JAX end to end)", m["memory_ratio"], "<= 2x", m["memory_ratio"] <= 2, f"peak RSS growth {_fmt_bytes(m['peak_rss_growth_bytes'])} for {_fmt_bytes(m['produced_bytes'])} of arrays returned (ratio {m['memory_ratio']:.2f})")
    pos = [c["name"] for c in result.cases if c["family"] == "positions"]
    at = "positions-1e5" if "positions-1e5" in pos else (pos[-1] if pos else None)
    if at:
        r = _ratio(result, at, "neighbours", "ckdtree")
        if r:
            add(f"neighbour search JAX vs cKDTree ({at}, {'GPU' if gpu else 'CPU'})", r["median"], ">= 1x (no slower)" if not gpu else "> 1x (faster)", r["median"] >= 1 if not gpu else r["median"] > 1, f"cKDTree/JAX median {r['median']:.3g} (JAX {_fmt_s(_fig(result, at, 'neighbours', 'jax')['median_s'])}, cKDTree {_fmt_s(_fig(result, at, 'neighbours', 'ckdtree')['median_s'])})")
    if gpu:
        best = None
        for f in result.figures:
            eligible = f["stage"] == "gather_normalize" and f["impl"] == "jax" and f["B"] >= 16_384 and f["fraction_of_copy_bandwidth"]
            if eligible and (best is None or f["B"] > best["B"]):
                best = f
        if best:
            add(f"gather + normalize vs copy bandwidth ({best['case']}, B={best['B']})", best["fraction_of_copy_bandwidth"], ">= 0.6", best["fraction_of_copy_bandwidth"] >= 0.6, f"{best['gbps']:.0f} GB/s of {result.copy_bandwidth['start']['gbps']:.0f} GB/s")
    return out


# ---------------------------------------------------------------------------------------------
# rendering


def _fmt_s(s: float | None) -> str:
    if s is None:
        return "—"
    if s < 1e-3:
        return f"{s * 1e6:.3g} µs"
    if s < 1:
        return f"{s * 1e3:.3g} ms"
    return f"{s:.3g} s"


def _fmt_bytes(b: int | None) -> str:
    if b is None:
        return "—"
    if abs(b) < 2**20:
        return f"{b / 1024:.0f} KiB"
    if abs(b) < 2**30:
        return f"{b / 2**20:.0f} MiB"
    return f"{b / 2**30:.2f} GiB"


def to_markdown(result: BenchResult) -> str:
    """The Markdown report: header, targets, one row per (case, stage), memory, cuts."""
    m, v, g = result.machine, result.versions, result.git
    bw = result.copy_bandwidth["start"]
    lines = [
        f"# ptycho-jax benchmarks: {m['device_platform']} ({result.preset})",
        "",
        f"- Machine: {m['cpu_model']}, {m['cpus_usable']} usable of {m['cpu_count']} CPUs, "
        f"{_fmt_bytes(m['memory_bytes'])} RAM; device `{m['device']}` ({m['device_kind']}"
        + (f", {_fmt_bytes(m['device_memory_bytes'])}" if m.get("device_memory_bytes") else "") + ")",
        "- Versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if val) + f"; Python {m['python']}",
        f"- Git: `{g['sha'][:12]}`" + (" (uncommitted changes)" if g.get("dirty") else ""),
        f"- Command: `{result.command}`; started {result.started}, {result.wall_s:.0f} s",
        f"- Copy bandwidth (jitted `x + 1` over {_fmt_bytes(bw['bytes'] // 2)}, read + write): {bw['gbps']:.1f} GB/s at the start "
        f"(in place {bw['in_place']['gbps']:.1f}, into a fresh buffer {bw['fresh']['gbps']:.1f})"
        + (f", {result.copy_bandwidth['end']['gbps']:.1f} GB/s at the end" if "end" in result.copy_bandwidth else "")
        + "; the `GB/s (of copy)` column divides the byte model of specs/benchmarks.md by the median time",
        "- Times: median [min – max] over warm calls; ratios: other / jax, taken pair by pair in the same round.",
        "",
    ]  # fmt: skip
    if result.targets:
        lines += ["## Targets", "", "| target | measured | goal | met |", "| --- | --- | --- | --- |"]
        for t in result.targets:
            lines.append(f"| {t['target']} | {t['detail']} | {t['goal']} | {'yes' if t['met'] else '**no**'} |")
        lines.append("")
    names = [c["name"] for c in result.cases]
    main = next((n for n in ("large", "medium") if n in names), None)
    if main is not None:
        lines += [f"## Summary: the {main} case", ""] + _figures_table(result, [c for c in result.cases if c["name"] == main]) + [""]
    lines += ["## Figures", ""] + _figures_table(result, result.cases) + [""]
    big = 64 * 2**20 if any((f["produced_bytes"] or 0) >= 64 * 2**20 for f in result.figures) else 0
    mem_rows = [f for f in result.figures if (f["produced_bytes"] or 0) > max(big, 0) and f["stage"] in ("end_to_end", "container", "patches", "gather_normalize")]
    if mem_rows:
        lines += ["## Memory", "", "Peak host RSS growth during a warm call (VmHWM, reset before each call) against the bytes of the arrays it returns"
                  + (" (calls returning 64 MiB or more)." if big else "."), "",
                  "| case | stage | impl | peak RSS growth | arrays returned | ratio | device peak |", "| --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
        for f in mem_rows:
            ratio = f"{f['memory_ratio']:.2f}" if f["memory_ratio"] is not None else "—"
            lines.append(f"| {f['case']} | {f['stage']} | {f['impl']} | {_fmt_bytes(f['peak_rss_growth_bytes'])} | {_fmt_bytes(f['produced_bytes'])} | {ratio} | {_fmt_bytes(f['device_peak_bytes'])} |")
        lines.append("")
    notes = [f"{f['case']}/{f['stage']}/{f['impl']}: {f['note']}" for f in result.figures if f["note"] and f["case"] in ("large", "medium", "tiny")]
    if result.checks:
        notes += [f"check {c['case']}: {c['what']}: max |diff| {c['max_abs_diff']:.3g} (max |Y| {c['max_abs']:.3g}) on {c['patches']} patches" for c in result.checks]
    notes += result.notes
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    if result.errors:
        lines += ["## Errors", ""] + [f"- {e['case']} / {e['stage']}: {e['error']}" for e in result.errors] + [""]
    if result.cuts:
        lines += ["## Cut", ""] + [f"- {c['case']} / {c['stage']} / {c['impl']}: {c['reason']}" for c in result.cuts] + [""]
    return "\n".join(lines)


def _figures_table(result: BenchResult, cases: Sequence[dict]) -> list[str]:
    """Markdown rows: one per (case, stage), a column per implementation, ratios to jax, jax's bandwidth/compile/memory."""
    keep = {c["name"] for c in cases}
    figures = [f for f in result.figures if f["case"] in keep]
    impls_present = [i for i in IMPLS if any(f["impl"] == i for f in figures)]
    others = [i for i in impls_present if i != "jax"]
    head = ["case", "stage", *impls_present, *[f"{o} / jax" for o in others], "jax GB/s (of copy)", "jax compile", "jax peak RSS +"]
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join("---" for _ in head) + " |"]
    for case in cases:
        for stage in STAGES:
            figs = {f["impl"]: f for f in figures if f["case"] == case["name"] and f["stage"] == stage}
            if not figs:
                continue
            row = [f"{case['name']} (M={case['M']}, B={case['B']}, C={case['C']}, N={case['N']})", stage]
            for i in impls_present:
                f = figs.get(i)
                row.append(f"{_fmt_s(f['median_s'])} [{_fmt_s(f['min_s'])} – {_fmt_s(f['max_s'])}]" if f else "")
            for o in others:
                r = _ratio(result, case["name"], stage, o)
                row.append(f"{r['median']:.3g}× [{r['min']:.3g} – {r['max']:.3g}]" if r else "")
            j = figs.get("jax")
            if j and j["gbps"]:
                frac = j["fraction_of_copy_bandwidth"]
                over = " — no copy made" if (frac is not None and frac > 1 and stage == "h2d") else ""
                row.append(f"{j['gbps']:.2f} ({100 * frac:.0f}%{over})" if frac is not None else f"{j['gbps']:.2f}")
            else:
                row.append("")
            row.append(("~0" if j["compile_s"] == 0 else _fmt_s(j["compile_s"])) if j and j["compile_s"] is not None else "")
            row.append(_fmt_bytes(j["peak_rss_growth_bytes"]) if j else "")
            lines.append("| " + " | ".join(row) + " |")
    return lines


def render_plot(result: BenchResult) -> bytes | None:
    """Log-log PNG: time vs groups B per stage (gridsize 2, N 64) and time vs positions M; None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        from matplotlib.figure import Figure as MplFigure
    except ImportError:
        return None
    import io

    fam = {c["name"]: c for c in result.cases}
    chain_cases = [c for c in result.cases if c["family"] in ("sweep", "case") and c["C"] == 4]
    families = ("sweep",) if any(c["family"] == "sweep" for c in chain_cases) else ("case",)
    main_N = statistics.mode([c["N"] for c in chain_cases]) if chain_cases else 64
    panels: list[tuple[str, str, str]] = []  # (stage, x key, families)
    for stage in STAGES:
        if stage in ("selection", "neighbours"):
            continue
        if any(f["stage"] == stage for f in result.figures):
            panels.append((stage, "B", "groups"))
    for stage in ("selection", "neighbours"):
        if any(f["stage"] == stage for f in result.figures):
            panels.append((stage, "M", "positions"))
    if not panels:
        return None
    cols = 3
    rows = math.ceil(len(panels) / cols)
    fig = MplFigure(figsize=(4.2 * cols, 3.3 * rows), layout="constrained")
    styles = {"jax": ("C0", "o"), "jax-engine": ("C4", "v"), "tf-ref": ("C1", "s"), "upstream-np": ("C3", "^"), "ckdtree": ("C2", "D")}
    for k, (stage, xkey, kind) in enumerate(panels):
        ax = fig.add_subplot(rows, cols, k + 1)
        for impl in IMPLS:
            pts = []
            for f in result.figures:
                c = fam.get(f["case"])
                if f["stage"] != stage or f["impl"] != impl or c is None:
                    continue
                if kind == "groups" and (c["C"] != 4 or c["N"] != main_N or c["family"] not in families):
                    continue
                pts.append((f[xkey], f["median_s"], f["min_s"], f["max_s"]))
            if not pts:
                continue
            pts.sort()
            x = np.array([p[0] for p in pts], float)
            y = np.array([p[1] for p in pts])
            lo = y - np.array([p[2] for p in pts])
            hi = np.array([p[3] for p in pts]) - y
            color, marker = styles[impl]
            ax.errorbar(x, y, yerr=[lo, hi], color=color, marker=marker, ms=4, lw=1.2, capsize=2, label=impl)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(stage + (f" (gridsize 2, N {main_N})" if kind == "groups" else ""), fontsize=9)
        ax.set_xlabel("groups B" if xkey == "B" else "positions M", fontsize=8)
        ax.set_ylabel("time (s)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(True, which="both", alpha=0.25)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    m = result.machine
    fig.suptitle(f"ptycho-jax bench ({result.preset}): {m['device_kind']} / {m['cpu_model']} — median, bars min–max", fontsize=9)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


def write_outputs(result: BenchResult, out_dir: str | os.PathLike, *, stem: str, plot: bool = True) -> dict[str, pathlib.Path]:
    """Write `{stem}.json`, `{stem}.md` and (with matplotlib) `{stem}.png` into `out_dir`, atomically."""
    from ._atomic import write_files_atomically

    out = pathlib.Path(out_dir)
    files = {"json": out / f"{stem}.json", "markdown": out / f"{stem}.md"}
    payload = [(files["json"], (json.dumps(result.to_json(), indent=1, default=_json_default) + "\n").encode()), (files["markdown"], to_markdown(result).encode())]
    if plot:
        png = render_plot(result)
        if png is not None:
            files["plot"] = out / f"{stem}.png"
            payload.append((files["plot"], png))
    write_files_atomically(payload)
    return files


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


# ---------------------------------------------------------------------------------------------
# command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the `bench` options to `parser`."""
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="gs2_ideal, one medium case, neighbours up to 1e5 positions (< 3 min on 2 cores)")
    size.add_argument("--tiny", action="store_true", help="smallest sizes, to check that the harness runs (tests)")
    parser.add_argument("--out", type=pathlib.Path, help="output folder (default ./bench-results; with --render, beside the JSON)")
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu", help="JAX device for the port (default cpu)")
    parser.add_argument("--stem", help="output file name stem (default: the device, plus -quick / -tiny)")
    parser.add_argument("--repeats", type=int, help="warm rounds per figure (default: per case, 2-7)")
    parser.add_argument("--impls", default=",".join(IMPLS), help=f"comma-separated implementations (default {','.join(IMPLS)})")
    parser.add_argument("--budget-gib", type=float, help="host memory budget for the size cuts (default 24, capped at 80%% of available)")
    parser.add_argument("--time-budget-s", type=float, help="stop starting new cases after this many seconds (the rest is cut)")
    parser.add_argument("--figure-budget-s", type=float, help="max seconds of warm rounds per figure (default 120 full, 60 otherwise)")
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG")
    parser.add_argument("--json", action="store_true", help="print the JSON document instead of the Markdown table")
    parser.add_argument("--render", type=pathlib.Path, metavar="JSON", help="measure nothing: re-render the Markdown and PNG of a results JSON (into --out if given, else beside it)")


def _select_device(name: str):
    import jax

    from ._errors import BackendUnavailableError

    try:
        devices = jax.devices(name)
    except RuntimeError as e:
        raise BackendUnavailableError(f"bench --device {name}: no JAX {name} backend ({e})") from e
    if not devices:
        raise BackendUnavailableError(f"bench --device {name}: no JAX {name} device found")
    return devices[0]


def run(args: argparse.Namespace) -> int:
    """Run the suite the arguments select, write JSON/Markdown/PNG to --out, print the Markdown (or JSON); returns 0."""
    from ._errors import PtychoInputError

    if getattr(args, "render", None) is not None:
        return _render_only(args)
    preset = "tiny" if args.tiny else "quick" if args.quick else "full"
    impls = tuple(i.strip() for i in args.impls.split(",") if i.strip())
    unknown = sorted(set(impls) - set(IMPLS))
    if unknown or "jax" not in impls:
        raise PtychoInputError(f"bench --impls: expected a comma-separated subset of {IMPLS} including 'jax', got {args.impls!r}")
    if args.repeats is not None and args.repeats < 1:
        raise PtychoInputError(f"bench --repeats: expected an int >= 1, got {args.repeats}")
    device = _select_device(args.device)
    if args.out is None:
        args.out = pathlib.Path("bench-results")
    quiet = getattr(args, "quiet", False)
    t0 = time.perf_counter()

    def progress(msg: str) -> None:
        if not quiet:
            print(f"ptycho-jax bench [{time.perf_counter() - t0:6.1f} s] {msg}", file=sys.stderr, flush=True)

    plan = build_plan(preset, device=args.device)
    command = "ptycho-jax bench " + " ".join(_argv_of(args))
    stem = args.stem or args.device + ("" if preset == "full" else f"-{preset}")

    def checkpoint(partial: "BenchResult") -> None:  # complete JSON and Markdown after every case
        write_outputs(partial, args.out, stem=stem, plot=False)

    result = run_suite(
        plan, device=device, preset=preset, command=command.strip(), impls=impls, repeats=args.repeats,
        budget_gib=args.budget_gib, time_budget_s=args.time_budget_s, progress=progress, checkpoint=checkpoint,
        figure_budget_s=args.figure_budget_s or (120.0 if preset == "full" else 60.0),
    )  # fmt: skip
    files = write_outputs(result, args.out, stem=stem, plot=not args.no_plot)
    print(json.dumps(result.to_json(), indent=1, default=_json_default) if args.json else to_markdown(result))
    for kind, path in files.items():
        progress(f"wrote {kind}: {path}")
    return 0


def _render_only(args: argparse.Namespace) -> int:
    from ._atomic import write_files_atomically

    result = BenchResult.from_json(json.loads(pathlib.Path(args.render).read_text()))
    result.targets = evaluate_targets(result)
    out = args.out if args.out is not None else args.render.parent
    stem = args.stem or args.render.stem
    payload = [(out / f"{stem}.md", to_markdown(result).encode())]
    png = None if args.no_plot else render_plot(result)
    if png is not None:
        payload.append((out / f"{stem}.png", png))
    write_files_atomically(payload)
    print(json.dumps(result.to_json(), indent=1, default=_json_default) if args.json else to_markdown(result))
    return 0


def _argv_of(args: argparse.Namespace) -> list[str]:
    out = []
    for flag in ("quick", "tiny", "no_plot", "json"):
        if getattr(args, flag, False):
            out.append("--" + flag.replace("_", "-"))
    out += ["--device", args.device, "--out", str(args.out)]
    for key in ("stem", "repeats", "budget_gib", "time_budget_s"):
        val = getattr(args, key, None)
        if val is not None:
            out += ["--" + key.replace("_", "-"), str(val)]
    if args.impls != ",".join(IMPLS):
        out += ["--impls", args.impls]
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m ptycho_jax._bench [options]`: the same as `ptycho-jax bench`."""
    parser = argparse.ArgumentParser(prog="ptycho-jax bench", description=__doc__.splitlines()[0])
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="ptycho-jax: %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    from ._errors import BackendUnavailableError, PtychoInputError

    try:
        return run(args)
    except (PtychoInputError, BackendUnavailableError) as e:
        print(f"ptycho-jax bench: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
