"""The bench's real-upstream timer runs upstream in its environment and returns figures for the JAX ratios."""

import jax
import numpy as np
import pytest
from _upstream import require_upstream

from benchmarks import upstream
from benchmarks.plan import build_plan
from benchmarks.stages import Inputs


@pytest.mark.filterwarnings("ignore::ptycho_jax.MirroredPatchWarning")  # upstream's own positions
def test_upstream_timer_times_every_stage_on_the_ports_groups():
    require_upstream()
    case = next(c for c in build_plan("tiny", device="cpu") if c.name == "tiny")
    inp = Inputs(case, jax.devices()[0])
    reply = upstream.time_upstream(inp, repeats=1, patch_groups=2, timeout_s=300)
    assert reply.get("ok"), reply
    stages = reply["stages"]
    assert set(stages) >= {"group_normalize", "container", "patches"}, stages
    for name, st in stages.items():
        assert len(st["times_s"]) == 1 and all(t > 0 for t in st["times_s"]), (name, st)
    assert stages["patches"]["scale"] == case.B / 2  # 2 of B groups timed, scaled per group
    figs, ratios = upstream.upstream_figures(
        case,
        reply,
        [{"case": case.name, "stage": s, "impl": "jax", "median_s": 1.0, "min_s": 1.0, "max_s": 1.0}
         for s in ("group_normalize", "container", "patches")],
    )  # fmt: skip
    assert {f["stage"] for f in figs} == {"group_normalize", "container", "patches"}
    assert all(np.isfinite(r["median"]) and r["median"] > 0 for r in ratios) and len(ratios) == 3
    medians = {f["stage"]: f["median_s"] for f in figs}
    assert all(r["numerator_median_s"] == medians[r["stage"]] for r in ratios)
