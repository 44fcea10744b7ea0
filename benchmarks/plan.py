"""The benchmark plan: problem sizes (cases), stages, implementations, and the byte model each figure is stated against (specs/benchmarks.md §2, §4, §5)."""

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

from ptycho_jax import ChainParams

SCHEMA = "ptycho-jax-bench/1"
STAGES = (
    "selection",
    "neighbours",
    "h2d",
    "gather_coords",
    "normalize",
    "gather_normalize",
    "group_normalize",
    "intensity_scale",
    "scaler",
    "container",
    "patches",
    "end_to_end",
)
"""Stages in report order (specs/benchmarks.md §2 says what each one times)."""
CHAIN_STAGES = tuple(s for s in STAGES if s not in ("selection", "neighbours"))
IMPLS = (
    "jax",
    "jax-resident",
    "jax-engine",
    "tf-ref",
    "port",
    "upstream-np",
    "ckdtree",
    "upstream",
)
"""jax: the port (jitted, warm); jax-engine: selection with the JAX neighbour engine (cell list); tf-ref:
ptycho_jax.crosscheck.tf_reference (+ ptycho_jax.crosscheck.grouping); upstream-np: upstream's algorithm in NumPy/SciPy;
ckdtree: SciPy's cKDTree (upstream's neighbour search); jax-resident: the port from a RawData whose
frames are on the device (`RawData.on_device`: h2d is that one transfer, end_to_end pays none); port:
a crosscheck backend given by `--port` (benchmarks/port.py); upstream: the real upstream PtychoPINN in its own
environment (a subprocess; group_normalize, container and patches of the main case, benchmarks/upstream.py)."""
BASELINE_OF = {
    "tf-ref": "jax",
    "upstream-np": "jax",
    "ckdtree": "jax",
    "jax-engine": "jax",
    "upstream": "jax",
    "jax-resident": "jax",
    "port": "jax",
}

SAME_MALLOC = "upstream-same-malloc"
"""Numerator of the ratios of a second real-upstream run with the port's malloc settings."""

DENSITY = 512 / (369.0 * 181.0)
"""Scan positions per object pixel in gs2_ideal's test half (512 positions over 369 x 181 px):
the synthetic cases keep it, so the object side grows as sqrt(M)."""
NPHOTONS = 1e9
K = 4
"""Neighbours per seed (upstream's default `neighbor_count`); a case uses max(K, C) so gridsize 3 is valid."""
SEED = 1
GIB = 1024**3


@dataclasses.dataclass(frozen=True, kw_only=True)
class Case:
    """One problem size and the stages and implementations timed on it."""

    name: str
    M: int  # scan positions
    B: int  # groups (the benchmark's dimension letter, as in `dims` and the result files)
    gridsize: int
    N: int
    stages: tuple[str, ...]
    impls: tuple[str, ...] = ("jax", "tf-ref", "upstream-np")
    repeats: int = 3
    source: str = "synthetic"  # "synthetic", "gs2_ideal" or "positions" (positions only, no frames)
    family: str = (
        "sweep"  # plot grouping: "sweep" (gridsize 2, N 64), "gridsize", "N", "positions", "case"
    )
    upstream_subset: int = 8  # patches timed with the whole-canvas algorithm, then scaled per patch
    skip: tuple[tuple[str, str], ...] = ()  # (stage, reason) left out of this case by the plan
    k: int | None = None  # neighbour count; None: max(K, C)
    seed: int | None = SEED  # grouping seed
    nphotons: float = NPHOTONS
    options: tuple[tuple[str, Any], ...] = ()  # other ChainParams fields of the end-to-end run
    devices: int | None = None  # end to end on a mesh of this many devices
    chunk_groups: int | None = None  # end to end streamed in chunks of this many groups

    @property
    def C(self) -> int:
        return self.gridsize * self.gridsize

    @property
    def K(self) -> int:
        return self.k if self.k is not None else max(K, self.C)

    def params(self) -> ChainParams:
        """The case's chain parameters (what `run_chain` gets in the end-to-end stage)."""
        return ChainParams(
            N=self.N,
            gridsize=self.gridsize,
            K=self.K,
            n_groups=self.B,
            seed=self.seed,
            nphotons=self.nphotons,
            **dict(self.options),
        )

    @property
    def object_side(self) -> int:
        if self.source == "gs2_ideal":
            return 392
        return self.N + math.ceil(math.sqrt(self.M / DENSITY))

    def dims(self) -> dict[str, int]:
        side = self.object_side
        return {
            "M": self.M,
            "B": self.B,
            "C": self.C,
            "N": self.N,
            "P": self.B * self.C,
            "H": side,
            "W": side,
        }


def _positions_for(n_groups: int, C: int) -> int:
    """Scan positions of a sweep point: one position per group member (capped at 20,000), never fewer than n_groups."""
    return max(n_groups, min(n_groups * C, 20_000))


def build_plan(preset: str, *, device: str) -> list[Case]:
    """The cases of a preset: "tiny" (tests), "quick" (< 3 min on 2 cores) or "full"."""
    gpu = device == "gpu"
    if preset == "tiny":
        return _tiny_cases()
    cases = [_gs2_ideal_case(preset)]
    if preset == "quick":
        return cases + _quick_cases()
    cases.append(_large_case())
    cases += _b_sweep_cases(gpu)
    cases += _gridsize_cases()
    cases.append(_n128_case())
    for M in (10**3, 10**4, 10**5, 10**6):
        cases.append(_positions_case(M, repeats=3))
    return _run_order(cases, gpu)


def _tiny_cases() -> list[Case]:
    """The "tiny" preset (tests): one small chain case and one small positions case."""
    return [
        Case(
            name="tiny",
            M=96,
            B=16,
            gridsize=2,
            N=16,
            stages=("selection", *CHAIN_STAGES),
            repeats=2,
            family="case",
            upstream_subset=2,
        ),
        Case(
            name="positions-500",
            M=500,
            B=50,
            gridsize=2,
            N=16,
            stages=("selection", "neighbours"),
            impls=("jax", "jax-engine", "tf-ref", "ckdtree"),
            repeats=2,
            source="positions",
            family="positions",
        ),
    ]


def _gs2_ideal_case(preset: str) -> Case:
    """The recorded gs2_ideal case, first in every preset but "tiny"."""
    return Case(
        name="gs2_ideal",
        M=512,
        B=64,
        gridsize=2,
        N=64,
        stages=("selection", *CHAIN_STAGES),
        repeats=5 if preset == "quick" else 7,
        source="gs2_ideal",
        family="case",
        upstream_subset=16,
    )


def _quick_cases() -> list[Case]:
    """The "quick" preset after gs2_ideal: one medium case, neighbours up to 1e5 positions."""
    cases = [
        Case(
            name="medium",
            M=4000,
            B=1000,
            gridsize=2,
            N=64,
            stages=("selection", *CHAIN_STAGES),
            repeats=3,
            family="sweep",
            upstream_subset=4,
        )
    ]
    for M in (10**3, 10**4, 10**5):
        cases.append(_positions_case(M, repeats=3 if M < 10**5 else 2, engine=M < 10**5))
    return cases


def _large_case() -> Case:
    return Case(
        name="large",
        M=20_000,
        B=5_000,
        gridsize=2,
        N=64,
        stages=("selection", *CHAIN_STAGES),
        repeats=3,
        family="sweep",
        upstream_subset=4,
    )


def _b_sweep_cases(gpu: bool) -> list[Case]:
    """The B sweep (gridsize 2, N 64), with the stages not planned on CPU at large B skipped."""
    cases = []
    for B in (64, 256, 1024, 4096, 16_384, 50_000):
        stages, skip = _b_sweep_stages(B, gpu)
        cases.append(
            Case(
                name=f"B{B}",
                M=_positions_for(B, 4),
                B=B,
                gridsize=2,
                N=64,
                stages=tuple(stages),
                repeats=2 if B > 16_384 else 3,
                upstream_subset=4,
                skip=tuple(skip),
            )
        )
    return cases


def _b_sweep_stages(B: int, gpu: bool) -> tuple[list[str], list[tuple[str, str]]]:
    """The stages of the sweep point B, and the (stage, reason) pairs left out of it."""
    stages, skip = (
        ["gather_normalize", "scaler", "patches", "container", "intensity_scale", "end_to_end"],
        [],
    )
    if not gpu and B > 1024:
        why = "not planned on CPU above B = 1,024 (each call takes seconds to minutes on 2 cores; the large case has them at B = 5,000)"
        skip += [(s, why) for s in stages[3:]]
        stages = stages[:3]
    if not gpu and B > 16_384:
        skip.append(
            (
                "patches",
                "not planned on CPU above B = 16,384 (≈ 12 s per call, ≈ 40 s for the first)",
            )
        )
        skip.append(
            (
                "scaler",
                "not planned on CPU above B = 16,384: X, the materialised divisor, the output and its inverse are four 3.3 GB stacks on top of the inputs, too close to this machine's 23 GiB",
            )
        )
        stages.remove("patches")
        stages.remove("scaler")
    return stages, skip


def _gridsize_cases() -> list[Case]:
    cases = []
    for g in (1, 3):
        B = 512
        cases.append(
            Case(
                name=f"g{g}-B{B}",
                M=_positions_for(B, g * g),
                B=B,
                gridsize=g,
                N=64,
                stages=CHAIN_STAGES,
                repeats=3,
                family="gridsize",
                upstream_subset=4,
            )
        )
    return cases


def _n128_case() -> Case:
    return Case(
        name="N128-B512",
        M=_positions_for(512, 4),
        B=512,
        gridsize=2,
        N=128,
        stages=CHAIN_STAGES,
        repeats=3,
        family="N",
        upstream_subset=4,
    )


def _run_order(cases: list[Case], gpu: bool) -> list[Case]:
    # GPU: under a run time budget, the cases its targets need come first. CPU: the largest
    # (JAX-only) case runs before TensorFlow's allocator has grown its pool, which it keeps.
    first = (
        ("gs2_ideal", "large", "B16384", "B50000", "positions-1e5", "positions-1e6")
        if gpu
        else ("gs2_ideal", "B50000")
    )
    cases.sort(key=lambda c: first.index(c.name) if c.name in first else len(first))
    return cases


def apply_chain_values(
    plan: Sequence[Case],
    given: Mapping[str, Any],
    *,
    devices: int | None = None,
    chunk_groups: int | None = None,
) -> list[Case]:
    """The plan with the chain flags given on the command line (`given`: ChainParams field -> value).

    N, gridsize, n_groups (B), K, seed and nphotons apply to every stage of every case (N not to
    the positions-only cases; a gs2_ideal case with another N becomes synthetic; a case gets
    more positions if B exceeds them); the other ChainParams fields, `devices` and `chunk_groups`
    apply to the JAX end-to-end run, the stage that runs the whole chain.
    """
    if not given and devices is None and chunk_groups is None:
        return list(plan)
    own = {"N", "gridsize", "n_groups", "K", "seed", "nphotons"}
    options = tuple(sorted((k, v) for k, v in given.items() if k not in own))
    out = []
    for case in plan:
        kw: dict[str, Any] = {"options": options, "devices": devices, "chunk_groups": chunk_groups}
        if "N" in given and case.source != "positions":
            kw["N"] = given["N"]
            if case.source == "gs2_ideal" and given["N"] != case.N:
                kw["source"] = "synthetic"
        if "gridsize" in given:
            kw["gridsize"] = given["gridsize"]
        if "n_groups" in given:
            kw["B"] = given["n_groups"]
            if case.source != "gs2_ideal":
                kw["M"] = max(
                    case.M,
                    _positions_for(given["n_groups"], kw.get("gridsize", case.gridsize) ** 2),
                )
        for field, attr in (("K", "k"), ("seed", "seed"), ("nphotons", "nphotons")):
            if field in given:
                kw[attr] = given[field]
        out.append(dataclasses.replace(case, **kw))
    return out


def _positions_case(M: int, *, repeats: int, engine: bool = True) -> Case:
    return Case(
        name=f"positions-1e{round(math.log10(M))}",
        M=M,
        B=min(5_000, M // 4),
        gridsize=2,
        N=64,
        stages=("selection", "neighbours"),
        impls=("jax", "jax-engine", "tf-ref", "ckdtree")
        if engine
        else ("jax", "tf-ref", "ckdtree"),
        repeats=repeats,
        source="positions",
        family="positions",
    )


def stage_bytes(stage: str, d: dict[str, int]) -> int:
    """Fewest bytes `stage` must move through memory: each input read once, each output written once."""
    S = d["P"] * d["N"] ** 2 * 4  # one float32 (B, N, N, C) stack
    R = d["M"] * d["N"] ** 2 * 4  # the raw frames
    coords = (
        2 * (4 * d["P"] + 2 * d["B"]) * 8 + 2 * 2 * d["P"] * 8
    )  # six float64 arrays written, x/y gathered
    obj = d["H"] * d["W"] * 8
    return {
        "selection": d["M"] * 16 + d["P"] * 8,
        "neighbours": d["M"] * 16 + d["B"] * (K + 1) * 8,
        "h2d": 2 * R,
        "gather_coords": 2 * S + coords,
        "normalize": 2 * S,
        "gather_normalize": 2
        * S,  # read each grouped frame once, write X once (fused gather + normalize)
        "group_normalize": d["M"] * 16
        + 3 * S
        + coords,  # positions; read frames once, write diffraction and X
        "intensity_scale": R + 2 * S,  # raw frames, grouped diffraction, X, each read once
        "scaler": 2 * S,  # read x, write inverse(forward(x)); an eager pair also writes and reads y
        "container": 5 * S,  # read complex Y (2S) and X (S); write Y_I, Y_phi
        "patches": 2 * S + obj,
        "end_to_end": R
        + obj
        + 6 * S
        + coords,  # read frames and object; write diffraction, X, Y, Y_I, Y_phi
    }[stage]


_PEAK_FACTOR = {  # rough upper estimates of a call's output + temporaries, in units of S
    ("jax", "gather_coords"): 1, ("tf-ref", "gather_coords"): 2,
    ("jax", "normalize"): 1, ("tf-ref", "normalize"): 6,
    ("jax", "gather_normalize"): 2, ("tf-ref", "gather_normalize"): 8, ("jax", "group_normalize"): 3,
    ("jax", "intensity_scale"): 1, ("tf-ref", "intensity_scale"): 5,
    ("jax", "scaler"): 1, ("tf-ref", "scaler"): 2,
    ("jax", "container"): 3, ("tf-ref", "container"): 6,
    ("jax", "patches"): 4, ("tf-ref", "patches"): 14, ("upstream-np", "patches"): 0,
    ("jax", "end_to_end"): 10, ("tf-ref", "end_to_end"): 20,
    ("jax", "h2d"): 0, ("jax-resident", "h2d"): 0, ("jax-resident", "end_to_end"): 10,
}  # fmt: skip

_INPUT_SIZE = {  # per-case inputs (`Inputs`), in units of (S, R): S one grouped stack, R the raw frames
    "diff3d_dev": (0, 1), "nn_dev": (0, 0), "D_dev": (1, 0), "X_dev": (1, 0), "D_np": (1, 0), "X_np": (1, 0),
    "centres": (0, 0), "grouped": (4, 0), "container": (2, 0), "tf_grouped": (3, 0), "raw_resident": (0, 1),
}  # fmt: skip

STAGE_INPUTS = {  # the inputs each implementation of a stage reads (built before the stage is timed)
    ("jax", "h2d"): (),
    ("jax", "gather_coords"): ("diff3d_dev", "nn_dev"), ("tf-ref", "gather_coords"): (),
    ("jax", "normalize"): ("D_dev",), ("tf-ref", "normalize"): ("D_np",),
    ("jax", "gather_normalize"): ("diff3d_dev", "nn_dev"), ("tf-ref", "gather_normalize"): (),
    ("jax", "group_normalize"): (),
    ("jax", "intensity_scale"): ("diff3d_dev", "D_dev", "X_dev"), ("tf-ref", "intensity_scale"): ("D_np", "X_np"),
    ("jax", "scaler"): ("X_dev",), ("tf-ref", "scaler"): ("X_np",),
    ("jax", "container"): ("grouped",), ("tf-ref", "container"): ("tf_grouped", "X_np"),
    ("jax", "patches"): ("centres",), ("tf-ref", "patches"): ("centres",), ("upstream-np", "patches"): ("centres",),
    ("jax", "end_to_end"): (), ("tf-ref", "end_to_end"): (),
    ("jax-resident", "h2d"): (), ("jax-resident", "end_to_end"): ("raw_resident",),
    ("port", "gather_normalize"): (), ("port", "scaler"): ("X_np",), ("port", "intensity_scale"): (),
}  # fmt: skip


_INPUT_DEPS = {
    "D_dev": ("diff3d_dev", "nn_dev"),
    "X_dev": ("D_dev",),
    "D_np": ("D_dev",),
    "X_np": ("X_dev",),
}


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
    _, raw_b, obj_b = _sizes(case)
    return raw_b + obj_b


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
    extra = (
        R
        if stage in ("h2d", "end_to_end") or (impl == "tf-ref" and stage == "intensity_scale")
        else 0
    )
    return need + _PEAK_FACTOR.get((impl, stage), 2) * S + extra
