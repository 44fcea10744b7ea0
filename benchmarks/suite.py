"""A whole run: every case of the plan, cut (with the reason) where it does not fit memory or time."""

import dataclasses
import datetime
import gc
import logging
import os
import re
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ptycho_jax.app.host_memory import GLIBC_TUNABLES, last_setup, release_freed_host_memory

from .machine import (
    HostMemory,
    device_memory,
    git_description,
    machine_description,
    measure_copy_bandwidth,
    measure_h2d_bandwidth,
    read_proc,
    versions,
)
from .plan import GIB, IMPLS, SAME_MALLOC, Case, estimate_stage_bytes, raw_bytes
from .report import evaluate_targets
from .result import BenchResult
from .stages import Inputs, stage_callables, tf_available, upstream_whole_canvas_patches
from .timing import clear_jax_caches, measure_stage
from .units import fmt_bytes, fmt_s

logger = logging.getLogger(__name__)


def _check_patches(inp: Inputs, k: int) -> dict[str, Any]:
    """The upstream-np baseline and the port compute the same patches (max |difference| on k patches)."""
    from ptycho_jax import extract_patches

    centres = inp.get("centres")[:k]
    obj = inp.get("raw").objectGuess
    a = upstream_whole_canvas_patches(obj, centres, N=inp.case.N)
    b = np.asarray(extract_patches(obj, centres, N=inp.case.N))
    scale = float(np.abs(b).max()) or 1.0
    return {
        "case": inp.case.name,
        "what": "upstream-np vs jax patches",
        "patches": int(k),
        "max_abs_diff": float(np.abs(a - b).max()),
        "max_abs": scale,
    }


@dataclasses.dataclass(frozen=True)
class _Run:
    """What every case and stage of one run shares."""

    result: BenchResult
    device: Any
    mem: HostMemory
    impls: Sequence[str]
    use_tf: bool
    port: str | None
    repeats: int | None
    figure_budget_s: float
    host_budget: int
    dev_budget: int | None
    copy_gbps: float
    upstream_case: str | None
    progress: Callable[[str], None]

    def cut(self, case: Case, stage: str, impl: str, reason: str) -> None:
        self.result.cuts.append({"case": case.name, "stage": stage, "impl": impl, "reason": reason})
        self.progress(f"{case.name}: {stage}: {impl} cut: {reason}")


def _import_tf(impls: Sequence[str], progress: Callable[[str], None]) -> bool:
    t0 = time.perf_counter()
    use_tf = "tf-ref" in impls and tf_available()
    if "tf-ref" in impls and not use_tf:
        progress(
            "tensorflow / ptycho_jax.crosscheck.tf_reference not importable: tf-ref figures skipped"
        )
    if use_tf:
        progress(f"tensorflow imported in {time.perf_counter() - t0:.1f} s")
    return use_tf


def _memory_budgets(budget_gib: float | None, mem: HostMemory, device) -> tuple[int, int | None]:
    """The host budget (bytes) and the device budget (bytes, None where the device has no limit)."""
    meminfo = read_proc("/proc/meminfo")
    avail = re.search(r"MemAvailable:\s+(\d+) kB", meminfo)
    avail_b = int(avail.group(1)) * 1024 if avail else 8 * GIB
    host_budget = int(min(budget_gib * GIB if budget_gib else 24 * GIB, mem.rss() + 0.8 * avail_b))
    dev_stats = device_memory(device)
    dev_budget = (
        int(0.8 * dev_stats["bytes_limit"]) if dev_stats and dev_stats.get("bytes_limit") else None
    )
    return host_budget, dev_budget


def _start_notes(
    result: BenchResult,
    *,
    impls: Sequence[str],
    use_tf: bool,
    host_budget: int,
    dev_budget: int | None,
) -> None:
    result.notes.append(
        f"load average at the start: {read_proc('/proc/loadavg').split()[:3]} on {len(os.sched_getaffinity(0))} usable CPUs (other processes' load inflates every figure)"
    )
    result.notes.append(
        f"host memory budget {host_budget / GIB:.1f} GiB for this process (min of 24 GiB or --budget-gib, and its RSS + 80% of available memory at the start)"
    )
    if dev_budget:
        result.notes.append(
            f"device memory budget {dev_budget / GIB:.1f} GiB (80% of the device limit)"
        )
    if not use_tf:
        why = (
            "not requested (--impls)"
            if "tf-ref" not in impls
            else "TensorFlow or ptycho_jax.crosscheck.tf_reference not importable here"
        )
        result.notes.append(f"tf-ref: no TF reference figures ({why})")
    else:
        result.notes.append(
            "tf-ref memory: TensorFlow's CPU allocator (oneDNN) keeps freed memory in its pool for the rest of the process, "
            "so its peak-RSS growth figures understate its footprint once the pool is warm, and the RSS in use that the "
            "memory cuts see includes the pool"
        )


def _compile_time(
    result: BenchResult, *, preset: str, compile_time: bool, progress: Callable[[str], None]
) -> None:
    if preset != "tiny" and compile_time:
        from .compile_time import measure_default_report

        t0 = time.perf_counter()
        progress(
            "compile time: the default report in new processes (no cache, empty cache, filled cache) ..."
        )
        result.compile["default_report"] = measure_default_report()
        rep = result.compile["default_report"]
        if rep.get("ok"):
            progress(
                f"compile time: {rep['compile_s']:.2f} s over {rep['programs']} programs; wall {rep['wall_cold_s']:.1f} s first, {rep['wall_warm_s']:.1f} s second ({time.perf_counter() - t0:.0f} s)"
            )
        else:
            progress(f"compile time: failed: {rep.get('error')}")
    else:
        result.notes.append(
            "compile time of the default report: not measured (tiny preset or --no-compile-time)"
        )


def _stage_impls(
    run: _Run, case: Case, stage: str, case_impls: list[str], inp: Inputs
) -> list[str]:
    """The implementations of `case_impls` timed on `stage` (the others skipped or cut)."""
    allowed = []
    for impl in case_impls:
        if stage in ("selection",) and impl not in (
            "jax",
            "jax-engine",
            "tf-ref",
            "port",
        ):
            continue
        if stage == "neighbours" and impl not in ("jax", "ckdtree"):
            continue
        if stage not in ("selection", "neighbours") and impl not in (
            "jax",
            "jax-resident",
            "tf-ref",
            "upstream-np",
            "port",
        ):
            continue
        if impl == "jax-resident" and stage not in ("h2d", "end_to_end"):
            continue
        if impl == "port":
            why = _port_reason(run.port, case, stage, run.device)
            if why:
                run.cut(case, stage, impl, why)
                continue
        if impl == "upstream-np" and stage != "patches":
            continue
        if impl == "tf-ref" and stage == "h2d":
            continue
        reason = _cut_reason(
            case,
            stage,
            impl,
            device=run.device,
            built=inp.built(),
            rss=run.mem.rss(),
            host_budget=run.host_budget,
            dev_budget=run.dev_budget,
        )
        if reason:
            run.cut(case, stage, impl, reason)
            continue
        allowed.append(impl)
    return allowed


def _run_stage(run: _Run, case: Case, stage: str, case_impls: list[str], inp: Inputs) -> None:
    result = run.result
    # XLA:CPU can keep a call's buffers resident until its executable is dropped; drop them
    # before reading the RSS the memory cuts start from (each stage recompiles anyway).
    clear_jax_caches()
    # The bench reuses freed memory like the CLI (`_host_memory`); between stages the pool
    # goes back to the system, so the memory cuts see the live arrays, not a warm heap.
    release_freed_host_memory()
    allowed = _stage_impls(run, case, stage, case_impls, inp)
    if "jax" not in allowed:
        return
    try:
        calls = stage_callables(stage, inp, allowed)
        figs, ratios, notes = measure_stage(
            case,
            stage,
            calls,
            repeats=run.repeats or case.repeats,
            budget_s=run.figure_budget_s,
            mem=run.mem,
            device=run.device,
            progress=run.progress,
        )
    except Exception as e:  # one failing stage must not lose the rest of the run
        logger.debug("bench: %s/%s failed", case.name, stage, exc_info=True)
        result.errors.append(
            {"case": case.name, "stage": stage, "error": f"{type(e).__name__}: {e}"}
        )
        run.progress(f"{case.name}: {stage}: failed: {type(e).__name__}: {e}")
        gc.collect()
        return
    result.figures.extend(f.to_json(run.copy_gbps) for f in figs)
    result.ratios.extend(ratios)
    result.notes.extend(notes)
    if stage == "patches" and "upstream-np" in allowed:
        result.checks.append(_check_patches(inp, min(2, case.upstream_subset)))


def _run_case(run: _Run, case: Case) -> bool:
    """Every stage of `case` (False: the case is cut whole, for memory)."""
    impls, mem = run.impls, run.mem
    case_impls = [i for i in case.impls if i in impls and (i != "tf-ref" or run.use_tf)]
    case_impls += [i for i in ("jax-resident", "port") if i in impls]
    if run.port is None and "port" in case_impls:
        case_impls.remove("port")
    for stage, reason in case.skip:
        run.cut(case, stage, "*", reason)
    if mem.rss() + raw_bytes(case) > run.host_budget:
        for stage in case.stages:
            run.cut(
                case,
                stage,
                "*",
                f"the input data need ~{raw_bytes(case) / GIB:.1f} GiB > host budget {run.host_budget / GIB:.1f} GiB",
            )
        return False
    t0 = time.perf_counter()
    inp = Inputs(case, run.device, port=run.port)
    inp.get("raw")
    run.result.cases.append(
        {
            "name": case.name,
            **case.dims(),
            "gridsize": case.gridsize,
            "source": inp.get("origin"),
            "family": case.family,
            "stages": list(case.stages),
        }
    )
    run.progress(
        f"{case.name}: inputs ready in {time.perf_counter() - t0:.1f} s (M={case.M}, B={case.B}, C={case.C}, N={case.N}, object {case.object_side}²; RSS {fmt_bytes(mem.rss())})"
    )
    for stage in case.stages:
        _run_stage(run, case, stage, case_impls, inp)
    if "upstream" in impls and case.name == run.upstream_case:
        _add_upstream(
            run.result, case, inp, repeats=run.repeats or case.repeats, progress=run.progress
        )
    del inp
    gc.collect()
    return True


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
    compile_time: bool = True,
    port: str | None = None,
) -> BenchResult:
    """Run every case of `plan` on `device`; cut (and record why) what does not fit memory or time."""
    t_start = time.perf_counter()
    mem = HostMemory()
    use_tf = _import_tf(impls, progress)
    host_budget, dev_budget = _memory_budgets(budget_gib, mem, device)

    copy_bytes = (1 * GIB) if device.platform == "gpu" else (256 * 2**20)
    if preset == "tiny":
        copy_bytes = 16 * 2**20
    with _device_scope(device):
        bw = measure_copy_bandwidth(device, nbytes=copy_bytes)
    progress(
        f"copy bandwidth {bw['gbps']:.1f} GB/s (read + write, {copy_bytes / 2**20:.0f} MiB; fresh output {bw['fresh']['gbps']:.1f}, in place {bw['in_place']['gbps']:.1f})"
    )
    result = BenchResult(
        preset=preset, command=command, machine=machine_description(device), versions=versions(with_tf=use_tf),
        git=git_description(), copy_bandwidth={"start": bw}, started=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),  # noqa: UP017 (Python 3.10)
    )  # fmt: skip
    _start_notes(result, impls=impls, use_tf=use_tf, host_budget=host_budget, dev_budget=dev_budget)
    _compile_time(result, preset=preset, compile_time=compile_time, progress=progress)
    names = [c.name for c in plan]
    upstream_case = next((n for n in ("large", "medium") if n in names), None)
    if "upstream" in impls and upstream_case is None:
        result.notes.append(
            "upstream: the real upstream runs on the large (full) or medium (quick) case only; none in this plan"
        )
    run = _Run(
        result=result, device=device, mem=mem, impls=impls, use_tf=use_tf, port=port, repeats=repeats,
        figure_budget_s=figure_budget_s, host_budget=host_budget, dev_budget=dev_budget,
        copy_gbps=bw["gbps"], upstream_case=upstream_case, progress=progress,
    )  # fmt: skip

    with warnings.catch_warnings(), _device_scope(device):
        from ptycho_jax import DuplicatePositionWarning, MirroredPatchWarning

        warnings.simplefilter("ignore", MirroredPatchWarning)
        warnings.simplefilter("ignore", DuplicatePositionWarning)
        for case in plan:
            elapsed = time.perf_counter() - t_start
            if time_budget_s is not None and elapsed > time_budget_s:
                for stage in case.stages:
                    run.cut(
                        case,
                        stage,
                        "*",
                        f"run time budget of {time_budget_s:.0f} s spent ({elapsed:.0f} s elapsed)",
                    )
                continue
            if not _run_case(run, case):
                continue
            if checkpoint is not None:
                result.targets = evaluate_targets(result)
                result.wall_s = time.perf_counter() - t_start
                checkpoint(result)
        clear_jax_caches()
        result.copy_bandwidth["end"] = measure_copy_bandwidth(device, nbytes=copy_bytes)
        result.copy_bandwidth["h2d"] = measure_h2d_bandwidth(device, nbytes=copy_bytes)
        result.notes.extend(_transfer_notes(result))
        result.notes.append(f"load average at the end: {read_proc('/proc/loadavg').split()[:3]}")
    result.targets = evaluate_targets(result)
    result.wall_s = time.perf_counter() - t_start
    return result


def _port_reason(port: str | None, case: Case, stage: str, device) -> str | None:
    """Why the `--port` backend is not timed on this stage here (None: it is)."""
    from .port import PORT_STAGES, not_computed_reason, where_it_runs

    if port is None:
        return "no --port given"
    if stage not in PORT_STAGES:
        return f"no backend method matches the stage {stage!r}"
    try:
        runs, words = where_it_runs(port, device)
        if not runs:
            return words
        return not_computed_reason(port, stage, case.params())
    except Exception as e:  # noqa: BLE001 - a port that cannot be resolved or inspected
        return f"the port cannot be used: {type(e).__name__}: {e}"


def _transfer_notes(result: BenchResult) -> list[str]:
    """The one transfer of the frames (`RawData.on_device`) against the same-run host -> device bandwidth."""
    h2d = result.copy_bandwidth.get("h2d")
    out = []
    if h2d:
        out.append(
            f"host -> device bandwidth (device_put of a {fmt_bytes(h2d['bytes'])} host array, copied): {h2d['gbps']:.1f} GB/s (median of 5)"
        )
    for f in result.figures:
        if f["stage"] == "h2d" and f["impl"] == "jax-resident" and h2d:
            moved = f["M"] * f["N"] ** 2 * 4
            gbps = moved / f["median_s"] / 1e9
            out.append(
                f"{f['case']}: RawData.on_device, the one transfer of {fmt_bytes(moved)} of frames: {fmt_s(f['median_s'])} = {gbps:.1f} GB/s, "
                f"{100 * gbps / h2d['gbps']:.0f}% of the measured host -> device bandwidth"
                + (
                    " (a CPU device aliases the aligned frames: no copy made)"
                    if "cpu" in str(result.machine.get("device", ""))
                    else ""
                )
            )
    return out


def _add_upstream(
    result: BenchResult, case: Case, inp: Inputs, *, repeats: int, progress: Callable[[str], None]
) -> None:
    """Time the real upstream on `case` in its own environment and set it beside the port's figures."""
    from .upstream import time_upstream, upstream_figures

    t0 = time.perf_counter()
    progress(f"{case.name}: real upstream (its own environment, a subprocess) ...")
    reply = time_upstream(inp, repeats=repeats, patch_groups=case.upstream_subset)
    if not reply.get("ok"):
        for stage in ("group_normalize", "container", "patches"):
            result.cuts.append(
                {
                    "case": case.name,
                    "stage": stage,
                    "impl": "upstream",
                    "reason": f"unavailable: {reply.get('error')}",
                }
            )
        progress(f"{case.name}: upstream unavailable: {reply.get('error')}")
        return
    figs, ratios = upstream_figures(case, reply, result.figures)
    result.figures.extend(figs)
    result.ratios.extend(ratios)
    chk = reply.get("patches_check")
    if chk:
        result.checks.append(
            {
                "case": case.name,
                "what": "real upstream get_image_patches vs jax Y",
                "patches": chk["groups"],
                "max_abs_diff": chk["max_abs_diff"],
                "max_abs": chk["max_abs"],
            }
        )
    result.notes.append(
        f"upstream: real PtychoPINN ({reply.get('versions')}), import {reply.get('import_s', 0):.1f} s, whole run {time.perf_counter() - t0:.0f} s; ratios upstream/jax are of medians (separate processes); upstream's process as shipped (glibc malloc defaults)"
    )
    progress(
        f"{case.name}: upstream: " + ", ".join(f"{f['stage']} {f['median_s']:.3g} s" for f in figs)
    )
    setup = last_setup()
    if setup is None or not setup.applied:
        return
    # The port's process reuses freed memory (`_host_memory`); so can upstream's. Timed again with
    # the same settings, so that no ratio owes its size to the allocator alone.
    progress(f"{case.name}: real upstream again, with the port's malloc settings ...")
    same = time_upstream(
        inp,
        repeats=repeats,
        patch_groups=case.upstream_subset,
        extra_env={"GLIBC_TUNABLES": GLIBC_TUNABLES},
    )
    if not same.get("ok"):
        result.notes.append(
            f"upstream with the port's malloc settings: unavailable: {same.get('error')}"
        )
        return
    same_figs, same_ratios = upstream_figures(case, same, result.figures)
    result.ratios.extend({**r, "numerator": SAME_MALLOC} for r in same_ratios)
    result.notes.append(
        f"{SAME_MALLOC}: real upstream run with GLIBC_TUNABLES={GLIBC_TUNABLES} (the port's settings): "
        + ", ".join(f"{f['stage']} {fmt_s(f['median_s'])}" for f in same_figs)
    )


def _device_scope(device):
    """`jax.default_device(device)` (arrays created from NumPy land on `device`)."""
    import jax

    scope = getattr(jax, "default_device", None)
    if scope is None:  # pragma: no cover - older/newer JAX without it: the default backend is used
        import contextlib

        logger.warning("bench: jax.default_device unavailable; arrays go to the default backend")
        return contextlib.nullcontext()
    return scope(device)


def _cut_reason(
    case: Case,
    stage: str,
    impl: str,
    *,
    device,
    built: Sequence[str],
    rss: int,
    host_budget: int,
    dev_budget: int | None,
) -> str | None:
    """Why `impl` of `stage` cannot run on `case` here (memory estimate, time), or None."""
    need = estimate_stage_bytes(case, stage, impl, built=built)
    on_device = impl in ("jax", "jax-engine") and device.platform != "cpu"
    if on_device:
        st = device_memory(device) or {}
        in_use = st.get("bytes_in_use", 0)
        if dev_budget is not None and in_use + need > dev_budget:
            return f"needs ~{(in_use + need) / GIB:.1f} GiB of device memory (estimate) > budget {dev_budget / GIB:.1f} GiB"
    elif rss + need > host_budget:
        return f"needs ~{(rss + need) / GIB:.1f} GiB of host memory (estimate: {rss / GIB:.1f} in use + {need / GIB:.1f}) > budget {host_budget / GIB:.1f} GiB"
    return None
