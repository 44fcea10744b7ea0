"""Shared test setup: tests/ importable (helper modules `_golden`, `_invariants`) from every subfolder, and
the repository root, where the `benchmarks` suite lives (it is not part of the installed package); the
CLI's caches in a folder of the test session."""

import pathlib
import sys

import pytest

TESTS = pathlib.Path(__file__).parent
for path in (TESTS, TESTS.parent):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))


@pytest.fixture(autouse=True, scope="session")
def _cache_root_of_the_session(tmp_path_factory):
    """The CLI's caches (compiled programs, simulated datasets) in a folder of this session, not the
    user's: tests that run `ptycho-jax` in-process would otherwise fill `~/.cache/ptycho-jax`."""
    mp = pytest.MonkeyPatch()
    mp.setenv("PTYCHO_JAX_CACHE_DIR", str(tmp_path_factory.mktemp("ptycho-jax-cache")))
    yield
    mp.undo()
