"""The real upstream in the bench: group + normalize, container and object patches timed in upstream's
own environment (a subprocess), on the case's RawData, the port's groups and the same object.

Where upstream lives: `$PTYCHO_UPSTREAM` or `../shared/upstream` beside the repository; its Python:
`$PTYCHO_UPSTREAM_PYTHON` or `.venv-upstream/bin/python` in the repository. Missing either, the
upstream column is reported unavailable with the reason (never an error of the run).
"""

import json
import os
import pathlib
import statistics
import subprocess
import tempfile
from collections.abc import Mapping
from typing import Any

import numpy as np

from .plan import Case, stage_bytes
from .timing import Figure

REPO = pathlib.Path(__file__).resolve().parents[1]
STAGE_OF = {"group_normalize": "group_normalize", "container": "container", "patches": "patches"}
"""Upstream timer stage -> bench stage it is set beside (same inputs, same outputs)."""


def upstream_root() -> pathlib.Path:
    return pathlib.Path(os.environ.get("PTYCHO_UPSTREAM") or REPO.parent / "shared" / "upstream")


def upstream_python() -> pathlib.Path:
    return pathlib.Path(
        os.environ.get("PTYCHO_UPSTREAM_PYTHON") or REPO / ".venv-upstream" / "bin" / "python"
    )


def unavailable_reason() -> str | None:
    """Why the real upstream cannot run here, or None."""
    root, py = upstream_root(), upstream_python()
    if not (root / "ptycho" / "raw_data.py").is_file():
        return f"no upstream checkout at {root} (set PTYCHO_UPSTREAM)"
    if not py.is_file():
        return f"no upstream environment at {py} (set PTYCHO_UPSTREAM_PYTHON)"
    return None


def time_upstream(
    inp,
    *,
    repeats: int = 3,
    patch_groups: int = 4,
    timeout_s: float = 900.0,
    extra_env: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Run `upstream_timer.py` on the case of `inp` (a `stages.Inputs`); its JSON reply.

    `extra_env` is added to the subprocess's environment (e.g. `GLIBC_TUNABLES`, to run upstream
    with the port's malloc settings).

    `{"ok": False, "error": ...}` when upstream is unavailable, fails or times out.
    """
    why = unavailable_reason()
    if why:
        return {"ok": False, "error": why}
    case: Case = inp.case
    raw, nn = inp.get("raw"), np.asarray(inp.get("nn"))
    grouped = inp.get("grouped")
    if grouped.Y is None:
        return {"ok": False, "error": "the case has no object patches (no objectGuess)"}
    with tempfile.TemporaryDirectory(prefix="ptycho-bench-upstream-") as tmp:
        npz = pathlib.Path(tmp) / "case.npz"
        np.savez(
            npz, xcoords=raw.xcoords, ycoords=raw.ycoords, xcoords_start=raw.xcoords_start,
            ycoords_start=raw.ycoords_start, diff3d=raw.diff3d, probeGuess=raw.probeGuess,
            scan_index=raw.scan_index, objectGuess=raw.objectGuess, nn=nn, Y=np.asarray(grouped.Y),
        )  # fmt: skip
        req = {
            "npz": str(npz), "upstream_root": str(upstream_root()), "crosscheck_dir": str(REPO / "crosscheck"),
            "params": {"N": case.N, "K": case.K, "n_groups": case.B, "gridsize": case.gridsize, "seed": case.seed, "nphotons": case.nphotons},
            "repeats": repeats, "patch_groups": patch_groups,
        }  # fmt: skip
        (pathlib.Path(tmp) / "req.json").write_text(json.dumps(req))
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "JAX_PLATFORMS")}
        env.update(
            TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES=""
        )  # upstream on the CPU, as its environment is built
        env.update(extra_env or {})
        try:
            proc = subprocess.run(
                [str(upstream_python()), str(pathlib.Path(__file__).with_name("upstream_timer.py")), str(pathlib.Path(tmp) / "req.json")],
                capture_output=True, text=True, timeout=timeout_s, env=env, cwd=tmp,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            return {"ok": False, "error": f"upstream timer ran past {timeout_s:.0f} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    try:
        reply = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        tail = proc.stderr.strip().splitlines()[-3:]
        return {
            "ok": False,
            "error": f"upstream timer exited {proc.returncode} without a reply: {' | '.join(tail)}",
        }
    return reply


def upstream_figures(
    case: Case, reply: dict[str, Any], jax_figures: list[dict[str, Any]]
) -> tuple[list[dict], list[dict]]:
    """Figures (impl `upstream`) and upstream/jax ratios (of medians) from a `time_upstream` reply."""
    figs, ratios = [], []
    d = case.dims()
    for name, st in reply.get("stages", {}).items():
        stage = STAGE_OF.get(name)
        if stage is None or not st.get("times_s"):
            continue
        fig = Figure(case=case.name, stage=stage, impl="upstream", dims=d, times_s=list(st["times_s"]), first_s=st["first_s"],
                     scale=st.get("scale", 1.0), bytes=stage_bytes(stage, d), note=st.get("note", ""), minor_faults=st.get("minor_faults"))  # fmt: skip
        figs.append(fig.to_json(None))
        j = next(
            (
                f
                for f in jax_figures
                if f["case"] == case.name and f["stage"] == stage and f["impl"] == "jax"
            ),
            None,
        )
        if j:
            med = statistics.median(st["times_s"])
            ratios.append({"case": case.name, "stage": stage, "numerator": "upstream", "denominator": "jax",
                           "median": med / j["median_s"], "min": min(st["times_s"]) / j["max_s"], "max": max(st["times_s"]) / j["min_s"],
                           "n": len(st["times_s"]), "pairing": "medians (upstream runs in its own process)", "numerator_median_s": med})  # fmt: skip
    return figs, ratios
