"""The report PNG: per-stage histograms (log counts) and the stage-mean chain (specs/report.md).

Drawn cheaply, because the default `ptycho-jax` report renders it on every run: matplotlib's Agg
canvas (no pyplot, no backend selection, no global state) imported only when a figure is drawn,
a fixed layout computed here (no constrained layout, no tight bounding boxes), one step patch per
histogram instead of a bar per bin, fixed decade ticks on the log axes and plain text labels
instead of legends.
"""

import io
import math

import numpy as np

from .._report import RATIO_TRANSITIONS, STAGE_LABELS, IntensityReport

# Fixed layout, in figure fractions: the histogram row on top, the stage-mean chain below.
_LEFT, _RIGHT = 0.05, 0.99
_TOP_ROW = (0.525, 0.385)  # bottom, height
_BOTTOM_ROW = (0.065, 0.345)
_COL_GAP = 0.045
_PANEL_W_IN = 3.2  # inches per histogram panel
_FIG_H_IN = 7.0


_SUPERSCRIPT = str.maketrans(
    "-0123456789", "\u207b\u2070\u00b9\u00b2\u00b3\u2074\u2075\u2076\u2077\u2078\u2079"
)


def _decade_ticks(top: float) -> tuple[list[float], list[str]]:
    """Major ticks of a log count axis from 1 to `top` and their labels `10ⁿ` (plain text, no mathtext).

    Every decade, or every second/third one so that at most six remain.
    """
    hi = max(0, math.floor(math.log10(max(top, 1.0))))
    step = max(1, math.ceil((hi + 1) / 6))
    exps = range(0, hi + 1, step)
    return [10.0**e for e in exps], [f"10{str(e).translate(_SUPERSCRIPT)}" for e in exps]


def render_figure(report: IntensityReport, *, dpi: int = 100) -> bytes:
    """Render the report figure as PNG bytes (matplotlib, Agg canvas; no pyplot, no global state).

    Top row: one panel per stage with the histogram of its finite entries (64 equal bins, log
    count axis; recorded by `record_stage`), with the mean marked; stages built from statistics
    alone show their min/mean/max only. Bottom: the stage-mean chain, with each transition's
    ratio annotated between its two stages.

    Args:
        report: The report to draw.
        dpi: Resolution of the PNG.

    Returns:
        The PNG file content.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FixedFormatter, FixedLocator, NullLocator

    stages = report.stages
    ncols = max(1, len(stages))
    fig = Figure(figsize=(max(8.0, _PANEL_W_IN * ncols), _FIG_H_IN), dpi=dpi)
    canvas = FigureCanvasAgg(fig)
    width = (_RIGHT - _LEFT - _COL_GAP * (ncols - 1)) / ncols

    for i, st in enumerate(stages):
        ax = fig.add_axes((_LEFT + i * (width + _COL_GAP), _TOP_ROW[0], width, _TOP_ROW[1]))
        label = STAGE_LABELS.get(st.name, st.name)
        ax.set_title(
            f"{label}\n{st.stats.get('shape')} {st.stats.get('dtype')}", fontsize=9, y=1.01
        )
        mean = st.stats.get("mean")
        hist = st.histogram
        if hist is not None and hist.counts.sum() > 0:
            counts = hist.counts.astype(np.float64)
            top = max(1.0, float(counts.max())) * 2.0
            # One step patch; empty bins sit on the baseline (zero height on the log axis).
            ax.stairs(
                np.where(counts > 0, counts, 0.5),
                hist.edges,
                baseline=0.5,
                fill=True,
                color="tab:blue",
                linewidth=0,
            )
            ax.set_yscale("log")
            ax.set_ylim(0.5, top)
            ticks, labels = _decade_ticks(top)
            ax.yaxis.set_major_locator(FixedLocator(ticks))
            ax.yaxis.set_major_formatter(FixedFormatter(labels))
            ax.yaxis.set_minor_locator(NullLocator())
            ax.set_ylabel("count (log)", fontsize=8)
        else:
            ax.set_yticks([])
            ax.text(
                0.5,
                0.5,
                "statistics only\n(no histogram)",
                transform=ax.transAxes,
                ha="center",
                va="center",
                fontsize=8,
                color="0.4",
            )
            lo, hi = st.stats.get("min"), st.stats.get("max")
            if lo is not None and hi is not None:
                pad = 0.05 * (hi - lo) if hi > lo else 0.5
                ax.set_xlim(lo - pad, hi + pad)
                for x in (lo, hi):
                    ax.axvline(x, color="0.6", linewidth=0.8, linestyle=":")
        if mean is not None:
            ax.axvline(mean, color="tab:red", linewidth=1.0)
            ax.text(
                0.97,
                0.96,
                f"\u2014 mean {mean:.6g}",
                transform=ax.transAxes,
                ha="right",
                va="top",
                fontsize=7,
                color="tab:red",
                bbox={"facecolor": "white", "edgecolor": "0.8", "boxstyle": "square,pad=0.3"},
            )
        ax.set_xlabel("value", fontsize=8, labelpad=1)
        ax.tick_params(labelsize=7)

    ax = fig.add_axes((_LEFT, _BOTTOM_ROW[0], _RIGHT - _LEFT, _BOTTOM_ROW[1]))
    means = report.stage_means
    names = [st.name for st in stages if st.name in means]
    if names:
        xs = np.arange(len(names))
        ys = [means[n] for n in names]
        ax.plot(xs, ys, marker="o", color="tab:blue")
        for x, y in zip(xs, ys, strict=True):
            ax.annotate(
                f"{y:.6g}",
                (x, y),
                textcoords="offset points",
                xytext=(0, 8),
                ha="center",
                fontsize=8,
            )
        ax.set_xticks(xs, [STAGE_LABELS.get(n, n) for n in names], fontsize=8)
        ratios = report.ratios
        for key, src, dst in RATIO_TRANSITIONS:
            r = ratios.get(key)
            if r is None or src not in names or dst not in names:
                continue
            i, j = names.index(src), names.index(dst)
            ax.annotate(
                f"\u00d7{r:.6g}",
                ((i + j) / 2, (means[src] + means[dst]) / 2),
                textcoords="offset points",
                xytext=(0, -14),
                ha="center",
                fontsize=8,
                color="tab:red" if r < 1.0 else "tab:green",
            )
        lo, hi = min(ys), max(ys)
        pad = 0.15 * (hi - lo) if hi > lo else 0.15 * abs(hi) + 1e-12
        ax.set_ylim(lo - pad, hi + pad)
        ax.set_xlim(-0.5, len(names) - 0.5)
    else:
        ax.text(0.5, 0.5, "no stage means", transform=ax.transAxes, ha="center", va="center")
    ax.set_ylabel("stage mean", fontsize=8)
    ax.set_title("Stage-mean chain (ratios between stages)", fontsize=9, y=1.01)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)

    buf = io.BytesIO()
    canvas.print_png(buf, metadata={"Software": None})
    return buf.getvalue()
