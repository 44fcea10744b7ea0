#!/usr/bin/env bash
# One prepared GPU run (H100/H200): install if needed, check for a GPU JAX, run the GPU-relevant
# tests (golden chain, sharding, streaming), then the benchmark cases the GPU targets need,
# including gather + normalize against a device copy measured in the same run. Everything lands in
# $OUT: gpu.json, gpu.md (the bench), gpu-tests.txt, gpu-summary.{json,md}, gpu.log. Under 8 min.
#
#   on the device:   bash benchmarks/gpu.sh                          (OUT is set there)
#   dry run on CPU:  BENCH_DEVICE=cpu BENCH_INSTALL=0 BENCH_CASES=gs2_ideal OUT=/tmp/g bash benchmarks/gpu.sh --no-install
#
# Install: wheels carried in .whl/ are installed offline first (benchmarks/README.md); then, if JAX
# sees no GPU and BENCH_INSTALL is not 0, `pip install -U "jax[cuda12]"` is tried once (90 s; the
# device image has JAX with CUDA 13 already, and usually no network, so this normally does nothing).
# If JAX still sees no GPU, the script says so in $OUT/gpu-summary.md and exits 3 (no CPU figures
# are passed off as GPU ones). `--no-install` (or BENCH_INSTALL=0) skips every install step.
#
# Issue 20 targets measured here (gpu-summary.md): the large case end to end with the frames on the
# device (`RawData.on_device`, impl jax-resident: <= 5 ms and <= 3x its copy floor); gather +
# normalize at B >= 16,384 against a same-run device copy (>= 60 %); the one host -> device
# transfer of the frames (h2d/jax-resident) against the same-run device_put bandwidth; a
# jax.profiler trace of the resident chain and the HLO of the one-pass gather + scale in $OUT/trace.
#
# Environment: OUT (default benchmarks/results), PYTHON (python3), BENCH_DEVICE (gpu; cpu for a dry
# run), BENCH_CASES (gs2_ideal,large,B16384,B50000), BENCH_TESTS (the test files), BENCH_TESTS_S
# (150: test time limit), BENCH_SUITE_BUDGET_S (200: no new case after this), BENCH_TIMEOUT_S
# (270: bench hard stop), BENCH_BUDGET_GIB (96), BENCH_GIT_SHA (recorded when .git is absent),
# BENCH_TRACE_CASE (large: the case traced; gs2_ideal for a quick dry run), BENCH_TRACE_S (60).
set -uo pipefail
cd "$(dirname "$0")/.."
T0=$SECONDS

INSTALL="${BENCH_INSTALL:-1}"
for a in "$@"; do
  case "$a" in
    --no-install) INSTALL=0 ;;
    *) echo "gpu.sh: unknown argument $a (expected --no-install)" >&2; exit 2 ;;
  esac
done
OUT="${OUT:-benchmarks/results}"
PY="${PYTHON:-python3}"
DEVICE="${BENCH_DEVICE:-gpu}"
CASES="${BENCH_CASES:-gs2_ideal,large,B16384,B50000}"
TESTS="${BENCH_TESTS:-tests/test_golden_chain.py tests/test_sharding.py tests/test_streaming.py}"
TESTS_S="${BENCH_TESTS_S:-150}"
SUITE_BUDGET_S="${BENCH_SUITE_BUDGET_S:-200}"
TIMEOUT_S="${BENCH_TIMEOUT_S:-270}"
BUDGET_GIB="${BENCH_BUDGET_GIB:-96}"
TRACE_CASE="${BENCH_TRACE_CASE:-large}"
TRACE_S="${BENCH_TRACE_S:-60}"
STEM="$DEVICE"
mkdir -p "$OUT"
LOG="$OUT/$STEM.log"
: >"$LOG"
say() { echo "gpu.sh [$((SECONDS - T0)) s]: $*" | tee -a "$LOG" >&2; }

# --- install ---------------------------------------------------------------------------------
if [ "$INSTALL" != 0 ] && compgen -G ".whl/*.whl" >/dev/null; then
  say "installing $(ls .whl/*.whl | wc -l) carried wheel(s) into /tmp/site (offline)"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl 2>&1 | tail -3 | tee -a "$LOG" >&2
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2 PTYCHO_JAX_NO_CACHE=1
# Grow GPU memory on demand, so memory_stats() reports what the stages use, not a preallocated pool.
export XLA_PYTHON_CLIENT_PREALLOCATE=false

has_device() {
  "$PY" - "$1" >>"$LOG" 2>&1 <<'EOF'
import sys
try:
    import jax
    devs = jax.devices(sys.argv[1])
except Exception as e:  # noqa: BLE001
    print(f"gpu.sh: no JAX {sys.argv[1]} device: {type(e).__name__}: {e}")
    sys.exit(1)
print(f"gpu.sh: jax {jax.__version__}, {sys.argv[1]} devices: {[d.device_kind for d in devs]}")
EOF
}

if ! has_device "$DEVICE" && [ "$INSTALL" != 0 ] && [ "$DEVICE" = gpu ]; then
  say "JAX sees no GPU: trying pip install -U 'jax[cuda12]' (90 s limit)"
  timeout 90 "$PY" -m pip install -q -U "jax[cuda12]" 2>&1 | tail -3 | tee -a "$LOG" >&2 || say "pip install failed or timed out"
fi
if ! has_device "$DEVICE"; then
  say "no JAX $DEVICE device here: nothing measured (see $LOG)"
  printf '# GPU run: not done\n\nJAX found no %s device on this machine (log: %s). No figures were taken.\n' "$DEVICE" "$STEM.log" >"$OUT/$STEM-summary.md"
  printf '{"ok": false, "reason": "no JAX %s device"}\n' "$DEVICE" >"$OUT/$STEM-summary.json"
  exit 3
fi
tail -1 "$LOG" >&2
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv 2>&1 | tee -a "$LOG" >&2 || true
fi

# --- tests: golden chain, sharding, streaming on the device (JAX's default backend) -----------
say "tests: $TESTS (limit ${TESTS_S} s)"
if [ "$DEVICE" = cpu ]; then export JAX_PLATFORMS=cpu; fi
PYTEST_EXTRA=()
if ! "$PY" -c "import beartype" 2>/dev/null; then  # pyproject's addopts turn on jaxtyping+beartype checks
  say "beartype missing (carry its wheel in .whl/ for runtime type checks): tests run without them"
  PYTEST_EXTRA=(-o "addopts=-ra")
fi
timeout --signal=TERM --kill-after=10 "$TESTS_S" "$PY" -m pytest -q -x -p no:cacheprovider ${PYTEST_EXTRA[@]+"${PYTEST_EXTRA[@]}"} $TESTS >"$OUT/$STEM-tests.txt" 2>&1
TESTS_RC=$?
say "tests exit $TESTS_RC: $(tail -1 "$OUT/$STEM-tests.txt")"

# --- bench: the cases the GPU targets need; JSON and Markdown after every case ---------------
say "bench: python -m benchmarks --device $DEVICE --cases $CASES (budget ${SUITE_BUDGET_S} s, hard stop ${TIMEOUT_S} s)"
timeout --signal=TERM --kill-after=20 "$TIMEOUT_S" \
  "$PY" -m benchmarks --device "$DEVICE" --cases "$CASES" --out "$OUT" --stem "$STEM" --no-compile-time \
  --time-budget-s "$SUITE_BUDGET_S" --budget-gib "$BUDGET_GIB" --impls jax,jax-resident,jax-engine,upstream-np,ckdtree \
  >/dev/null 2> >(tee -a "$LOG" >&2)
BENCH_RC=$?
say "bench exit $BENCH_RC"

# --- profile: the resident chain under jax.profiler, and the one-pass gather + scale's HLO ----
say "trace: $TRACE_CASE end to end from resident frames, 3 warm calls (limit ${TRACE_S} s) into $OUT/trace"
timeout --signal=TERM --kill-after=10 "$TRACE_S" "$PY" - "$DEVICE" "$TRACE_CASE" "$OUT/trace" <<'EOF' 2>&1 | tee -a "$LOG" >&2
import pathlib, sys, time, warnings
import jax, numpy as np
from benchmarks.plan import build_plan
from benchmarks.stages import Inputs
import ptycho_jax as pj
from ptycho_jax._grouping import gather_and_scale
platform, name, out = sys.argv[1], sys.argv[2], pathlib.Path(sys.argv[3])
out.mkdir(parents=True, exist_ok=True)
warnings.simplefilter("ignore")
dev = jax.devices(platform)[0]
case = next(c for c in build_plan("full", device=platform) if c.name == name)
with jax.default_device(dev):
    inp = Inputs(case, dev)
    raw, params = inp.get("raw_resident"), case.params()
    run = lambda: jax.block_until_ready(pj.run_chain(raw, params).container)
    run()
    jax.profiler.start_trace(str(out))
    t = []
    for _ in range(3):
        t0 = time.perf_counter(); run(); t.append(time.perf_counter() - t0)
    jax.profiler.stop_trace()
    nn = jax.device_put(np.asarray(inp.get("nn"), np.int32), dev)
    hlo = gather_and_scale.lower(raw.device_frames, nn, np.float32(1.5)).compile().as_text()
    (out / "gather_and_scale.hlo.txt").write_text(hlo)
print(f"trace: {name} resident end to end {[f'{x * 1e3:.2f} ms' for x in t]}; files: {sorted(p.name for p in out.rglob('*') if p.is_file())[:6]}")
EOF
say "trace exit ${PIPESTATUS[0]}"

# --- summary: the GPU targets, gather + normalize vs the same-run device copy ---------------
"$PY" - "$OUT/$STEM.json" "$OUT/$STEM-summary" "$TESTS_RC" "$BENCH_RC" "$((SECONDS - T0))" <<'EOF' 2>&1 | tee -a "$LOG" >&2
import json, sys
path, stem, tests_rc, bench_rc, wall = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
try:
    doc = json.load(open(path))
except (OSError, ValueError) as e:
    doc = {"figures": [], "targets": [], "copy_bandwidth": {}, "error": str(e)}
gn = [f for f in doc["figures"] if f["stage"] == "gather_normalize" and f["impl"] == "jax"]
rows = []
for f in sorted(gn, key=lambda f: f["B"]):
    rows.append({"case": f["case"], "B": f["B"], "median_s": f["median_s"], "floor_s": f.get("floor_s"),
                 "fraction_of_copy": (f["floor_s"] / f["median_s"]) if f.get("floor_s") else None,
                 "fraction_of_copy_bandwidth": f.get("fraction_of_copy_bandwidth")})
def fig(case, stage, impl):
    return next((f for f in doc["figures"] if (f["case"], f["stage"], f["impl"]) == (case, stage, impl)), None)
issue20 = []
e2e = fig("large", "end_to_end", "jax-resident")
if e2e:
    mult = e2e["median_s"] / e2e["floor_s"] if e2e.get("floor_s") else None
    issue20.append({"target": "large end to end, frames on the device", "median_s": e2e["median_s"], "floor_s": e2e.get("floor_s"),
                    "floor_multiple": mult, "met": e2e["median_s"] <= 5e-3 and mult is not None and mult <= 3,
                    "goal": "<= 5 ms and <= 3x its copy floor"})
big = [r for r in rows if r["B"] >= 16384 and r["fraction_of_copy"]]
if big:
    best = max(big, key=lambda r: r["B"])
    issue20.append({"target": f"gather + normalize vs a device copy, B = {best['B']}", "fraction": best["fraction_of_copy"],
                    "met": best["fraction_of_copy"] >= 0.6, "goal": ">= 60 %"})
h2d_bw = doc.get("copy_bandwidth", {}).get("h2d")
for f in (f for f in doc["figures"] if f["stage"] == "h2d" and f["impl"] == "jax-resident"):
    moved = f["M"] * f["N"] ** 2 * 4
    issue20.append({"target": f"{f['case']}: the one host -> device transfer of the frames", "median_s": f["median_s"],
                    "gbps": moved / f["median_s"] / 1e9, "measured_h2d_gbps": h2d_bw["gbps"] if h2d_bw else None,
                    "met": None, "goal": "reported apart against the measured bandwidth"})
summary = {"ok": tests_rc == 0 and bench_rc == 0, "tests_rc": tests_rc, "bench_rc": bench_rc, "wall_s": wall,
           "gather_normalize_vs_device_copy": rows, "issue20": issue20, "targets": doc.get("targets", []),
           "copy_bandwidth": doc.get("copy_bandwidth", {})}
json.dump(summary, open(stem + ".json", "w"), indent=1)
lines = ["# GPU run summary", "", f"- tests exit {tests_rc}, bench exit {bench_rc}, {wall} s wall", "",
         "## gather + normalize vs a device copy of the same bytes (same run; target >= 60 %)", "",
         "| case | B | gather+normalize | copy of its bytes | fraction of copy |", "| --- | --- | --- | --- | --- |"]
for r in rows:
    frac = f"{100 * r['fraction_of_copy']:.0f} %" if r["fraction_of_copy"] else "—"
    floor = f"{r['floor_s'] * 1e3:.3f} ms" if r["floor_s"] else "—"
    lines.append(f"| {r['case']} | {r['B']} | {r['median_s'] * 1e3:.3f} ms | {floor} | {frac} |")
lines += ["", "## Issue 20 targets", ""]
for t in issue20:
    parts = [f"{k} {v * 1e3:.3f} ms" if k.endswith("_s") else f"{k} {v:.3g}" for k, v in t.items() if isinstance(v, float)]
    verdict = "reported" if t["met"] is None else ("met" if t["met"] else "missed")
    lines.append(f"- {t['target']}: " + ", ".join(parts) + f" (goal {t['goal']}; {verdict})")
lines += ["", "## Targets", ""] + [f"- {t['target']}: {t['detail']} (goal {t['goal']}, {'met' if t['met'] else 'missed'})" for t in doc.get("targets", [])]
open(stem + ".md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
ls -l "$OUT" >&2
[ "$TESTS_RC" -eq 0 ] && [ "$BENCH_RC" -eq 0 ]
