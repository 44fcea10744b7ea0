"""Shared test setup: make tests/ importable (helper modules `_golden`, `_invariants`) from every subfolder."""

import pathlib
import sys

TESTS = pathlib.Path(__file__).parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))
