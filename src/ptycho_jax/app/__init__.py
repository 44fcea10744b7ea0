"""The application layer: the `ptycho-jax` command line (its flags, error guard and launch), the
compile and dataset caches, host-memory tuning, and the report's files and figure.

It sits on the harness (`ptycho_jax.crosscheck`) and the core; nothing below imports it
(`lint-imports`, the `layers` contract in pyproject.toml). Kept empty: `launch` must import the
standard library only until the host allocator is tuned.
"""
