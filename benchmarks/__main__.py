"""`python -m benchmarks [options]`: run the benchmark suite (see `python -m benchmarks --help`).

The bench process tunes glibc malloc the way the `ptycho-jax` console script does, before numpy or
jax is imported (`ptycho_jax.app.host_memory`; `PTYCHO_JAX_NO_MALLOC_TUNING=1` turns it off); the
machine notes say which allocator behaviour the run measured.
"""

import sys

from ptycho_jax.app.host_memory import reuse_freed_host_memory

reuse_freed_host_memory()

from .cli import main  # noqa: E402 (numpy and jax only after the allocator is set up)

sys.exit(main())
