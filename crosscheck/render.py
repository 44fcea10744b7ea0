"""Render a cross-check result: the verdict line and table, crosscheck.md, the difference-map PNG,
and the atomic write of every output file (specs/crosscheck.md §7)."""

import dataclasses
import io
import logging
import os
import pathlib
import re
from typing import Any

import numpy as np

from ptycho_jax.internal import write_files_atomically

from .compare import (
    COMPARED_STATUSES,
    EXIT_CODES,
    ArrayDelta,
    CrosscheckResult,
    StageResult,
    Verdict,
)

logger = logging.getLogger(__name__)


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, complex):
        return f"{v.real:.9g}{v.imag:+.9g}j"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


def _cell(text: Any) -> str:
    """Escape a Markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _verdict(s: StageResult) -> str:
    return {Verdict.NOT_REQUIRED: "not required"}.get(s.verdict, str(s.verdict))


def _worst(s: StageResult) -> ArrayDelta | None:
    """The worst *compared* array: failing before passing, then by max ulp (never a missing one)."""
    pool = list(s.compared)
    if s.n_required_compared == 0:
        pool = [a for a in pool if a.status != "invariants"]  # one side's groups alone
    if not pool:
        return None
    return max(
        pool,
        key=lambda a: (
            not a.passed,
            a.status == "shape_mismatch",
            a.max_ulp if a.max_ulp is not None else (float("inf") if not a.passed else -1.0),
        ),
    )


def _counts_cell(s: StageResult) -> str:
    if s.verdict == Verdict.NOT_REQUIRED:
        return "—"
    c = s.counts()
    text = f"{c['compared']}/{c['required']}"
    if c["excepted"]:
        text += f" ({c['excepted']} excepted)"
    if c["extra"]:
        text += f" +{c['extra']} extra"
    return text


def verdict_line(result: CrosscheckResult) -> str:
    """`Verdict: X (exit n)` with the counts behind it."""
    c = result.counts()
    parts = [
        f"{c['compared']} of {c['required']} required arrays compared",
        f"{c['failed']} out of tolerance",
    ]
    if c["uncompared"]:
        parts.append(f"{c['uncompared']} not compared")
    if c["excepted"]:
        parts.append(f"{c['excepted']} documented exception{'' if c['excepted'] == 1 else 's'}")
    parts.append(
        f"{c['stages_pass']} of {c['stages_required']} required stages PASS"
        + (f", {c['stages_excepted']} excepted" if c["stages_excepted"] else "")
    )
    return f"{result.verdict} (exit {EXIT_CODES[result.verdict]}): " + ", ".join(parts)


def _diagnosis_text(a) -> str:
    """An array's diagnosis, led by the root cause it follows from when it has one."""
    own = a.diagnosis or a.status
    if a.follows_from:
        return f"follows from {a.follows_from} (its own diagnosis: {own})"
    return own


def verdict_table(result: CrosscheckResult) -> str:
    """The per-stage verdict table (Markdown) that opens `crosscheck.md`."""
    lines = [
        "| stage | verdict | compared/required | worst compared array | max ulp | diagnosis / why |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for s in result.stages:
        worst = _worst(s)
        fails = s.failures
        if fails:
            diag = "; ".join(f"`{a.name}`: {_diagnosis_text(a)}" for a in fails)
        elif s.verdict == Verdict.FAIL:
            diag = "; ".join(s.errors) or "failed"
        elif s.uncompared:
            diag = "not compared: " + "; ".join(f"`{n}` ({w})" for n, w in s.uncompared)
        elif s.verdict == Verdict.NOT_REQUIRED:
            diag = s.skipped or ""
        else:
            diag = ""
        if s.excepted:
            whos = sorted({w for _, w in s.excepted})
            diag = (diag + "; " if diag else "") + (
                f"excepted: {', '.join(f'`{n}`' for n, _ in s.excepted)} ({'; '.join(whos)})"
            )
        lines.append(
            f"| {s.name} | {_verdict(s)} | {_counts_cell(s)} | "
            f"{worst.name if worst else '—'} | "
            f"{_fmt(worst.max_ulp if worst else None)} | {_cell(diag)} |"
        )
    return "\n".join(lines)


def format_failure(result: CrosscheckResult) -> str:
    """Readable verdict text: the verdict line, the table, then one line per failing array and
    per required array not compared."""
    lines = [
        f"crosscheck {result.port} vs {result.reference}: {result.verdict}",
        verdict_line(result),
    ]
    if result.root_cause:
        lines.append(_one_line(result.root_cause.get("summary", ""), 600))
    lines += ["", verdict_table(result), ""]
    for s in result.stages:
        for a in s.failures:
            lines.append(
                f"- {s.name}/{a.name}: {_one_line(_diagnosis_text(a))} "
                f"(max abs {_fmt(a.max_abs)}, max ulp {_fmt(a.max_ulp)}, "
                f"{a.n_beyond} of {a.n_total} beyond {a.tolerance}, worst at {a.worst_index}: "
                f"port {_fmt(a.worst_port, 9)} vs reference {_fmt(a.worst_ref, 9)})"
            )
        if s.verdict == Verdict.FAIL and not s.failures:
            lines += [f"- {s.name}: {e}" for e in s.errors]
        # one line per reason: a tree without one method leaves a whole stage uncompared
        by_reason: dict[str, list[str]] = {}
        for n, w in s.uncompared:
            by_reason.setdefault(_one_line(w), []).append(n)
        for w, names in by_reason.items():
            more = f" (and {len(names) - 1} more: {', '.join(names[1:])})" if names[1:] else ""
            lines.append(f"- {s.name}/{names[0]}: NOT COMPARED{more} — {w}")
        if s.verdict == Verdict.INCOMPLETE:
            lines += [f"- {s.name}: note: {_one_line(n)}" for n in s.notes if "did you mean" in n]
    for n in result.notes:
        lines.append(f"- note: {_one_line(n)}")
    return "\n".join(lines).rstrip("\n")


def _one_line(text: str, limit: int = 300) -> str:
    """First line of `text`, cut at `limit` (stdout never carries a traceback or upstream's output)."""
    first = (str(text).strip().splitlines() or [""])[0]
    return first if len(first) <= limit else first[: limit - 1] + "…"


def _note_md(note: str) -> list[str]:
    """A note as Markdown: one bullet, or a bullet and a fenced block for multi-line text."""
    head, _, rest = str(note).strip().partition("\n")
    if not rest:
        return [f"- note: {head}"]
    return [f"- note: {head}", "", "  ```text", *("  " + ln for ln in rest.splitlines()), "  ```"]


def _demote(md: str, levels: int = 2) -> str:
    out = []
    for line in md.splitlines():
        out.append("#" * levels + line if line.startswith("#") else line)
    return "\n".join(out)


def _root_cause_md(result: CrosscheckResult) -> list[str]:
    rc = result.root_cause
    if not rc:
        return []
    lines = ["## Root cause", "", f"**{rc.get('summary')}**", ""]
    for c in rc.get("causes", []):
        lines.append(f"- cause `{c['array']}`: {c['summary']}")
        if c.get("variant_match"):
            lines.append(f"  - {c['variant_match']}")
        for x in c.get("same_in", []):
            lines.append(f"  - `{x}` fails the same way (the same layer in another scaler case)")
        for e in c.get("explains", []):
            lines.append(f"  - `{e}` follows from it")
    return lines + [""]


def _provenance_md(result: CrosscheckResult) -> list[str]:
    if not result.provenance:
        return []
    lines = [
        "## Provenance",
        "",
        "| side | backend | tree / source | commit | dirty | interpreter | versions |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for side in ("port", "reference"):
        p = result.provenance.get(side) or {}
        versions = ", ".join(
            f"{k} {v}" for k, v in (p.get("versions") or {}).items() if k != "executable"
        )
        lines.append(
            f"| {side} | {_cell(p.get('spec') or p.get('backend'))} | "
            f"{_cell(p.get('tree') or p.get('source') or p.get('dir') or '—')} | "
            f"{_cell(p.get('commit') or '—')} | {_cell(p.get('dirty'))} | "
            f"{_cell(p.get('interpreter') or '—')} | {_cell(versions or '—')} |"
        )
    for side in ("port", "reference"):
        for stage, why in (
            (result.provenance.get(side) or {}).get("unsupported_stages") or {}
        ).items():
            lines.append(f"- {side}: the tree cannot answer `{stage}`: {why}")
    if result.provenance.get("input"):  # what the CLI cross-checked (its --input or scenario)
        lines.append(f"- input: {result.provenance['input']}")
    lines += [f"- note: {_one_line(n, 2000)}" for n in result.provenance.get("notes") or ()]
    return lines + [""]


def render_markdown(result: CrosscheckResult) -> str:
    """`crosscheck.md`: verdict table, per-array deltas, diagnoses, each side's intensity report."""
    p = result.params
    lines = [
        f"# Cross-check: `{result.port}` (port) vs `{result.reference}` (reference)",
        "",
        (
            f"**Verdict: {verdict_line(result)}** (variant `{p.get('variant')}`, N={p.get('N')}, "
            f"gridsize={p.get('gridsize')}, K={p.get('K')}, n_groups={p.get('n_groups')}, "
            f"seed={p.get('seed')}; required stages: {', '.join(result.required_stages)})."
        ),
        "",
        verdict_table(result),
        "",
    ]
    lines += _root_cause_md(result) + _provenance_md(result)
    lines += [f"- run note: {_one_line(n, 2000)}" for n in result.notes]
    lines += ["", "## Per-array deltas", ""]
    for s in result.stages:
        lines += _stage_deltas_md(s)
    lines += _diagnoses_md(result)
    lines += _intensity_reports_md(result)
    lines += _parameters_md(result)
    return "\n".join(lines)


_DELTA_TABLE_HEAD = [
    (
        "| array | verdict | shape | dtype port / ref | tolerance | max abs | max rel "
        "| max ulp | p99 ulp | beyond | worst index | port | reference | NaN/Inf port "
        "| NaN/Inf ref |"
    ),
    "| --- " * 15 + "|",
]
"""Header of a stage's per-array table; one `_delta_row_md` row per array follows it."""


def _stage_deltas_md(s: StageResult) -> list[str]:
    """One stage's section: why it was skipped, what was not compared or excepted, the per-array
    table and the stage's notes."""
    lines = [f"### {s.name} — {_verdict(s)}", ""]
    if s.skipped:
        lines += [f"Skipped: {s.skipped}", ""]
    for n, w in s.uncompared:
        lines.append(f"- NOT COMPARED `{n}`: {w}")
    for n, w in s.excepted:
        lines.append(f"- excepted `{n}`: {w}")
    if s.uncompared or s.excepted:
        lines.append("")
    if s.arrays:
        lines += _DELTA_TABLE_HEAD
        lines += [_delta_row_md(a) for a in s.arrays]
        lines.append("")
    for n in s.notes:
        lines += _note_md(n)
    if s.notes:
        lines.append("")
    return lines


def _delta_row_md(a: ArrayDelta) -> str:
    """One array's row of the per-array table (a missing array shows its status, not FAIL)."""
    verdict = "PASS" if a.passed else ("FAIL" if a.status in COMPARED_STATUSES else "—")
    if a.status not in ("compared",):
        verdict += f" ({a.status})"
    shape = a.shape_ref if a.shape_ref is not None else a.shape_port
    return (
        f"| `{a.name}` | {verdict} | {list(shape) if shape is not None else '—'} | "
        f"{a.dtype_port or '—'} / {a.dtype_ref or '—'} | {_cell(a.tolerance)} | {_fmt(a.max_abs)} | "
        f"{_fmt(a.max_rel)} | {_fmt(a.max_ulp)} | {_fmt(a.p99_ulp)} | {a.n_beyond}/{a.n_total} | "
        f"{list(a.worst_index) if a.worst_index is not None else '—'} | {_fmt(a.worst_port, 9)} | "
        f"{_fmt(a.worst_ref, 9)} | {a.nan_port}/{a.inf_port} | {a.nan_ref}/{a.inf_ref} |"
    )


def _diagnoses_md(result: CrosscheckResult) -> list[str]:
    """The diagnosis of every failing array (or that none failed), then the difference-map pointer."""
    lines = ["## Diagnoses", ""]
    diags = [(s.name, a) for s in result.stages for a in s.failures]
    if diags:
        lines += [
            f"- `{st}/{a.name}` — **{'follows' if a.follows_from else (a.diagnosis_class or a.status)}**: "
            f"{_diagnosis_text(a)}"
            for st, a in diags
        ]
    else:
        lines.append("No array out of tolerance.")
    lines.append("")
    if result.difference_maps:
        lines += ["Difference maps of the worst arrays: `crosscheck.png`.", ""]
    return lines


def _intensity_reports_md(result: CrosscheckResult) -> list[str]:
    """Each side's Intensity Statistics report, demoted under this document's headings."""
    lines = []
    for side, md in result.reports.items():
        lines += [f"## Intensity Statistics — {side}", "", _demote(md).rstrip("\n"), ""]
    if not result.reports:
        lines += [
            "## Intensity Statistics",
            "",
            "Not available (a side lacks the grouped/normalize stages).",
            "",
        ]
    return lines


def _parameters_md(result: CrosscheckResult) -> list[str]:
    """The run's parameters and environment, verbatim in a code block (for reproducing it)."""
    lines = ["## Parameters and environment", "", "```"]
    lines += [f"{k}: {v}" for k, v in result.params.items()]
    lines += [f"{k}: {v}" for k, v in result.environment.items()]
    lines += ["```", ""]
    return lines


@dataclasses.dataclass(frozen=True)
class StageWorst:
    """One stage's row of the cross-check figure: its worst compared array against its rule."""

    stage: str
    verdict: str  # as the verdict table writes it ("PASS", "FAIL", "not required", ...)
    n_compared: int  # arrays whose two sides were set against each other
    array: str  # the worst compared array (the verdict table's choice: failing first, most ulp)
    # its max ULP distance; an integer array's max |difference| (one step is one unit); None when
    # no distance applies (groups compared by invariants, a shape mismatch)
    ulp: float | None
    max_abs: float | None
    max_rel: float | None
    tolerance: str  # the array's rule as the tables write it: `exact`, `≤1 ulp`, `atol 1e-06`
    tolerance_ulp: (
        float | None
    )  # the rule's bound in ULP: 0 exact, k `≤k ulp`; None: atol/rtol only


_ULP_RULE = re.compile(r"^≤([0-9.eE+-]+) ulp")  # the ULP part `Tolerance.describe` writes first


def tolerance_ulp(rule: str) -> float | None:
    """The ULP bound of a rule in `Tolerance.describe`'s words: 0 for `exact`, k for `≤k ulp…`,
    None for a rule with absolute or relative bounds only (`atol 1e-06·max|ref|`)."""
    if rule == "exact":
        return 0.0
    m = _ULP_RULE.match(rule)
    return float(m.group(1)) if m else None


def stage_worst_ulp(result: CrosscheckResult) -> list[StageWorst]:
    """One `StageWorst` per stage that compared at least one array, in the run's stage order."""
    rows = []
    for s in result.stages:
        worst = _worst(s)
        if worst is None:
            continue
        ulp = worst.max_ulp
        if ulp is None and worst.status == "compared" and worst.max_abs is not None:
            ulp = float(worst.max_abs)  # an integer array: exact comparison, steps of one
        rows.append(
            StageWorst(
                stage=s.name,
                verdict=_verdict(s),
                n_compared=len(s.compared),
                array=worst.name,
                ulp=ulp,
                max_abs=worst.max_abs,
                max_rel=worst.max_rel,
                tolerance=worst.tolerance,
                tolerance_ulp=tolerance_ulp(worst.tolerance),
            )
        )
    return rows


_VERDICT_COLOURS = {"PASS": "tab:green", "FAIL": "tab:red", "INCOMPLETE": "tab:orange"}


def _stage_label(s: StageResult, row: StageWorst | None) -> str:
    """The words right of a stage's bar: distance, rule, how many arrays, verdict."""
    if row is None:
        return f"nothing compared — {_verdict(s)}"
    if row.ulp is None:
        what = "compared by invariants" if row.max_abs is None else "shape mismatch"
    else:
        what = f"{_fmt(row.ulp)} ulp ({row.array}), tolerance {row.tolerance}"
        if row.tolerance_ulp is None:  # an atol/rtol rule: the deltas it bounds
            what += f", max abs {_fmt(row.max_abs, 3)}, max rel {_fmt(row.max_rel, 3)}"
    n = row.n_compared
    return f"{what} · {n} array{'' if n == 1 else 's'} · {row.verdict}"


def _stage_panel(ax: Any, result: CrosscheckResult) -> None:
    """Per stage, in order: a bar of the worst ULP distance (symlog axis, 0 drawn as a dot at 0),
    the tolerance's ULP bound as a black tick, and the numbers and verdict in words."""
    rows = {r.stage: r for r in stage_worst_ulp(result)}
    dots, ticks = [], []  # (x, y, colour) of each distance shown; (x, y) of each ULP bound
    for y, s in enumerate(result.stages):
        row = rows.get(s.name)
        colour = _VERDICT_COLOURS.get(str(s.verdict), "tab:gray")
        if row is not None and row.ulp is not None:
            ax.barh(y, row.ulp, height=0.55, color=colour)
            dots.append((row.ulp, y, colour))
        if row is not None and row.tolerance_ulp is not None:
            ticks.append((row.tolerance_ulp, y))
        label = _stage_label(s, row)
        ax.text(1.02, y, label, transform=ax.get_yaxis_transform(), va="center", fontsize=8)
    if dots:
        xs, ys, colours = zip(*dots, strict=True)
        ax.scatter(xs, ys, c=colours, s=30, zorder=3, label="worst ULP distance")
    if ticks:
        xs, ys = zip(*ticks, strict=True)
        ax.scatter(xs, ys, marker="|", s=500, c="black", zorder=4, label="tolerance (ULP)")
    top = max([10.0, *(10 * x for x, _, _ in dots), *(10 * x for x, _ in ticks)])
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xlim(-0.5, top)
    ax.set_yticks(range(len(result.stages)), [s.name for s in result.stages])
    ax.set_ylim(len(result.stages) - 0.5, -0.5)  # the first stage on top
    ax.set_xlabel("worst ULP distance per stage (integer arrays: max |difference|; symlog)")
    ax.grid(axis="x", alpha=0.3)
    if dots or ticks:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, -0.02), ncol=2, fontsize=7, frameon=False)


def _figure_title(result: CrosscheckResult) -> str:
    """Port, reference, verdict; then the input and the chain parameters."""
    p = result.params
    where = (result.provenance or {}).get("input")
    keys = ("N", "gridsize", "K", "n_groups", "seed", "variant")
    params = ", ".join(f"{k}={p[k]}" for k in keys if p.get(k) is not None)
    return (
        f"crosscheck: {result.port} (port) vs {result.reference} (reference) — {result.verdict}\n"
        + (f"input: {where}; " if where else "")
        + params
    )


def crosscheck_figure(result: CrosscheckResult) -> Any:
    """The figure of `crosscheck.png` (a matplotlib `Figure`): |port − reference| of the frames
    holding the worst elements of the worst arrays when any differ, and below them (or alone, when
    every compared array is identical) the per-stage worst ULP distances against the tolerances."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    maps = [(k, m) for k, m in result.difference_maps.items() if m.size and float(np.max(m)) > 0]
    cols = min(3, max(1, len(maps)))
    rows = (len(maps) + cols - 1) // cols
    panel_h = 1.4 + 0.38 * len(result.stages)
    fig = Figure(figsize=(13.0, 3.6 * rows + panel_h + 0.8), dpi=90, layout="constrained")
    FigureCanvasAgg(fig)
    if maps:  # the maps above, the stage panel below, each laid out on its own
        top, bottom = fig.subfigures(2, 1, height_ratios=[3.6 * rows, panel_h])
    else:
        top, bottom = None, fig
    for i, (name, m) in enumerate(maps):
        ax = top.add_subplot(rows, cols, i + 1)
        im = ax.imshow(m, cmap="magma", interpolation="nearest")
        ax.set_title(f"{name}\n|port − ref|, max {float(np.max(m)):.3g}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
        top.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ax = bottom.add_subplot(1, 1, 1)
    _stage_panel(ax, result)
    maps_note = ""  # why no difference map is drawn, when none is
    if not maps:
        maps_note = (
            "difference maps: every compared image array is identical"
            if result.difference_maps
            else "no image-shaped arrays compared"
        )
    title = "per stage: the worst compared array against its tolerance"
    ax.set_title(title + (f" ({maps_note})" if maps_note else ""), fontsize=9)
    fig.suptitle(_figure_title(result), fontsize=10)
    return fig


def render_png(result: CrosscheckResult) -> bytes:
    """`crosscheck_figure(result)` as PNG bytes."""
    buf = io.BytesIO()
    crosscheck_figure(result).savefig(buf, format="png")
    return buf.getvalue()


def write_outputs(result: CrosscheckResult, out_dir: str | os.PathLike) -> dict[str, pathlib.Path]:
    """Write `crosscheck.md`, `crosscheck.json` and `crosscheck.png` into `out_dir` (atomically).

    Everything is rendered in memory first (a rendering error writes nothing, not even the
    folder); each file is written under a temporary name and renamed into place.

    Returns:
        `{"markdown": path, "json": path, "png": path}`.
    """
    out = pathlib.Path(out_dir)
    files = {
        "markdown": out / "crosscheck.md",
        "json": out / "crosscheck.json",
        "png": out / "crosscheck.png",
    }
    payload = [
        (files["markdown"], render_markdown(result).encode("utf-8")),
        (files["json"], (result.to_json_str() + "\n").encode("utf-8")),
        (files["png"], render_png(result)),
    ]
    write_files_atomically(payload)
    logger.info("crosscheck outputs written to %s", out)
    return files
