"""Shared test setup: tests/ importable (helper modules `_golden`, `_invariants`) from every subfolder, and
the repository root, where the `benchmarks` suite lives (it is not part of the installed package)."""

import pathlib
import sys

TESTS = pathlib.Path(__file__).parent
for path in (TESTS, TESTS.parent):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
