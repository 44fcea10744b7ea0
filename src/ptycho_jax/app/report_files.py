"""Writing the Intensity Statistics report: Markdown, JSON and PNG rendered in memory, then written atomically."""

import logging
import os
import pathlib

from .._atomic import write_files_atomically
from .._rawdata import RawData
from .._report import FIGURE_NAME, JSON_NAME, MARKDOWN_NAME, IntensityReport
from . import figure as figure_module

logger = logging.getLogger(__name__)


def write_report(
    report: IntensityReport,
    out_dir: str | os.PathLike,
    *,
    figure: bool = True,
    raw: RawData | None = None,
) -> dict[str, pathlib.Path]:
    """Write intensity_stats.md, intensity_stats.json and (optionally) intensity_stats.png.

    Everything is rendered in memory first, then written to temporary files in `out_dir` and
    renamed into place, so no partial file is ever visible.

    Args:
        report: The report.
        out_dir: Output directory (created if missing).
        figure: Also render the PNG (per-stage histograms and the stage-mean chain).
        raw: The scan the report was computed from: the PNG then also shows the data (a frame,
            the probe, the object with the scan positions).

    Returns:
        `{"markdown": path, "json": path}` plus `"figure": path` when written.
    """
    out = pathlib.Path(out_dir)
    fig_name = FIGURE_NAME if figure else None
    markdown = report.to_markdown(figure_name=fig_name).encode("utf-8")
    payload = report.to_json(figure_name=fig_name).encode("utf-8")
    files = [(out / MARKDOWN_NAME, markdown), (out / JSON_NAME, payload)]
    if figure:
        files.append((out / FIGURE_NAME, figure_module.render_figure(report, raw=raw)))
    out.mkdir(parents=True, exist_ok=True)
    write_files_atomically(files)
    paths = {"markdown": out / MARKDOWN_NAME, "json": out / JSON_NAME}
    if figure:
        paths["figure"] = out / FIGURE_NAME
    logger.info("intensity report written to %s", out)
    return paths
