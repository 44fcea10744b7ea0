"""Shared test setup: runtime type checking of the package, tests/ importable (helper modules `_golden`, `_invariants`) from every subfolder, and
the repository root, where the `benchmarks` suite lives (it is not part of the installed package); the
CLI's caches in a folder of the test session."""

import pathlib
import sys

import pytest

TESTS = pathlib.Path(__file__).parent
SRC = TESTS.parent / "src" / "ptycho_jax"

# Runtime type checking of the core's and the application's jaxtyping annotations with beartype,
# on for every test run: jaxtyping's import hook wraps each function of those modules, so a wrong
# argument type fails at the call. Installed here, before any test module imports ptycho_jax. The
# harness (`ptycho_jax.crosscheck`: Keras layers, TF and torch glue) is left out, as it always
# was: the hook's wrapping breaks Keras's layer construction. (jaxtyping's own pytest option
# takes package prefixes only, and `ptycho_jax` would include the harness.)
from jaxtyping import install_import_hook  # noqa: E402

CHECKED_MODULES = [
    *sorted(
        f"ptycho_jax.{p.stem}" for p in SRC.glob("_*.py") if p.stem not in ("__init__", "__main__")
    ),
    "ptycho_jax.internal",
    "ptycho_jax.app",
]
install_import_hook(CHECKED_MODULES, "beartype.beartype")
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
