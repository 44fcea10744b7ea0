"""The report figure's stage-mean chain: no ratio label on the line (issue 21 item 15, "one label
overlaps a line")."""

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

import ptycho_jax as pj
from ptycho_jax.app.figure import _draw_chain

MEANS = {  # a steep drop, then flat, then a rise: the line crosses where labels used to go
    "raw_diffraction": 1000.0,
    "grouped_diffraction": 1.0,
    "grouped_X_full": 1.0,
    "container_X": 500.0,
}


@pytest.mark.parametrize("scale", [1.0, 1e-6])
def test_ratio_labels_lie_off_the_line(scale):
    stages = [
        pj.record_stage(name, np.full((2, 4, 4), mean * scale, np.float32))
        for name, mean in MEANS.items()
    ]
    report = pj.build_intensity_report(
        stages, bundle_intensity_scale=1.0, legacy_intensity_scale=1.0
    )
    fig = Figure(figsize=(6, 3), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    _draw_chain(ax, report)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ratios = [t for t in ax.texts if t.get_text().startswith("\u00d7")]
    assert [t.get_text() for t in ratios] == ["\u00d70.001", "\u00d71", "\u00d7500"]
    (line,) = ax.get_lines()
    points = ax.transData.transform(np.column_stack(line.get_data()))
    axes_box = ax.get_window_extent(renderer)
    for t in ratios:
        box = t.get_window_extent(renderer)
        assert box.y1 <= axes_box.y0, t.get_text()  # under the axes, where the line never is
        assert not any(box.contains(x, y) for x, y in points), t.get_text()
    # each point's value sits above its point (the annotation's anchor is the point itself)
    values = [a for a in ax.texts if not a.get_text().startswith("\u00d7")]
    assert [a.xy[1] for a in values] == pytest.approx([m * scale for m in MEANS.values()])
