"""Timing one stage: warm rounds of every implementation in turn, compile time, peak memory."""

import dataclasses
import gc
import resource
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ptycho_jax.app.host_memory import release_freed_host_memory

from .machine import HostMemory, device_memory
from .plan import BASELINE_OF, IMPLS, Case, stage_bytes
from .stages import Impl
from .units import fmt_s


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
    floor_s: float | None = None
    floor_scale: float = 1.0
    note: str = ""
    minor_faults: list[int] | None = None  # getrusage ru_minflt delta of each warm call

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
            "device_peak_bytes": self.device_peak_bytes,
            "floor_s": self.floor_s, "floor_scale": self.floor_scale,
            "floor_multiple": (med / self.floor_s) if (self.floor_s and med > 0) else None,
            "minor_faults_per_call": minor_faults_per_call(self.minor_faults),
            "note": self.note,
        }  # fmt: skip


def minor_faults_per_call(faults: list[int] | None) -> int | None:
    """Median minor page faults of the warm calls (an int), None when not measured."""
    return int(statistics.median(faults)) if faults else None


def minor_faults() -> int:
    """Minor page faults of this process so far (all its threads: XLA's and the host pool's)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _block(x):
    import jax

    return jax.block_until_ready(x)


FLOOR_MAX_BYTES = 512 * 2**20
"""Largest plain copy timed for a floor on a CPU (bytes read + written); bigger floors scale it linearly."""
FLOOR_MAX_BYTES_DEVICE = 8 * 2**30
"""The same on an accelerator, where a scaled small copy would scale its dispatch overhead too."""


def make_floor(nbytes: int, device) -> tuple[Callable[[], Any], float]:
    """A plain copy moving `nbytes` (half read, half written; jitted `x + 1` into a fresh buffer).

    Returns `(call, scale)`: the copy moves `nbytes / scale` bytes; multiply its time by `scale`.
    Above `FLOOR_MAX_BYTES` (CPU; `FLOOR_MAX_BYTES_DEVICE` on accelerators) a smaller copy is
    timed and scaled (streaming copies scale linearly).
    """
    import jax
    import jax.numpy as jnp

    # Off the CPU the whole byte model is copied (up to 8 GiB): a small copy scaled up would also
    # scale its dispatch overhead (an H200 copies 512 MiB in ~0.2 ms, about the overhead itself).
    cap = FLOOR_MAX_BYTES if device.platform == "cpu" else FLOOR_MAX_BYTES_DEVICE
    moved = max(8, min(int(nbytes), cap))
    n = moved // 8  # float32 elements read, and as many written
    x = jax.device_put(jnp.zeros(n, jnp.float32), device)
    fn = jax.jit(lambda v: v + 1.0)
    fn(x).block_until_ready()
    return (lambda: fn(x)), nbytes / (8 * n)


def clear_jax_caches():
    import jax

    jax.clear_caches()
    gc.collect()


@dataclasses.dataclass(frozen=True)
class _StageRun:
    """What the calls of one stage share: the implementations and what each call records."""

    calls: dict[str, Impl]
    mem: HostMemory
    device: Any
    order: list[str]
    times: dict[str, list[float]]
    faults: dict[str, list[int]]
    growth: dict[str, int | None]
    dev_peak: dict[str, int | None]
    produced: dict[str, int | None]


def _new_stage_run(calls: dict[str, Impl], mem: HostMemory, device) -> _StageRun:
    order = [i for i in IMPLS if i in calls]
    return _StageRun(
        calls=calls,
        mem=mem,
        device=device,
        order=order,
        times={i: [] for i in order},
        faults={i: [] for i in order},
        growth={i: None for i in order},
        dev_peak={i: None for i in order},
        produced={i: None for i in order},
    )


def _one_call(run: _StageRun, impl: str, *, warm: bool, memory: bool = False) -> float:
    """One call of `impl`: its (scaled) time; records faults, peak memory, produced bytes."""
    fn, scale, _, exclude = run.calls[impl]
    base = run.mem.reset()
    f0 = minor_faults()
    t0 = time.perf_counter()
    r = fn()
    _block(r)
    dt = (time.perf_counter() - t0) * scale
    if warm and not memory:
        run.faults[impl].append(minor_faults() - f0)
    peak = run.mem.peak()
    if memory and peak is not None:
        run.growth[impl] = peak - base
    if impl.startswith("jax"):
        st = device_memory(run.device)
        if st and "peak_bytes_in_use" in st:
            run.dev_peak[impl] = st["peak_bytes_in_use"]
    if warm and scale == 1.0:
        run.produced[impl] = _produced_bytes(r, exclude=exclude)
    del r
    return dt


def _first_calls(
    run: _StageRun, case: Case, stage: str, progress: Callable[[str], None]
) -> dict[str, float]:
    """The first call of each implementation (compile included)."""
    firsts: dict[str, float] = {}
    for impl in run.order:
        if impl.startswith("jax"):
            clear_jax_caches()
        firsts[impl] = _one_call(run, impl, warm=False)
        scaled = (
            f" (scaled x{run.calls[impl].scale:.0f} from a subset)"
            if run.calls[impl].scale != 1.0
            else ""
        )
        progress(f"{case.name}: {stage}: {impl} first call {fmt_s(firsts[impl])}{scaled}")
    return firsts


def _warm_rounds(
    run: _StageRun,
    case: Case,
    stage: str,
    floor: tuple[Callable[[], Any], float],
    *,
    repeats: int,
    budget_s: float,
    notes: list[str],
) -> list[float]:
    """Interleaved warm rounds (as many as fit `budget_s` after the first); the floor's times."""
    floor_fn, floor_scale = floor
    floor_times: list[float] = []
    rounds = 0
    t_round = time.perf_counter()
    while rounds < repeats:
        for impl in run.order:
            run.times[impl].append(_one_call(run, impl, warm=True))
        t0 = time.perf_counter()
        _block(floor_fn())
        floor_times.append((time.perf_counter() - t0) * floor_scale)
        rounds += 1
        if rounds == 1:
            per_round = time.perf_counter() - t_round
            fit = max(1, int(budget_s // max(per_round, 1e-9)))
            if fit < repeats:
                notes.append(
                    f"{case.name}/{stage}: {fit} warm round(s) instead of {repeats} ({fmt_s(per_round)} per round, budget {budget_s:.0f} s per figure)"
                )
                repeats = fit
    return floor_times


def _memory_calls(run: _StageRun) -> None:
    for impl in (
        i for i in run.order if run.calls[i].scale == 1.0
    ):  # subset calls report no memory
        # Memory: one more call, untimed, after the heap's free pages went back to the system, so a
        # heap kept warm by the reuse setting (`_host_memory`) does not hide a call's temporaries.
        release_freed_host_memory()
        _one_call(run, impl, warm=False, memory=True)


def _stage_ratios(run: _StageRun, case: Case, stage: str) -> list[dict]:
    """Each implementation's time over its baseline's, round by round."""
    times = run.times
    ratios = []
    for impl in run.order:
        base = BASELINE_OF.get(impl)
        if base in times and impl != base:
            r = [b / a for a, b in zip(times[base], times[impl], strict=False) if a > 0]
            if r:
                ratios.append(
                    {
                        "case": case.name,
                        "stage": stage,
                        "numerator": impl,
                        "denominator": base,
                        "median": statistics.median(r),
                        "min": min(r),
                        "max": max(r),
                        "n": len(r),
                    }
                )
    return ratios


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
    Memory: peak RSS growth of one further call made after `release_freed_host_memory` (a warm
    heap would hide temporaries); the bytes of the arrays the last warm call returned.
    The floor: every round also times a plain copy of the stage's byte model (`stage_bytes`), so
    each figure is stated as a multiple of the memory-traffic floor measured in the same run.
    """
    run = _new_stage_run(calls, mem, device)
    order, times = run.order, run.times
    notes: list[str] = []
    firsts = _first_calls(run, case, stage, progress)
    d = case.dims()
    nbytes = stage_bytes(stage, d)
    floor_fn, floor_scale = make_floor(nbytes, device)
    floor_times = _warm_rounds(
        run, case, stage, (floor_fn, floor_scale), repeats=repeats, budget_s=budget_s, notes=notes
    )
    del floor_fn
    _memory_calls(run)
    floor_s = statistics.median(floor_times)
    growth, dev_peak, produced, faults = run.growth, run.dev_peak, run.produced, run.faults
    figs = [
        Figure(case=case.name, stage=stage, impl=i, dims=d, times_s=times[i], first_s=firsts[i], scale=calls[i].scale,
               bytes=nbytes, peak_rss_growth_bytes=growth[i], device_peak_bytes=dev_peak[i], produced_bytes=produced[i],
               floor_s=floor_s, floor_scale=floor_scale, note=calls[i].note, minor_faults=faults[i])
        for i in order
    ]  # fmt: skip
    ratios = _stage_ratios(run, case, stage)
    summary = ", ".join(f"{i} {fmt_s(statistics.median(times[i]))}" for i in order)
    progress(f"{case.name}: {stage}: {summary}")
    return figs, ratios, notes


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
