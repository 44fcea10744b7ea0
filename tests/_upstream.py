"""Shared by the tests that drive the real upstream (`../shared/upstream`) in its environment."""

import os
import pathlib

import pytest
from _golden import SHARED as GOLDEN

from ptycho_jax.crosscheck import upstream as up

ROOT = pathlib.Path(__file__).resolve().parents[1]


def require_upstream() -> None:
    """Skip (locally) or fail (CI: PTYCHO_REQUIRE_UPSTREAM=1) when upstream cannot run here."""
    why = up.availability()
    if why is None and not (GOLDEN / "gs2_ideal" / "stage1_grouping.npz").is_file():
        why = f"no shared goldens at {GOLDEN}"
    if why is None:
        return
    if os.environ.get("PTYCHO_REQUIRE_UPSTREAM") == "1":
        pytest.fail(f"PTYCHO_REQUIRE_UPSTREAM=1 but {why}")
    pytest.skip(why)
