"""Compile once: JAX's persistent compilation cache for the command line.

The console script turns the cache on before its first jitted call, so a second run of the same
command loads its compiled programs from disk instead of compiling them again. The library itself
never changes JAX's configuration; only the CLI calls `enable_compile_cache`.

Where: `jax/` in the cache root (`cache_root`: `$PTYCHO_JAX_CACHE_DIR` if set, else
`$XDG_CACHE_HOME/ptycho-jax`, else `~/.cache/ptycho-jax`), beside the CLI's other cache, the
simulated datasets (`_dataset_cache`). Off: `PTYCHO_JAX_NO_CACHE=1` (any value but "", "0",
"false", "no"), which turns off both.
"""

import logging
import os
import pathlib
from collections.abc import Mapping

import jax

logger = logging.getLogger(__name__)

NO_CACHE_ENV = "PTYCHO_JAX_NO_CACHE"
CACHE_DIR_ENV = "PTYCHO_JAX_CACHE_DIR"
# Cache every program the report compiles: the chain's programs compile in 5-100 ms each and
# together cost about as much as the simulation's one large program.
MIN_COMPILE_TIME_SECS = 0.0
MIN_ENTRY_SIZE_BYTES = -1


def cache_disabled(environ: Mapping[str, str] = os.environ) -> bool:
    """True when `PTYCHO_JAX_NO_CACHE` asks for no persistent cache."""
    return environ.get(NO_CACHE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def cache_root(environ: Mapping[str, str] = os.environ) -> pathlib.Path:
    """`$PTYCHO_JAX_CACHE_DIR`, else `$XDG_CACHE_HOME/ptycho-jax`, else `~/.cache/ptycho-jax`."""
    explicit = environ.get(CACHE_DIR_ENV, "").strip()
    if explicit:
        return pathlib.Path(explicit).expanduser()
    xdg = environ.get("XDG_CACHE_HOME", "").strip()
    base = pathlib.Path(xdg).expanduser() if xdg else pathlib.Path.home() / ".cache"
    return base / "ptycho-jax"


def default_cache_dir(environ: Mapping[str, str] = os.environ) -> pathlib.Path:
    """The compiled programs' folder: `jax/` in `cache_root(environ)`."""
    return cache_root(environ) / "jax"


def enable_compile_cache(
    cache_dir: str | os.PathLike | None = None, *, environ: Mapping[str, str] = os.environ
) -> pathlib.Path | None:
    """Turn on JAX's persistent compilation cache in `cache_dir` (default `default_cache_dir()`).

    Returns the directory in use, or None when the cache stays off: `PTYCHO_JAX_NO_CACHE` is set,
    or the directory cannot be created (a warning says why; the run goes on uncached).
    """
    if cache_disabled(environ):
        logger.info("persistent compilation cache off (%s is set)", NO_CACHE_ENV)
        return None
    path = pathlib.Path(cache_dir) if cache_dir is not None else default_cache_dir(environ)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        logger.warning("persistent compilation cache off: cannot create %s (%s)", path, e)
        return None
    if not os.access(path, os.W_OK):
        logger.warning("persistent compilation cache off: %s is not writable", path)
        return None
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_TIME_SECS)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", MIN_ENTRY_SIZE_BYTES)
    logger.info("persistent compilation cache in %s", path)
    return path
