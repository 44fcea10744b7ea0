"""pytest plugin: `assert_backends_match` and the `crosscheck_match` fixture (specs/crosscheck.md §8).

Import `assert_backends_match` from here (or `crosscheck`), or load the fixture with
`pytest -p ptycho_jax.crosscheck.pytest_plugin` / `pytest_plugins = ["ptycho_jax.crosscheck.pytest_plugin"]`, so a
ported backend's own test suite can write::

    def test_my_port(crosscheck_match):
        crosscheck_match("my_port.backend:Backend", "tf", "data.npz")
"""

import dataclasses
import os
from typing import Any

import pytest

__all__ = ["assert_backends_match", "crosscheck_match"]


def _raw_and_defaults(input: Any, reference: Any) -> tuple[Any, dict[str, Any]]:
    import ptycho_jax as pj

    from .backends import GoldenBackend

    if isinstance(input, (str, os.PathLike)):
        path = os.fspath(input)
        if os.path.isdir(path):  # a golden case folder: its input and recorded parameters
            gb = GoldenBackend(path)
            return pj.RawData.from_npz(gb.input_path()), gb.recorded_params()
        raw = pj.RawData.from_npz(path)
    else:
        raw = input
    defaults: dict[str, Any] = {}
    if isinstance(reference, str) and reference.startswith("golden:"):
        defaults = GoldenBackend(reference[len("golden:") :]).recorded_params()
    elif isinstance(reference, GoldenBackend):
        defaults = reference.recorded_params()
    return raw, defaults


def assert_backends_match(
    port: Any,
    reference: Any,
    input: Any,
    tolerances: Any = None,
    *,
    params: Any = None,
    stages: Any = None,
    allow_missing: Any = (),
    allow_incomplete: bool = False,
    **param_overrides: Any,
):
    """Cross-check `port` against `reference` on `input`; raise AssertionError unless the verdict is PASS.

    Args:
        port, reference: backends or specs (`"jax"`, `"tf"`, `"golden:DIR"`,
            `"package.module:Attribute"`, ...).
        input: a `ptycho_jax.RawData`, a RawData NPZ path, or a golden case folder (its
            `input_rawdata.npz` and recorded parameters are used).
        tolerances: None, a `ToleranceTable`, a mapping merged over the shipped table, or a TOML path.
        params: `ptycho_jax.ChainParams`; default: the golden recording's parameters when known,
            else `ChainParams()` defaults; `param_overrides` are applied on top (a value that
            contradicts a recording raises `HarnessInputError`).
        stages: the stages required (names or "a,b"); default every stage.
        allow_missing: `stage` / `stage.array` names whose absence is a documented exception.
        allow_incomplete: accept INCOMPLETE (something required was not compared); FAIL still
            raises. Default False: INCOMPLETE raises like FAIL.

    Returns:
        The `CrosscheckResult` (verdict PASS, or INCOMPLETE with `allow_incomplete`).

    Raises:
        AssertionError: with the verdict line, the table, one line per failing array and one per
            required array not compared.
    """
    import ptycho_jax as pj

    from .compare import Verdict
    from .render import format_failure
    from .run import run_crosscheck

    raw, defaults = _raw_and_defaults(input, reference)
    if params is None:
        fields = {f.name for f in dataclasses.fields(pj.ChainParams)}
        params = pj.ChainParams(**{k: v for k, v in defaults.items() if k in fields})
    if param_overrides:
        params = dataclasses.replace(params, **param_overrides)
    result = run_crosscheck(
        raw,
        port=port,
        reference=reference,
        params=params,
        tolerances=tolerances,
        stages=stages,
        allow_missing=allow_missing,
    )
    ok = result.verdict == Verdict.PASS or (
        allow_incomplete and result.verdict == Verdict.INCOMPLETE
    )
    if not ok:
        raise AssertionError("\n" + format_failure(result))
    return result


@pytest.fixture
def crosscheck_match():
    """The `assert_backends_match` function, for use inside a port's own tests."""
    return assert_backends_match
