"""The `ptycho-jax` console script's entry point: tune the host allocator, then run the CLI.

Standard library only at import: `reuse_freed_host_memory` must run before numpy or jax is
imported (see `_host_memory`), so `_cli` (which imports them) is imported only after it.
`_cli.main` logs the result once logging is configured (`ptycho-jax -v`).
"""

from collections.abc import Sequence

from ._host_memory import reuse_freed_host_memory


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `ptycho-jax` console script; returns the exit code."""
    reuse_freed_host_memory()  # PTYCHO_JAX_NO_MALLOC_TUNING=1 turns it off
    from . import _cli

    return _cli.main(argv)
