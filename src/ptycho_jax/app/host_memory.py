"""Keep freed host memory in the process heap so that XLA:CPU reuses it instead of page-faulting.

Why: XLA:CPU allocates every output buffer with glibc `malloc`. A block above glibc's mmap
threshold (up to 32 MiB, dynamic) is a fresh `mmap`, and `free` hands it back with `munmap`; the
next call's output is a fresh mapping again, faulted in 4 KiB at a time. Measured on a 2-core
machine: a jitted `x * 2` with a 328 MB output takes 80,000 minor faults and 74 ms, the same
multiply into a reused buffer 13-21 ms. With the three `mallopt` settings below, freed blocks stay
in the heap and the next call reuses them without a fault; the large benchmark case went from
1.82 s to 0.67 s end to end (patches 0.91 -> 0.35 s, container 0.51 -> 0.19 s).

The settings (Linux with glibc only): `M_MMAP_MAX = 0` (no block is a private mapping),
`M_TRIM_THRESHOLD = SIZE_MAX` (the heap top is never given back) and `M_ARENA_MAX = 1` (one
arena: XLA's worker threads share the main heap rather than each growing its own). They must be
set before `numpy` or `jax` is imported: glibc fixes its arena limit at the first contention
between threads, and XLA's threads start with jax, so set any later the settings do nothing for
XLA (measured). `reuse_freed_host_memory` therefore refuses, changing nothing, once `numpy` or
`jax` is in `sys.modules`. The environment-variable equivalent, for any process:
`GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.arena_max=1:glibc.malloc.trim_threshold=4611686018427387904`.

The cost: the process keeps its peak heap; its resident memory does not shrink when arrays are
freed (it is reused by the next allocation, never returned to the system before exit).

Who calls it: the `ptycho-jax` console script (`_launch.main`, before anything heavy is imported)
and `python -m benchmarks`. The library never calls it on import. A program using the library can
call it first thing, before importing numpy or jax:

    import ptycho_jax
    ptycho_jax.reuse_freed_host_memory()
    import jax, numpy  # and the rest of the program

`PTYCHO_JAX_NO_MALLOC_TUNING=1` (any value but "", "0", "false", "no") turns it off.

Standard library only: importing this module imports neither numpy nor jax.
"""

import ctypes
import dataclasses
import logging
import os
import sys
from collections.abc import Mapping

NO_MALLOC_TUNING_ENV = "PTYCHO_JAX_NO_MALLOC_TUNING"

# mallopt parameter numbers (glibc's malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8

# (name, parameter, value). glibc converts the int -1 of M_TRIM_THRESHOLD to size_t: SIZE_MAX,
# a threshold the heap top never reaches (the C int of mallopt cannot say more than 2 GiB).
_SETTINGS = (
    ("arena_max", _M_ARENA_MAX, 1),
    ("mmap_max", _M_MMAP_MAX, 0),
    ("trim_threshold", _M_TRIM_THRESHOLD, -1),
)

# Imported, these have started (or will start) the threads whose arenas the settings must precede.
_TOO_LATE_AFTER = ("numpy", "jax", "jaxlib")

GLIBC_TUNABLES = "glibc.malloc.mmap_max=0:glibc.malloc.arena_max=1:glibc.malloc.trim_threshold=4611686018427387904"
"""The same settings for a process started with them (`GLIBC_TUNABLES` is read at process start)."""

APPLIED_NOTE = "freed memory reused (mmap_max=0, arena_max=1, no trim)"

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class HostMemorySetup:
    """What `reuse_freed_host_memory` did: `applied`, and `reason` in words either way."""

    applied: bool
    reason: str

    def describe(self) -> str:
        """One line for logs and the benchmark notes: the settings, or `default (why)`."""
        return APPLIED_NOTE if self.applied else f"default ({self.reason})"


_setup: HostMemorySetup | None = None


def tuning_disabled(environ: Mapping[str, str] = os.environ) -> bool:
    """True when `PTYCHO_JAX_NO_MALLOC_TUNING` asks for glibc's default allocator behaviour."""
    return environ.get(NO_MALLOC_TUNING_ENV, "").strip().lower() not in ("", "0", "false", "no")


def _glibc() -> ctypes.CDLL | None:
    """The process's C library when it is glibc (it alone has `gnu_get_libc_version`), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 (an AttributeError means: not glibc)
        libc.mallopt  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


def _apply(environ: Mapping[str, str]) -> HostMemorySetup:
    if tuning_disabled(environ):
        return HostMemorySetup(False, f"{NO_MALLOC_TUNING_ENV} is set")
    late = [m for m in _TOO_LATE_AFTER if m in sys.modules]
    if late:
        return HostMemorySetup(
            False,
            f"{' and '.join(late)} already imported: too late for XLA's threads; call "
            "reuse_freed_host_memory() before importing numpy or jax",
        )
    libc = _glibc()
    if libc is None:
        return HostMemorySetup(False, f"not glibc (platform {sys.platform}): nothing to tune")
    libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    libc.mallopt.restype = ctypes.c_int
    done: list[str] = []
    for name, param, value in _SETTINGS:
        if libc.mallopt(param, value) != 1:
            already = f" ({', '.join(done)} already set)" if done else ""
            return HostMemorySetup(False, f"mallopt({name}) failed{already}")
        done.append(name)
    return HostMemorySetup(True, "mallopt: mmap_max=0, arena_max=1, trim_threshold=SIZE_MAX")


def reuse_freed_host_memory(environ: Mapping[str, str] = os.environ) -> HostMemorySetup:
    """Tune glibc malloc so freed blocks stay in the heap and are reused (see the module docstring).

    Call it first thing in the program, before numpy or jax is imported; it refuses otherwise
    (`applied=False`, `reason` says why), and off Linux glibc, and when `PTYCHO_JAX_NO_MALLOC_TUNING`
    is set. Idempotent: a second call returns the first call's result and changes nothing.
    """
    global _setup
    if _setup is None:
        _setup = _apply(environ)
    return _setup


def last_setup() -> HostMemorySetup | None:
    """The result of this process's `reuse_freed_host_memory` call, or None when it was never called."""
    return _setup


def log_last_setup() -> None:
    """Log the setup at INFO once logging is configured (`ptycho-jax -v` shows it); nothing if never called."""
    if _setup is not None:
        logger.info("host malloc: %s", _setup.describe())


def release_freed_host_memory() -> bool:
    """Give the heap's free pages back to the system now (glibc `malloc_trim(0)`); True if any went back.

    The counterpart of `reuse_freed_host_memory` for a long-lived process between phases of
    different sizes (the benchmark suite calls it between stages): live arrays stay, the next
    allocations fault their pages in again. False, doing nothing, off glibc.
    """
    libc = _glibc()
    if libc is None:
        return False
    libc.malloc_trim.argtypes = (ctypes.c_size_t,)
    libc.malloc_trim.restype = ctypes.c_int
    return bool(libc.malloc_trim(0))
