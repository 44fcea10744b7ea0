"""The report PNG: a title naming the run, the data (a frame, the probe, the object with the scan),
per-stage histograms (log counts) and the stage-mean chain (specs/report.md).

Drawn cheaply, because the default `ptycho-jax` report renders it on every run: matplotlib's Agg
canvas (no pyplot, no backend selection, no global state) imported only when a figure is drawn,
a fixed layout computed here (no constrained layout, no tight bounding boxes), one step patch per
histogram instead of a bar per bin, fixed decade ticks on the log axes and plain text labels
instead of legends.
"""

import io
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from .._rawdata import RawData
from .._report import RATIO_TRANSITIONS, STAGE_LABELS, IntensityReport

# Fixed layout, in figure fractions (bottom, height per row): the title band on top, then the data
# row (with `raw`), the histogram row and the stage-mean chain.
_LEFT, _RIGHT = 0.05, 0.99
_COL_GAP = 0.045
_PANEL_W_IN = 3.2  # inches per histogram panel
_ROWS = {  # figure height in inches -> rows
    False: (7.6, {"hist": (0.50, 0.32), "chain": (0.12, 0.28)}),
    True: (11.0, {"data": (0.665, 0.23), "hist": (0.37, 0.2), "chain": (0.085, 0.19)}),
}
_TITLE_Y = 0.985
_MAX_IMAGE_PX = 512  # images are drawn strided down to at most this many pixels a side
_TITLE_PARAMS = ("gridsize", "N", "K", "n_groups", "nphotons", "seed", "variant", "patch_positions")


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


def figure_title(report: IntensityReport) -> str:
    """The figure's title: what ran (scenario or input file) and the chain parameters that shape it."""
    prov: Mapping[str, Any] = report.provenance or {}
    scenario = prov.get("scenario")
    if isinstance(scenario, Mapping) and scenario.get("name"):
        what = f"scenario {scenario['name']}"
    elif prov.get("input_path"):
        what = f"input {prov['input_path']}"
    else:
        what = "Intensity Statistics"
    params = prov.get("parameters") or {}
    shown = [f"{k}={params[k]:g}" if isinstance(params[k], float) else f"{k}={params[k]}"
             for k in _TITLE_PARAMS if params.get(k) is not None]  # fmt: skip
    return f"ptycho-jax report: {what}" + (f"\n{', '.join(shown)}" if shown else "")


def render_figure(report: IntensityReport, *, raw: RawData | None = None, dpi: int = 100) -> bytes:
    """Render the report figure as PNG bytes (matplotlib, Agg canvas; no pyplot, no global state).

    Title: the scenario or input and the chain parameters (`figure_title`). With `raw`, a row of
    the data: its first diffraction frame (intensity, log scale), the probe amplitude, and the
    object amplitude with the scan positions on it. Then one panel per stage with the histogram
    of its finite entries (64 equal bins, log count axis; recorded by `record_stage`), the mean
    marked; stages built from statistics alone show their min/mean/max only. Bottom: the
    stage-mean chain, each transition's ratio written under the axis between its two stages.

    Args:
        report: The report to draw.
        raw: The scan the report was computed from, for the data row (none without it).
        dpi: Resolution of the PNG.

    Returns:
        The PNG file content.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    stages = report.stages
    ncols = max(1, len(stages))
    height, rows = _ROWS[raw is not None]
    fig = Figure(figsize=(max(8.0, _PANEL_W_IN * ncols), height), dpi=dpi)
    canvas = FigureCanvasAgg(fig)
    fig.text(0.5, _TITLE_Y, figure_title(report), ha="center", va="top", fontsize=11)
    if raw is not None:
        _draw_data_row(fig, raw, rows["data"])
    width = (_RIGHT - _LEFT - _COL_GAP * (ncols - 1)) / ncols
    for i, st in enumerate(stages):
        bottom, h = rows["hist"]
        _draw_histogram(fig.add_axes((_LEFT + i * (width + _COL_GAP), bottom, width, h)), st)
    bottom, h = rows["chain"]
    _draw_chain(fig.add_axes((_LEFT, bottom, _RIGHT - _LEFT, h)), report)
    buf = io.BytesIO()
    canvas.print_png(buf, metadata={"Software": None})
    return buf.getvalue()


def _strided(image: np.ndarray) -> tuple[np.ndarray, int]:
    """`image` strided down to at most `_MAX_IMAGE_PX` a side (cheap to draw), and the stride."""
    step = max(1, math.ceil(max(image.shape) / _MAX_IMAGE_PX))
    return image[::step, ::step], step


def _draw_data_row(fig, raw: RawData, row: tuple[float, float]) -> None:
    """A frame (log intensity), the probe amplitude, the object amplitude with the scan positions."""
    bottom, h = row
    width = (_RIGHT - _LEFT - 2 * _COL_GAP) / 3
    axes = [fig.add_axes((_LEFT + i * (width + _COL_GAP), bottom, width, h)) for i in range(3)]
    frame = np.asarray(raw.diff3d[0], np.float64) ** 2
    positive = frame[frame > 0]
    floor = float(positive.min()) if positive.size else 1.0
    _image(axes[0], np.log10(np.maximum(frame, floor)), f"frame 0 of {len(raw)}: log10 intensity")
    _image(axes[1], np.abs(np.asarray(raw.probeGuess)), "probe amplitude |probeGuess|")
    ax = axes[2]
    x, y = np.asarray(raw.xcoords, np.float64), np.asarray(raw.ycoords, np.float64)
    if raw.objectGuess is not None:
        obj, step = _strided(np.abs(np.asarray(raw.objectGuess)))
        ax.imshow(
            obj,
            cmap="gray",
            origin="upper",
            extent=(0, obj.shape[1] * step, obj.shape[0] * step, 0),
        )
        title = f"object amplitude, {len(x)} scan positions"
    else:
        ax.invert_yaxis()
        title = f"{len(x)} scan positions (no objectGuess)"
    ax.scatter(x, y, s=2, color="tab:orange", linewidths=0)
    ax.set_title(title, fontsize=9)
    ax.tick_params(labelsize=7)


def _image(ax, image: np.ndarray, title: str) -> None:
    shown, step = _strided(image)
    im = ax.imshow(
        shown,
        cmap="viridis",
        origin="upper",
        extent=(0, shown.shape[1] * step, shown.shape[0] * step, 0),
    )
    ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.02).ax.tick_params(labelsize=7)
    ax.set_title(title, fontsize=9)
    ax.tick_params(labelsize=7)


def _draw_histogram(ax, st) -> None:
    """One stage: its histogram on a log count axis (or min/max marks), the mean marked."""
    from matplotlib.ticker import FixedFormatter, FixedLocator, NullLocator

    label = STAGE_LABELS.get(st.name, st.name)
    ax.set_title(f"{label}\n{st.stats.get('shape')} {st.stats.get('dtype')}", fontsize=9, y=1.01)
    mean = st.stats.get("mean")
    hist = st.histogram
    if hist is not None and hist.counts.sum() > 0:
        counts = hist.counts.astype(np.float64)
        top = max(1.0, float(counts.max())) * 2.0
        # One step patch; empty bins sit on the baseline (zero height on the log axis).
        ax.stairs(np.where(counts > 0, counts, 0.5), hist.edges, baseline=0.5, fill=True,
                  color="tab:blue", linewidth=0)  # fmt: skip
        ax.set_yscale("log")
        ax.set_ylim(0.5, top)
        ticks, labels = _decade_ticks(top)
        ax.yaxis.set_major_locator(FixedLocator(ticks))
        ax.yaxis.set_major_formatter(FixedFormatter(labels))
        ax.yaxis.set_minor_locator(NullLocator())
        ax.set_ylabel("count (log)", fontsize=8)
    else:
        ax.set_yticks([])
        ax.text(0.5, 0.5, "statistics only\n(no histogram)", transform=ax.transAxes,
                ha="center", va="center", fontsize=8, color="0.4")  # fmt: skip
        lo, hi = st.stats.get("min"), st.stats.get("max")
        if lo is not None and hi is not None:
            pad = 0.05 * (hi - lo) if hi > lo else 0.5
            ax.set_xlim(lo - pad, hi + pad)
            for x in (lo, hi):
                ax.axvline(x, color="0.6", linewidth=0.8, linestyle=":")
    if mean is not None:
        ax.axvline(mean, color="tab:red", linewidth=1.0)
        ax.text(0.97, 0.96, f"\u2014 mean {mean:.6g}", transform=ax.transAxes, ha="right",
                va="top", fontsize=7, color="tab:red",
                bbox={"facecolor": "white", "edgecolor": "0.8", "boxstyle": "square,pad=0.3"})  # fmt: skip
    ax.set_xlabel("value", fontsize=8, labelpad=1)
    ax.tick_params(labelsize=7)


def _draw_chain(ax, report: IntensityReport) -> None:
    """The stage means in order, each value above its point; the ratios below the axis, off the line."""
    means = report.stage_means
    names = [st.name for st in report.stages if st.name in means]
    ax.set_ylabel("stage mean", fontsize=8)
    ax.set_title("Stage-mean chain (ratios between stages below the axis)", fontsize=9, y=1.01)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    if not names:
        ax.text(0.5, 0.5, "no stage means", transform=ax.transAxes, ha="center", va="center")
        return
    xs = np.arange(len(names))
    ys = [means[n] for n in names]
    ax.plot(xs, ys, marker="o", color="tab:blue")
    for x, y in zip(xs, ys, strict=True):
        ax.annotate(f"{y:.6g}", (x, y), textcoords="offset points", xytext=(0, 8), ha="center",
                    fontsize=8)  # fmt: skip
    ax.set_xticks(xs, [STAGE_LABELS.get(n, n) for n in names], fontsize=8)
    for key, src, dst in RATIO_TRANSITIONS:
        r = report.ratios.get(key)
        if r is None or src not in names or dst not in names:
            continue
        i, j = names.index(src), names.index(dst)
        # in axes coordinates under the tick labels: never on the line, whatever the means
        ax.text((i + j) / 2, -0.16, f"\u00d7{r:.6g}", transform=ax.get_xaxis_transform(),
                ha="center", va="top", fontsize=8,
                color="tab:red" if r < 1.0 else "tab:green")  # fmt: skip
    lo, hi = min(ys), max(ys)
    pad = 0.2 * (hi - lo) if hi > lo else 0.15 * abs(hi) + 1e-12
    ax.set_ylim(lo - pad, hi + pad)
    ax.set_xlim(-0.5, len(names) - 0.5)
