"""Simulated datasets cached on disk for the command line: simulate a scenario once.

A second `ptycho-jax report` on the same scenario loads the simulated scan it needs instead of
simulating it again (the chain, the statistics and the figure are computed on every run). Only
the CLI uses this cache; the library's `simulate` always simulates.

An entry is keyed by everything that decides its bits: what was simulated (the scenario, the
noise seed, the half), the package's own source (every `.py` file of `ptycho_jax`, so an edited
checkout never reads an older simulation), the versions of Python, NumPy, SciPy, JAX and jaxlib,
the JAX backend and device, the host CPU's feature flags (XLA:CPU compiles for them), JAX's
numerics settings and the `JAX_*` / `XLA_*` environment variables. Each entry holds its key and a
SHA-256 of its content; both are checked on load, and an entry failing either is deleted and the
scenario simulated again. At most `MAX_ENTRIES` entries are kept, the least recently used go first.

Where: `datasets/` in the cache root (`_compile_cache.cache_root`). Off: `PTYCHO_JAX_NO_CACHE=1`,
or `--no-dataset-cache` on the command line.
"""

import functools
import hashlib
import json
import logging
import os
import pathlib
import platform
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from .._atomic import write_npz_atomic
from .._rawdata import NPZ_KEYS, RawData

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
"""Bumped whenever what an entry holds, or how, changes."""
MAX_ENTRIES = 8
"""Entries kept in the folder (the default report's is about 27 MB)."""
_ARRAY_FIELDS = (*NPZ_KEYS, "Y")  # every array field of RawData
_JAX_NUMERICS = (
    "jax_enable_x64",
    "jax_default_prng_impl",
    "jax_threefry_partitionable",
    "jax_default_matmul_precision",
)


def dataset_cache_dir(environ: Mapping[str, str] = os.environ) -> pathlib.Path:
    """`datasets/` in the cache root (`$PTYCHO_JAX_CACHE_DIR`, else the XDG or home cache folder)."""
    from .compile_cache import cache_root

    return cache_root(environ) / "datasets"


@functools.cache
def source_digest() -> str:
    """SHA-256 over the relative path and content of every `.py` file of the installed package."""
    root = pathlib.Path(__file__).resolve().parent
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(path.relative_to(root).as_posix().encode() + b"\0")
        h.update(path.read_bytes() + b"\0")
    return h.hexdigest()


def _cpu_flags_digest() -> str:
    """SHA-256 of the CPU's feature flags (`/proc/cpuinfo`), else of `platform.processor()`."""
    text = platform.processor()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            flags = next((ln for ln in f if ln.startswith(("flags", "Features"))), None)
        text = flags or text
    except OSError:
        pass
    return hashlib.sha256(text.encode()).hexdigest()


def dataset_key(what: Mapping[str, Any], environ: Mapping[str, str] = os.environ) -> dict[str, Any]:
    """The key document of the dataset `what` describes (plain JSON values) in this environment.

    Args:
        what: What was simulated, e.g. `{"call": "simulate", "scenario": ..., "noise_seed": ...,
            "split": "test"}`; its values must be plain JSON.
        environ: The environment whose `JAX_*` / `XLA_*` variables enter the key.
    """
    import importlib.metadata

    import jax
    import jaxlib

    device = jax.devices()[0]
    try:
        scipy_version = importlib.metadata.version("scipy")
    except importlib.metadata.PackageNotFoundError:
        scipy_version = None
    return {
        "format": FORMAT_VERSION,
        "what": dict(what),
        "source_sha256": source_digest(),
        "versions": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "scipy": scipy_version,
            "jax": jax.__version__,
            "jaxlib": jaxlib.__version__,
        },
        "backend": {
            "platform": device.platform,
            "device_kind": device.device_kind,
            "platform_version": device.client.platform_version,
            "machine": platform.machine(),
            "cpu_flags_sha256": _cpu_flags_digest(),
        },
        "jax_config": {name: str(getattr(jax.config, name, None)) for name in _JAX_NUMERICS},
        "environment": {k: environ[k] for k in sorted(environ) if k.startswith(("JAX_", "XLA_"))},
    }


def _key_text(key: Mapping[str, Any]) -> str:
    return json.dumps(key, sort_keys=True, separators=(",", ":"))


def entry_path(directory: str | os.PathLike, key: Mapping[str, Any]) -> pathlib.Path:
    """`<directory>/<scenario name>-<24 hex digits of the key's SHA-256>.npz`."""
    name = str(key.get("what", {}).get("scenario", {}).get("name", "dataset"))
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:40] or "dataset"
    digest = hashlib.sha256(_key_text(key).encode()).hexdigest()[:24]
    return pathlib.Path(directory) / f"{name}-{digest}.npz"


def _content_digest(arrays: Mapping[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}:{a.dtype.str}:{a.shape}\0".encode())
        h.update(memoryview(a).cast("B") if a.size else b"")
    return h.hexdigest()


def _entry_arrays(raw: RawData) -> dict[str, np.ndarray]:
    arrays = {k: getattr(raw, k) for k in _ARRAY_FIELDS if getattr(raw, k) is not None}
    arrays["_metadata"] = np.array(json.dumps(raw.metadata))
    arrays["_diff3d_source_dtype"] = np.array(raw.diff3d_source_dtype)
    if raw.norm_Y_I is not None:
        arrays["_norm_Y_I"] = np.array(raw.norm_Y_I, np.float64)
    return arrays


def store_dataset(
    directory: str | os.PathLike, key: Mapping[str, Any], raw: RawData
) -> pathlib.Path | None:
    """Write `raw` under `key` (atomically), then keep only the `MAX_ENTRIES` newest entries.

    Returns the entry's path, or None when it could not be written (a warning says why; the run
    goes on without it).
    """
    path = entry_path(directory, key)
    try:
        arrays = _entry_arrays(raw)
        digest = _content_digest(arrays)
        arrays.update(_key=np.array(_key_text(key)), _digest=np.array(digest))
        write_npz_atomic(path, arrays)
    except (OSError, TypeError, ValueError) as e:  # TypeError: metadata that is not plain JSON
        logger.warning("dataset cache: cannot write %s (%s); going on without it", path, e)
        return None
    _evict(pathlib.Path(directory), keep=MAX_ENTRIES)
    return path


def load_dataset(directory: str | os.PathLike, key: Mapping[str, Any]) -> RawData | None:
    """The RawData stored under `key`, or None when there is none.

    An entry that cannot be read, holds another key or fails its content digest is deleted (a
    warning says why) and None returned. A hit marks the entry as recently used.
    """
    path = entry_path(directory, key)
    if not path.is_file():
        return None
    try:
        raw, problem = _read_entry(path, _key_text(key))
    except Exception as e:  # any failure to read the entry back: simulate again
        raw, problem = None, f"{type(e).__name__}: {e}"
    if raw is None:
        logger.warning("dataset cache: dropping %s (%s); simulating again", path, problem)
        _remove(path)
        return None
    try:
        os.utime(path)  # recently used (eviction goes by modification time)
    except OSError:
        pass
    return raw


def _read_entry(path: pathlib.Path, key_text: str) -> tuple[RawData | None, str]:
    """`(raw, "")`, or `(None, why not)` for an entry that holds another key or other content."""
    with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as npz:  # our handle: never leaked
        arrays = {name: npz[name] for name in npz.files}
    stored_key, digest = str(arrays.pop("_key")), str(arrays.pop("_digest"))
    if stored_key != key_text:
        return None, "it holds another key"
    if _content_digest(arrays) != digest:
        return None, "its content does not match its SHA-256"
    metadata = json.loads(str(arrays.pop("_metadata")))
    norm = arrays.pop("_norm_Y_I", None)
    source = str(arrays.pop("_diff3d_source_dtype", "float32"))
    raw = RawData(
        **arrays,
        norm_Y_I=None if norm is None else float(norm),
        metadata=metadata,
        diff3d_source_dtype=source,
    )
    return raw, ""


def _remove(path: pathlib.Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


def _evict(directory: pathlib.Path, *, keep: int) -> None:
    """Delete all but the `keep` most recently used entries (another process may race us: ignored)."""
    entries = []
    for path in directory.glob("*.npz"):
        try:
            entries.append((path.stat().st_mtime_ns, path))
        except OSError:
            continue
    for _, path in sorted(entries, reverse=True)[keep:]:
        _remove(path)
