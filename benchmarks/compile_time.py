"""Compile time of the default report, apart from run time: `ptycho-jax` (the report on gs2_ideal) in a
new process, three times: without the persistent cache (what it compiles, program by program), then
with an empty cache (first run) and again with the filled cache (second run).
"""

import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

_CHILD = r"""
import json, sys, time, collections
t0 = time.perf_counter()
import ptycho_jax
ptycho_jax.reuse_freed_host_memory()  # as the console script does, before jax is imported
from jax import monitoring
seen = collections.defaultdict(float)
count = collections.Counter()
totals = collections.defaultdict(float)
def listen(event, secs, **kw):
    totals[event] += secs
    if event.endswith("backend_compile_duration"):
        name = kw.get("fun_name", "?")
        seen[name] += secs
        count[name] += 1
monitoring.register_event_duration_secs_listener(listen)
from ptycho_jax.app.cli import main
from ptycho_jax.app.launch import exit_now
rc = main(["-q", "report", "--out", sys.argv[1]])
top = sorted(seen.items(), key=lambda kv: -kv[1])
with open(sys.argv[1] + "/intensity_stats.json") as f:
    simulation = json.load(f)["provenance"].get("simulation")
print(json.dumps({"rc": rc, "in_process_s": time.perf_counter() - t0, "simulation": simulation,
                  "compile_s": sum(seen.values()), "programs": sum(count.values()), "top": top[:12],
                  "trace_s": totals.get("/jax/core/compile/jaxpr_trace_duration", 0.0),
                  "lower_s": totals.get("/jax/core/compile/jaxpr_to_mlir_module_duration", 0.0),
                  "cache_retrieval_s": totals.get("/jax/compilation_cache/cache_retrieval_time_sec", 0.0)}))
exit_now(rc)  # as the console script (`_launch.run`) ends
"""


def _run(env_extra: dict[str, str], out_dir: str, timeout_s: float) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PTYCHO_JAX_")}
    env.update(env_extra)
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, out_dir],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout_s,
    )
    wall = time.perf_counter() - t0
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"default report exited {proc.returncode}: {proc.stderr.strip()[-300:]}")
    return {**json.loads(lines[-1]), "wall_s": wall}


def measure_default_report(*, timeout_s: float = 600.0) -> dict[str, Any]:
    """`{"ok", "compile_s", "programs", "top", "wall_uncached_s", "wall_cold_s", "wall_warm_s", ...}`.

    Wall times are of the whole child process (interpreter start included); `in_process_*_s` from
    the child's first line to the end of the report; `loadavg_*` the machine's load around the runs.
    """
    load_before = _loadavg()
    try:
        with tempfile.TemporaryDirectory(prefix="ptycho-bench-compile-") as tmp:
            nocache = _run({"PTYCHO_JAX_NO_CACHE": "1"}, os.path.join(tmp, "r0"), timeout_s)
            cache = {"PTYCHO_JAX_CACHE_DIR": os.path.join(tmp, "cache")}
            cold = _run(cache, os.path.join(tmp, "r1"), timeout_s)
            warm = _run(cache, os.path.join(tmp, "r2"), timeout_s)
    except (RuntimeError, subprocess.TimeoutExpired, OSError) as e:
        return {"ok": False, "error": f"{type(e).__name__}: {e}"}
    return {
        "ok": True,
        "compile_s": nocache["compile_s"],
        "trace_s": nocache["trace_s"],
        "lower_s": nocache["lower_s"],
        "programs": nocache["programs"],
        "top": nocache["top"],
        "wall_uncached_s": nocache["wall_s"],
        "wall_cold_s": cold["wall_s"],
        "wall_warm_s": warm["wall_s"],
        "compile_warm_s": warm["compile_s"],
        "cache_retrieval_warm_s": warm["cache_retrieval_s"],
        "in_process_cold_s": cold["in_process_s"],
        "in_process_warm_s": warm["in_process_s"],
        "simulation_cold": cold["simulation"],
        "simulation_warm": warm["simulation"],
        "loadavg_before": load_before,
        "loadavg_after": _loadavg(),
    }


def _loadavg() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (None where the OS has none): the timings depend on them."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None
