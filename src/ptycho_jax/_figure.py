"""The report PNG: per-stage histograms (log counts) and the stage-mean chain (specs/report.md)."""

import io

import numpy as np

from ._report import RATIO_TRANSITIONS, STAGE_LABELS, IntensityReport


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

    stages = report.stages
    ncols = max(1, len(stages))
    fig = Figure(figsize=(max(8.0, 3.2 * ncols), 7.0), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(2, ncols, height_ratios=(1.0, 0.9))

    for i, st in enumerate(stages):
        ax = fig.add_subplot(grid[0, i])
        label = STAGE_LABELS.get(st.name, st.name)
        ax.set_title(f"{label}\n{st.stats.get('shape')} {st.stats.get('dtype')}", fontsize=9)
        mean = st.stats.get("mean")
        hist = st.histogram
        if hist is not None and hist.counts.sum() > 0:
            counts = hist.counts.astype(np.float64)
            widths = np.diff(hist.edges)
            nonzero = counts > 0
            ax.bar(
                hist.edges[:-1][nonzero],
                counts[nonzero],
                width=widths[nonzero],
                align="edge",
                color="tab:blue",
                linewidth=0,
            )
            ax.set_yscale("log")
            ax.set_ylim(0.5, max(1.0, float(counts.max())) * 2.0)
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
            ax.axvline(mean, color="tab:red", linewidth=1.0, label=f"mean {mean:.6g}")
            ax.legend(fontsize=7, loc="upper right")
        ax.set_xlabel("value", fontsize=8)
        ax.tick_params(labelsize=7)

    ax = fig.add_subplot(grid[1, :])
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
    ax.set_title("Stage-mean chain (ratios between stages)", fontsize=9)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    return buf.getvalue()
