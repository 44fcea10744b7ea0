#!/usr/bin/env bash
# Run the benchmark suite on a lent GPU machine (H100/H200) and write gpu.json, gpu.md, gpu.png
# and gpu.log to $OUT, in under 8 minutes.
#
# The device image has JAX with CUDA, NumPy, SciPy, equinox, jaxtyping and matplotlib, but no
# TensorFlow and no network: nothing is installed from an index. The package runs from this source
# tree (PYTHONPATH); wheels carried in .whl/ (see benchmarks/README.md) are installed offline first.
# TensorFlow cannot travel (its wheel is far over the 64 MiB carry limit), so the GPU run has no
# tf-ref column: its A/B ratios are upstream-np (patches) and cKDTree (neighbours), and every GPU
# figure is stated against the copy bandwidth measured in the same run.
#
#   on the device:   bash benchmarks/gpu.sh                    (OUT is set there)
#   dry run on CPU:  BENCH_DEVICE=cpu BENCH_PRESET=--tiny OUT=/tmp/bench bash benchmarks/gpu.sh
#
# Environment: OUT (default benchmarks/results), PYTHON (default python3), BENCH_DEVICE (gpu),
# BENCH_PRESET ("" = full suite, --quick, --tiny), BENCH_SUITE_BUDGET_S (330: no new case starts
# after this), BENCH_TIMEOUT_S (450: hard stop), BENCH_BUDGET_GIB (96: host memory for the size
# cuts), BENCH_GIT_SHA (recorded when .git is absent).
set -euo pipefail
cd "$(dirname "$0")/.."

OUT="${OUT:-benchmarks/results}"
PY="${PYTHON:-python3}"
DEVICE="${BENCH_DEVICE:-gpu}"
PRESET="${BENCH_PRESET:-}"
SUITE_BUDGET_S="${BENCH_SUITE_BUDGET_S:-330}"
BUDGET_GIB="${BENCH_BUDGET_GIB:-96}"  # host memory for the size cuts (the device machine has 128 GiB)
TIMEOUT_S="${BENCH_TIMEOUT_S:-450}"
STEM="${DEVICE}${PRESET:+-${PRESET#--}}"
mkdir -p "$OUT"
LOG="$OUT/$STEM.log"
: >"$LOG"
say() { echo "gpu.sh: $*" | tee -a "$LOG" >&2; }

# --- install: offline wheels if carried, then the source tree on the path -------------------
if compgen -G ".whl/*.whl" >/dev/null; then
  say "installing $(ls .whl/*.whl | wc -l) carried wheel(s) into /tmp/site"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
# Grow GPU memory on demand, so memory_stats() reports what the stages use, not a preallocated pool.
export XLA_PYTHON_CLIENT_PREALLOCATE=false

# --- check: imports, versions, the device ---------------------------------------------------
"$PY" - "$DEVICE" <<'EOF' 2>&1 | tee -a "$LOG" >&2
import importlib, sys
missing = []
for name in ("jax", "jaxlib", "numpy", "scipy", "equinox", "jaxtyping", "matplotlib", "ptycho_jax"):
    try:
        m = importlib.import_module(name)
        print(f"gpu.sh: {name} {getattr(m, '__version__', '?')}")
    except ImportError as e:
        missing.append(f"{name} ({e})")
if missing:
    sys.exit("gpu.sh: missing packages: " + ", ".join(missing) + "; carry their wheels in .whl/ (benchmarks/README.md)")
import jax
want = sys.argv[1]
try:
    devs = jax.devices(want)
except RuntimeError as e:
    sys.exit(f"gpu.sh: no JAX {want} device: {e}")
print(f"gpu.sh: {want} devices: {[d.device_kind for d in devs]}")
EOF
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv 2>&1 | tee -a "$LOG" >&2 || true
fi

# --- run: the suite stops starting cases after SUITE_BUDGET_S and writes after every case -----
say "running: ptycho-jax bench --device $DEVICE $PRESET --out $OUT --stem $STEM (budget ${SUITE_BUDGET_S} s, hard stop ${TIMEOUT_S} s)"
set +e
timeout --signal=TERM --kill-after=20 "$TIMEOUT_S" \
  "$PY" -m ptycho_jax._bench --device "$DEVICE" --out "$OUT" --stem "$STEM" \
  --time-budget-s "$SUITE_BUDGET_S" --budget-gib "$BUDGET_GIB" $PRESET 2> >(tee -a "$LOG" >&2)
rc=$?
set -e
if [ "$rc" -ne 0 ]; then
  say "bench exited with $rc; the JSON and Markdown written after the last complete case are in $OUT"
fi
ls -l "$OUT" >&2
exit "$rc"
