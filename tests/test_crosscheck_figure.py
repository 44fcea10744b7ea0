"""crosscheck.png (issue 21 item 15): per stage the worst ULP distance against the tolerance, also
for an all-identical run (which used to be an almost empty placeholder)."""

import dataclasses
import struct

import numpy as np
import pytest
from _crosscheck_stubs import PARAMS, Stub, record, replaced

from ptycho_jax.crosscheck.compare import Tolerance, Verdict
from ptycho_jax.crosscheck.render import (
    crosscheck_figure,
    render_png,
    stage_worst_ulp,
    tolerance_ulp,
)
from ptycho_jax.crosscheck.run import run_crosscheck
from ptycho_jax.crosscheck.synthetic import synthetic_raw

STAGES = ["grouping", "grouped", "normalize", "patches", "intensity_scales", "scaler", "container"]
PLACEHOLDER_PX = (378, 342)  # the old all-identical figure: 4.2 x 3.8 inches at 90 dpi


@pytest.fixture(scope="module")
def raw():
    return synthetic_raw()


@pytest.fixture(scope="module")
def outs(raw):
    return record(raw)


def _run(raw, outs, change=None):
    port = Stub(outs, "port-stub", change=change)
    return run_crosscheck(raw, port=port, reference=Stub(outs, "ref-stub"), params=PARAMS)


def _nudged(ulps: int):
    """X_full with element [0, 16, 16, 0] moved `ulps` float32 steps up."""

    def change(x):
        x = np.array(x, copy=True)
        for _ in range(ulps):
            x[0, 16, 16, 0] = np.nextafter(x[0, 16, 16, 0], np.float32(np.inf))
        return x

    return {"normalize": replaced(X_full=change)}


def _panel(fig):
    (ax,) = [a for a in fig.axes if a.get_xscale() == "symlog"]
    return ax


def test_tolerance_ulp_reads_the_rules_describe_writes():
    assert tolerance_ulp(Tolerance(exact=True).describe()) == 0.0
    assert tolerance_ulp(Tolerance(ulp=1).describe()) == 1.0
    assert tolerance_ulp(Tolerance(ulp=4, ulp_dtype="float32").describe()) == 4.0
    assert tolerance_ulp(Tolerance(ulp=2, atol=1e-6).describe()) == 2.0
    assert tolerance_ulp(Tolerance(atol_max_rel=1e-6).describe()) is None
    assert tolerance_ulp(Tolerance(rtol=1e-3).describe()) is None


def test_stage_worst_ulp_of_an_identical_run(raw, outs):
    res = _run(raw, outs)
    assert res.verdict == Verdict.PASS
    rows = stage_worst_ulp(res)
    assert [r.stage for r in rows] == STAGES
    assert [r.ulp for r in rows] == [0.0] * len(STAGES)
    assert {r.stage: r.n_compared for r in rows} == {s.name: len(s.compared) for s in res.stages}
    by = {r.stage: r for r in rows}
    assert (by["grouping"].array, by["grouping"].n_compared) == ("nn_indices", 1)
    assert by["grouping"].tolerance_ulp == 0.0  # integers: exact
    assert by["normalize"].tolerance_ulp == 1.0  # [stages.normalize.float32] ulp = 1
    assert by["patches"].tolerance_ulp is None  # atol_max_rel: no ULP bound
    assert by["patches"].max_abs == 0.0 and by["patches"].max_rel == 0.0
    assert {r.verdict for r in rows} == {"PASS"}


@pytest.mark.parametrize(("ulps", "verdict"), [(1, "PASS"), (3, "FAIL")])
def test_stage_worst_ulp_counts_the_ulps_of_the_worst_array(raw, outs, ulps, verdict):
    rows = {r.stage: r for r in stage_worst_ulp(_run(raw, outs, _nudged(ulps)))}
    assert (rows["normalize"].array, rows["normalize"].ulp) == ("X_full", float(ulps))
    assert rows["normalize"].verdict == verdict
    assert rows["grouped"].ulp == 0.0 and rows["grouped"].verdict == "PASS"


def test_all_identical_figure_shows_what_was_compared(raw, outs):
    res = _run(raw, outs)
    res = dataclasses.replace(
        res, provenance={**res.provenance, "input": "scenario gs2_ideal (test half)"}
    )
    fig = crosscheck_figure(res)
    assert len(fig.axes) == 1  # no difference map: every image array is identical
    ax = _panel(fig)
    assert [t.get_text() for t in ax.get_yticklabels()] == STAGES
    assert "every compared image array is identical" in ax.get_title()
    dots = ax.collections[0].get_offsets()
    assert dots[:, 0].tolist() == [0.0] * 7 and dots[:, 1].tolist() == list(range(7))
    assert ax.get_xlim()[0] < 0  # the dots at 0 lie inside the axes, not on its edge
    ticks = ax.collections[1].get_offsets()  # the ULP bounds (patches has none: atol)
    assert ticks.tolist() == [[0, 0], [0, 1], [1, 2], [1, 4], [0, 5], [1, 6]]
    labels = [t.get_text() for t in ax.texts]
    assert labels[0] == "0 ulp (nn_indices), tolerance exact · 1 array · PASS"
    assert labels[3].startswith("0 ulp (Y), tolerance atol 1e-06·max|ref|, max abs 0, max rel 0")
    assert all(t.endswith("· PASS") for t in labels) and len(labels) == 7
    title = fig._suptitle.get_text()
    assert "port-stub (port) vs ref-stub (reference) — PASS" in title
    assert "input: scenario gs2_ideal (test half)" in title and "gridsize=2" in title
    png = render_png(res)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert width > PLACEHOLDER_PX[0] and height > PLACEHOLDER_PX[1]


def test_differing_run_draws_maps_and_the_stage_panel(raw, outs):
    res = _run(raw, outs, {"normalize": replaced(X_full=lambda x: x * np.float32(1.0001))})
    fig = crosscheck_figure(res)
    ax = _panel(fig)
    (row,) = [r for r in stage_worst_ulp(res) if r.stage == "normalize"]
    assert row.verdict == "FAIL" and row.ulp > 100
    (bar,) = [p for p in ax.patches if p.get_width() > 0]
    assert bar.get_width() == row.ulp and bar.get_y() + bar.get_height() / 2 == 2
    assert ax.texts[2].get_text().startswith(f"{row.ulp:g} ulp (X_full), tolerance ≤1 ulp")
    maps = [a for a in fig.axes if a.images]
    assert [a.get_title().splitlines()[0].split(" [")[0] for a in maps] == ["normalize/X_full"]
