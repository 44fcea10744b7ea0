"""Targets (reported, not asserted), Markdown, the log-log PNG and the written files of a run."""

import json
import math
import os
import pathlib
import statistics
from collections.abc import Sequence
from typing import Any

import numpy as np

from .plan import IMPLS, SAME_MALLOC, STAGES
from .result import BenchResult, json_default
from .units import fmt_bytes, fmt_s


def _dataset_note(rep: dict) -> str:
    """`; the dataset: <how>` from the second run's provenance (results before the dataset cache: "")."""
    how = rep.get("simulation_warm")
    return f"; the dataset: {how}" if how else ""


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


# Targets read from one same-run pair ratio: (stage, numerator, label, goal, goal text, detail).
PAIR_CLAIMS = (
    ("end_to_end", "tf-ref", "end-to-end JAX vs TF reference", 10.0, ">= 10x",
     "TF/JAX pair ratios median {median:.2f} (min {min:.2f}, max {max:.2f}, n={n})"),
    ("patches", "upstream-np", "object patches vs upstream whole-canvas", 1000.0, ">= 1000x",
     "upstream/JAX median {median:.0f} (min {min:.0f}, max {max:.0f}); upstream timed on a subset, "
     "scaled per patch"),
    ("scaler", "tf-ref", "scaler vs TF reference", 1.0, ">= 1x (no slower)",
     "TF/JAX pair ratios median {median:.2f} (min {min:.2f}, max {max:.2f})"),
)  # fmt: skip


def _add_pair_claim(add, result, case, stage, numerator, label, goal, goal_text, detail) -> None:
    r = _ratio(result, case, stage, numerator)
    if r:
        add(f"{label} ({case})", r["median"], goal_text, r["median"] >= goal, detail.format(**r))


def evaluate_targets(result: BenchResult) -> list[dict[str, Any]]:
    """The issue's targets, evaluated on the largest case present (large, else medium, else the first)."""
    names = [c["name"] for c in result.cases]
    big = next((n for n in ("large", "medium", "tiny", "gs2_ideal") if n in names), None)
    out: list[dict[str, Any]] = []
    gpu = result.machine.get("device_platform") == "gpu"

    def add(name, value, goal, ok, detail):
        out.append({"target": name, "value": value, "goal": goal, "met": ok, "detail": detail})

    if big is not None:
        _case_targets(result, big, add)
    _report_targets(result, add)
    _search_and_gpu_targets(result, add, gpu=gpu)
    return out


def _case_targets(result: BenchResult, big: str, add) -> None:
    """The targets measured on the largest case: ratios to TF and upstream, floors, memory."""
    for claim in PAIR_CLAIMS[:2]:
        _add_pair_claim(add, result, big, *claim)
    for stage, label, goal in (
        ("group_normalize", "group + normalize", 5.0),
        ("container", "container", 5.0),
        ("patches", "object patches", 1000.0),
    ):
        for numerator, how in (
            ("upstream", ""),
            (SAME_MALLOC, " with the port's malloc settings"),
        ):
            r = _ratio(result, big, stage, numerator)
            if r:
                # results written before the ratios carried it: the upstream figure's median
                up_s = (
                    r.get("numerator_median_s") or _fig(result, big, stage, numerator)["median_s"]
                )
                add(
                    f"{label} vs real upstream{how} ({big})",
                    r["median"],
                    f">= {goal:g}x",
                    r["median"] >= goal,
                    f"upstream/JAX medians {r['median']:.3g} (upstream {fmt_s(up_s)}, JAX {fmt_s(_fig(result, big, stage, 'jax')['median_s'])})",
                )
    _add_pair_claim(add, result, big, *PAIR_CLAIMS[2])
    floors = [
        f
        for f in result.figures
        if f["case"] == big and f["impl"] == "jax" and f.get("floor_multiple")
    ]
    if floors:
        over = [f for f in floors if f["floor_multiple"] > 2]
        worst = max(floors, key=lambda f: f["floor_multiple"])
        detail = ", ".join(f"{f['stage']} {f['floor_multiple']:.1f}x" for f in floors)
        add(
            f"every stage within 2x of its copy floor ({big})",
            worst["floor_multiple"],
            "<= 2x each",
            not over,
            f"JAX median / same-run copy of the stage's bytes: {detail}",
        )
    m = _fig(result, big, "end_to_end", "jax")
    if m and m["memory_ratio"] is not None:
        add(
            f"peak host memory / arrays produced ({big}, JAX end to end)",
            m["memory_ratio"],
            "<= 2x",
            m["memory_ratio"] <= 2,
            f"peak RSS growth {fmt_bytes(m['peak_rss_growth_bytes'])} for {fmt_bytes(m['produced_bytes'])} of arrays returned (ratio {m['memory_ratio']:.2f})",
        )


def _report_targets(result: BenchResult, add) -> None:
    """The default report's compile time and its second run against the first."""
    comp = getattr(result, "compile", None) or {}
    rep = comp.get("default_report")
    if rep and rep.get("ok"):
        add(
            "default report: compile time (new process, no cache)",
            rep["compile_s"],
            "<= 3 s",
            rep["compile_s"] <= 3.0,
            f"{rep['compile_s']:.2f} s compiling {rep['programs']} programs of {rep['wall_uncached_s']:.1f} s wall; largest: "
            + ", ".join(f"{n} {t:.2f} s" for n, t in rep["top"][:4]),
        )
        ratio = rep["wall_warm_s"] / rep["wall_cold_s"]
        add(
            "default report: second run / first (caches)",
            ratio,
            "<= 0.5",
            ratio <= 0.5,
            f"first {rep['wall_cold_s']:.1f} s (empty caches), second {rep['wall_warm_s']:.1f} s (cache hit; "
            f"{rep['compile_warm_s']:.2f} s compiling{_dataset_note(rep)})",
        )


def _search_and_gpu_targets(result: BenchResult, add, *, gpu: bool) -> None:
    """The neighbour search against cKDTree, and on a GPU gather + normalize against a copy."""
    pos = [c["name"] for c in result.cases if c["family"] == "positions"]
    at = "positions-1e5" if "positions-1e5" in pos else (pos[-1] if pos else None)
    if at:
        r = _ratio(result, at, "neighbours", "ckdtree")
        if r:
            add(
                f"neighbour search JAX vs cKDTree ({at}, {'GPU' if gpu else 'CPU'})",
                r["median"],
                ">= 1x (no slower)" if not gpu else "> 1x (faster)",
                r["median"] >= 1 if not gpu else r["median"] > 1,
                f"cKDTree/JAX median {r['median']:.3g} (JAX {fmt_s(_fig(result, at, 'neighbours', 'jax')['median_s'])}, cKDTree {fmt_s(_fig(result, at, 'neighbours', 'ckdtree')['median_s'])})",
            )
    if gpu:
        best = None
        for f in result.figures:
            eligible = (
                f["stage"] == "gather_normalize"
                and f["impl"] == "jax"
                and f["B"] >= 16_384
                and f["fraction_of_copy_bandwidth"]
            )
            if eligible and (best is None or f["B"] > best["B"]):
                best = f
        if best:
            add(
                f"gather + normalize vs copy bandwidth ({best['case']}, B={best['B']})",
                best["fraction_of_copy_bandwidth"],
                ">= 0.6",
                best["fraction_of_copy_bandwidth"] >= 0.6,
                f"{best['gbps']:.0f} GB/s of {result.copy_bandwidth['start']['gbps']:.0f} GB/s",
            )


def to_markdown(result: BenchResult) -> str:
    """The Markdown report: header, targets, one row per (case, stage), memory, cuts."""
    lines = _header_md(result)
    for part in (_targets_md, _compile_md, _figures_md, _memory_md, _notes_md):
        part(result, lines)
    return "\n".join(lines)


def _header_md(result: BenchResult) -> list[str]:
    """Machine, versions, git, command, copy bandwidth and how to read the tables."""
    m, v, g = result.machine, result.versions, result.git
    bw = result.copy_bandwidth["start"]
    return [
        f"# ptycho-jax benchmarks: {m['device_platform']} ({result.preset})",
        "",
        f"- Machine: {m['cpu_model']}, {m['cpus_usable']} usable of {m['cpu_count']} CPUs, "
        f"{fmt_bytes(m['memory_bytes'])} RAM; device `{m['device']}` ({m['device_kind']}"
        + (f", {fmt_bytes(m['device_memory_bytes'])}" if m.get("device_memory_bytes") else "") + ")",
        "- Versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if val) + f"; Python {m['python']}",
        *([f"- Host malloc: {m['host_malloc']}"] if m.get("host_malloc") else []),
        f"- Git: `{g['sha'][:12]}`" + (" (uncommitted changes)" if g.get("dirty") else ""),
        f"- Command: `{result.command}`; started {result.started}, {result.wall_s:.0f} s",
        f"- Copy bandwidth (jitted `x + 1` over {fmt_bytes(bw['bytes'] // 2)}, read + write): {bw['gbps']:.1f} GB/s at the start "
        f"(in place {bw['in_place']['gbps']:.1f}, into a fresh buffer {bw['fresh']['gbps']:.1f})"
        + (f", {result.copy_bandwidth['end']['gbps']:.1f} GB/s at the end" if "end" in result.copy_bandwidth else "")
        + "; the `GB/s (of copy)` column divides the byte model of specs/benchmarks.md by the median time",
        "- Floor: every round of a stage also times a plain copy (jitted `x + 1`) moving the stage's byte model; `jax / copy floor` is the JAX median over that copy's median (1× = memory bound).",
        "- Times: median [min – max] over warm calls; ratios: other / jax, taken pair by pair in the same round.",
        "",
    ]  # fmt: skip


def _targets_md(result: BenchResult, lines: list[str]) -> None:
    if result.targets:
        lines += [
            "## Targets",
            "",
            "| target | measured | goal | met |",
            "| --- | --- | --- | --- |",
        ]
        for t in result.targets:
            lines.append(
                f"| {t['target']} | {t['detail']} | {t['goal']} | {'yes' if t['met'] else '**no**'} |"
            )
        lines.append("")


def _compile_md(result: BenchResult, lines: list[str]) -> None:
    rep = (getattr(result, "compile", None) or {}).get("default_report")
    if rep:
        lines += ["## Compile time (apart from run time)", ""]
        if rep.get("ok"):
            lines += (
                [
                    f"The default report (`ptycho-jax`, gs2_ideal) in a new process: {rep['compile_s']:.2f} s of XLA compilation over "
                    f"{rep['programs']} programs (plus {rep['trace_s']:.2f} s tracing, {rep['lower_s']:.2f} s lowering) in {rep['wall_uncached_s']:.1f} s wall "
                    f"without the caches; with them, {rep['wall_cold_s']:.1f} s the first run (empty caches) and {rep['wall_warm_s']:.1f} s the second "
                    f"({rep['compile_warm_s']:.2f} s still compiled, {rep['cache_retrieval_warm_s']:.2f} s loading programs from the cache{_dataset_note(rep)}).",
                    "",
                    "| program | compile |",
                    "| --- | --- |",
                ]
                + [f"| `{n}` | {fmt_s(t)} |" for n, t in rep["top"]]
                + [""]
            )
        else:
            lines += [f"Not measured: {rep.get('error')}", ""]


def _figures_md(result: BenchResult, lines: list[str]) -> None:
    names = [c["name"] for c in result.cases]
    main = next((n for n in ("large", "medium") if n in names), None)
    if main is not None:
        lines += (
            [f"## Summary: the {main} case", ""]
            + _figures_table(result, [c for c in result.cases if c["name"] == main])
            + [""]
        )
    lines += ["## Figures", ""] + _figures_table(result, result.cases) + [""]


def _memory_md(result: BenchResult, lines: list[str]) -> None:
    big = 64 * 2**20 if any((f["produced_bytes"] or 0) >= 64 * 2**20 for f in result.figures) else 0
    mem_rows = [
        f
        for f in result.figures
        if (f["produced_bytes"] or 0) > max(big, 0)
        and f["stage"] in ("end_to_end", "container", "patches", "gather_normalize")
    ]
    if mem_rows:
        lines += ["## Memory", "", "Peak host RSS growth of one call made after the freed heap went back to the system (VmHWM, reset before it) against the bytes of the arrays it returns"
                  + (" (calls returning 64 MiB or more)." if big else "."), "",
                  "| case | stage | impl | peak RSS growth | arrays returned | ratio | device peak |", "| --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
        for f in mem_rows:
            ratio = f"{f['memory_ratio']:.2f}" if f["memory_ratio"] is not None else "—"
            lines.append(
                f"| {f['case']} | {f['stage']} | {f['impl']} | {fmt_bytes(f['peak_rss_growth_bytes'])} | {fmt_bytes(f['produced_bytes'])} | {ratio} | {fmt_bytes(f['device_peak_bytes'])} |"
            )
        lines.append("")


def _notes_md(result: BenchResult, lines: list[str]) -> None:
    """Notes, errors and what was cut."""
    notes = [
        f"{f['case']}/{f['stage']}/{f['impl']}: {f['note']}"
        for f in result.figures
        if f["note"] and f["case"] in ("large", "medium", "tiny")
    ]
    if result.checks:
        notes += [
            f"check {c['case']}: {c['what']}: max |diff| {c['max_abs_diff']:.3g} (max |Y| {c['max_abs']:.3g}) on {c['patches']} patches"
            for c in result.checks
        ]
    notes += result.notes
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    if result.errors:
        lines += (
            ["## Errors", ""]
            + [f"- {e['case']} / {e['stage']}: {e['error']}" for e in result.errors]
            + [""]
        )
    if result.cuts:
        lines += (
            ["## Cut", ""]
            + [f"- {c['case']} / {c['stage']} / {c['impl']}: {c['reason']}" for c in result.cuts]
            + [""]
        )


def _figures_table(result: BenchResult, cases: Sequence[dict]) -> list[str]:
    """Markdown rows: one per (case, stage), a column per implementation, ratios to jax, jax's bandwidth/compile/memory."""
    keep = {c["name"] for c in cases}
    figures = [f for f in result.figures if f["case"] in keep]
    impls_present = [i for i in IMPLS if any(f["impl"] == i for f in figures)]
    others = [i for i in impls_present if i != "jax"]
    head = [
        "case",
        "stage",
        *impls_present,
        *[f"{o} / jax" for o in others],
        "jax GB/s (of copy)",
        "jax / copy floor",
        "jax compile",
        "jax peak RSS +",
        "minor faults / warm call",
    ]
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join("---" for _ in head) + " |"]
    for case in cases:
        for stage in STAGES:
            figs = {
                f["impl"]: f for f in figures if f["case"] == case["name"] and f["stage"] == stage
            }
            if not figs:
                continue
            row = [
                f"{case['name']} (M={case['M']}, B={case['B']}, C={case['C']}, N={case['N']})",
                stage,
            ]
            for i in impls_present:
                f = figs.get(i)
                row.append(
                    f"{fmt_s(f['median_s'])} [{fmt_s(f['min_s'])} – {fmt_s(f['max_s'])}]"
                    if f
                    else ""
                )
            for o in others:
                r = _ratio(result, case["name"], stage, o)
                row.append(f"{r['median']:.3g}× [{r['min']:.3g} – {r['max']:.3g}]" if r else "")
            j = figs.get("jax")
            if j and j["gbps"]:
                frac = j["fraction_of_copy_bandwidth"]
                over = (
                    " — no copy made" if (frac is not None and frac > 1 and stage == "h2d") else ""
                )
                row.append(
                    f"{j['gbps']:.2f} ({100 * frac:.0f}%{over})"
                    if frac is not None
                    else f"{j['gbps']:.2f}"
                )
            else:
                row.append("")
            fm = j.get("floor_multiple") if j else None
            row.append(f"{fm:.2f}× (floor {fmt_s(j['floor_s'])})" if fm else "")
            row.append(
                ("~0" if j["compile_s"] == 0 else fmt_s(j["compile_s"]))
                if j and j["compile_s"] is not None
                else ""
            )
            row.append(fmt_bytes(j["peak_rss_growth_bytes"]) if j else "")
            row.append(_faults_cell(figs, impls_present))
            lines.append("| " + " | ".join(row) + " |")
    return lines


def _faults_cell(figs: dict[str, dict], impls: Sequence[str]) -> str:
    """`impl count` for each implementation with a measured median of minor faults per warm call."""
    cells = [
        f"{i} {figs[i]['minor_faults_per_call']:,}"
        for i in impls
        if i in figs and figs[i].get("minor_faults_per_call") is not None
    ]
    return ", ".join(cells)


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
    styles = {
        "jax": ("C0", "o"),
        "jax-engine": ("C4", "v"),
        "tf-ref": ("C1", "s"),
        "upstream-np": ("C3", "^"),
        "ckdtree": ("C2", "D"),
        "upstream": ("C5", "P"),
        "jax-resident": ("C6", "*"),
        "port": ("C7", "X"),
    }
    for k, (stage, xkey, kind) in enumerate(panels):
        ax = fig.add_subplot(rows, cols, k + 1)
        for impl in IMPLS:
            pts = []
            for f in result.figures:
                c = fam.get(f["case"])
                if f["stage"] != stage or f["impl"] != impl or c is None:
                    continue
                if kind == "groups" and (
                    c["C"] != 4 or c["N"] != main_N or c["family"] not in families
                ):
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
            ax.errorbar(
                x, y, yerr=[lo, hi], color=color, marker=marker, ms=4, lw=1.2, capsize=2, label=impl
            )
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
    fig.suptitle(
        f"python -m benchmarks ({result.preset}): {m['device_kind']} / {m['cpu_model']} — median, bars min–max",
        fontsize=9,
    )
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


def write_outputs(
    result: BenchResult, out_dir: str | os.PathLike, *, stem: str, plot: bool = True
) -> dict[str, pathlib.Path]:
    """Write `{stem}.json`, `{stem}.md` and (with matplotlib) `{stem}.png` into `out_dir`, atomically."""
    from ptycho_jax.internal import write_files_atomically

    out = pathlib.Path(out_dir)
    files = {"json": out / f"{stem}.json", "markdown": out / f"{stem}.md"}
    payload = [
        (
            files["json"],
            (json.dumps(result.to_json(), indent=1, default=json_default) + "\n").encode(),
        ),
        (files["markdown"], to_markdown(result).encode()),
    ]
    if plot:
        png = render_plot(result)
        if png is not None:
            files["plot"] = out / f"{stem}.png"
            payload.append((files["plot"], png))
    write_files_atomically(payload)
    return files
