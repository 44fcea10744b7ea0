"""The machine a run measures: hardware and versions, the code's git state, memory probes, copy bandwidth."""

import functools as ft
import os
import pathlib
import platform
import re
import resource
import statistics
import subprocess
import time
import warnings
from typing import Any

import numpy as np

from ptycho_jax.app.host_memory import last_setup


def read_proc(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def machine_description(device) -> dict[str, Any]:
    """CPU model, cores, memory, the JAX device and its kind."""
    cpuinfo = read_proc("/proc/cpuinfo")
    m = re.search(r"model name\s*:\s*(.+)", cpuinfo)
    meminfo = read_proc("/proc/meminfo")
    mt = re.search(r"MemTotal:\s+(\d+) kB", meminfo)
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        usable = os.cpu_count()
    stats = device_memory(device)
    return {
        "cpu_model": m.group(1).strip() if m else platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        "memory_bytes": int(mt.group(1)) * 1024 if mt else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "device": str(device),
        "device_platform": device.platform,
        "device_kind": device.device_kind,
        "device_memory_bytes": None if stats is None else stats.get("bytes_limit"),
        "host_malloc": host_malloc_note(),
    }


def host_malloc_note() -> str:
    """How this process's glibc malloc treats freed memory (`python -m benchmarks` tunes it at start)."""
    setup = last_setup()
    return (
        "default (not tuned: the bench was not started by python -m benchmarks)"
        if setup is None
        else setup.describe()
    )


def versions(*, with_tf: bool) -> dict[str, str | None]:
    import jax
    import jaxlib
    import scipy

    from ptycho_jax import __version__

    out = {
        "ptycho_jax": __version__,
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
    }
    try:
        import equinox

        out["equinox"] = equinox.__version__
    except (ImportError, AttributeError):  # pragma: no cover
        out["equinox"] = None
    out["tensorflow"] = None
    if with_tf:
        try:
            out["tensorflow"] = tf_module().__version__
        except ImportError:
            pass
    return out


def git_description() -> dict[str, Any]:
    """HEAD's SHA and whether the code (src/, crosscheck/) differs from it, untracked files included (read-only git calls).

    The environment variable BENCH_GIT_SHA overrides the SHA (a tree copied without `.git`).
    """
    root = pathlib.Path(__file__).resolve().parents[1]
    env_sha = os.environ.get("BENCH_GIT_SHA")

    def git(*a):
        return subprocess.run(
            ["git", *a], cwd=root, capture_output=True, text=True, timeout=20, check=True
        ).stdout.strip()

    try:
        sha = git("rev-parse", "HEAD")
        dirty = bool(
            git("status", "--porcelain", "--", "src", "crosscheck", "benchmarks")
        )  # untracked code counts
    except (OSError, subprocess.SubprocessError):
        return {"sha": env_sha or "unknown", "dirty": None}
    return {"sha": env_sha or sha, "dirty": dirty}


class HostMemory:
    """Peak resident memory of this process around a call (Linux: VmHWM, reset through /proc/self/clear_refs)."""

    def __init__(self):
        self.resettable = False
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.resettable = self._status("VmHWM") is not None
        except OSError:
            pass

    @staticmethod
    def _status(key: str) -> int | None:
        m = re.search(key + r":\s+(\d+) kB", read_proc("/proc/self/status"))
        return int(m.group(1)) * 1024 if m else None

    def rss(self) -> int:
        v = self._status("VmRSS")
        return v if v is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def reset(self) -> int:
        """Reset the peak to the current RSS (where possible); returns the current RSS."""
        if self.resettable:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        return self.rss()

    def peak(self) -> int | None:
        """Peak RSS since the last reset (None where the peak cannot be reset)."""
        return self._status("VmHWM") if self.resettable else None


def device_memory(device) -> dict | None:
    try:
        return device.memory_stats()
    except Exception:  # noqa: BLE001 - backends without memory stats raise various errors
        return None


def measure_copy_bandwidth(device, *, nbytes: int, repeats: int = 10) -> dict[str, Any]:
    """Streaming bandwidth of the device, counting bytes read + written, two ways.

    `fresh`: a jitted `x + 1` into a new buffer (what every stage that returns an array pays; on
    CPU this includes the kernel's first-touch page faults of XLA's fresh allocation).
    `in_place`: the same with the input donated, so the output reuses its buffer (the memory
    system's streaming rate). `gbps` is the larger, the limit every figure is compared with.
    """
    import jax
    import jax.numpy as jnp

    n = nbytes // 4
    moved = 2 * n * 4

    def timed(step):
        step()
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            step()
            ts.append(time.perf_counter() - t0)
        return {
            "median_s": statistics.median(ts),
            "min_s": min(ts),
            "max_s": max(ts),
            "gbps": moved / statistics.median(ts) / 1e9,
        }

    x = jax.device_put(jnp.arange(n, dtype=jnp.float32), device)
    fresh_fn = jax.jit(lambda v: v + 1.0)
    fresh = timed(lambda: fresh_fn(x).block_until_ready())
    donated_fn = jax.jit(lambda v: v + 1.0, donate_argnums=0)
    state = {"x": x + 0.0}

    def donated():
        state["x"] = donated_fn(state["x"])
        state["x"].block_until_ready()

    with warnings.catch_warnings():
        warnings.simplefilter(
            "ignore"
        )  # backends that cannot donate say so; the figure is then a fresh copy
        in_place = timed(donated)
    return {
        "bytes": moved,
        "fresh": fresh,
        "in_place": in_place,
        "gbps": max(fresh["gbps"], in_place["gbps"]),
    }


def measure_h2d_bandwidth(device, *, nbytes: int, repeats: int = 5) -> dict[str, Any]:
    """Host -> device bandwidth: `jax.device_put` of a host float32 array, bytes moved once.

    The host array starts 4 bytes past an aligned address, so JAX's CPU client copies it instead
    of aliasing it: on a CPU device this is a host memcpy into a fresh buffer; on an accelerator
    the transfer over the link.
    """
    import jax

    n = nbytes // 4
    host = np.empty(n + 1, np.float32)[1:]
    host[:] = 1.0
    ts = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        jax.device_put(host, device).block_until_ready()
        ts.append(time.perf_counter() - t0)
    warm = ts[1:]
    med = statistics.median(warm)
    return {
        "bytes": n * 4,
        "median_s": med,
        "min_s": min(warm),
        "max_s": max(warm),
        "gbps": n * 4 / med / 1e9,
    }


@ft.cache
def tf_module():
    import tensorflow as tf

    return tf
