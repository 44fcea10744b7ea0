"""Stand-in for the upstream PtychoPINN `ptycho` package (module layout and global `params.cfg` only).

Used by tests/test_crosscheck_upstream.py to prove that the `upstream` crosscheck adapter sets the
`params.cfg` keys upstream reads and restores the previous dict (and the global NumPy RNG state)
afterwards, also on error. The numerics delegate to `crosscheck.tf_reference`; every function
that upstream makes read `params.cfg` reads it here too, and `SEEN` records what it read.
"""

SEEN: list[dict] = []
"""Snapshots of `params.cfg` taken by each fake upstream call (test instrumentation)."""
