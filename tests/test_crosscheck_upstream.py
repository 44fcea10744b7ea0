"""The `upstream` adapter against a stand-in `ptycho` package (tests/data/crosscheck/fake_upstream).

Proves that the adapter sets the `params.cfg` keys upstream reads (N, gridsize, nphotons, ...)
while it runs, restores the previous dict in place (and the global NumPy RNG state) afterwards —
also when upstream raises — and fails with an install hint when `ptycho` is not importable.
"""

import importlib.util
import pathlib
import sys

import numpy as np
import pytest

import ptycho_jax as pj
from crosscheck.backends import UpstreamBackend, resolve_backend, upstream_cfg
from crosscheck.synthetic import synthetic_raw

FAKE = pathlib.Path(__file__).parent / "data" / "crosscheck" / "fake_upstream"


def _drop_ptycho_modules():
    for name in [m for m in sys.modules if m == "ptycho" or m.startswith("ptycho.")]:
        del sys.modules[name]


@pytest.fixture
def fake_ptycho(monkeypatch):
    if importlib.util.find_spec("ptycho") is not None:
        pytest.skip("a real `ptycho` package is importable; the stand-in would be shadowed")
    monkeypatch.syspath_prepend(str(FAKE))
    _drop_ptycho_modules()
    import ptycho
    import ptycho.params

    ptycho.SEEN.clear()
    yield ptycho
    _drop_ptycho_modules()


def test_unavailable_upstream_says_how_to_install():
    if importlib.util.find_spec("ptycho") is not None:
        pytest.skip("a real `ptycho` package is importable")
    with pytest.raises(pj.BackendUnavailableError, match="pip install"):
        resolve_backend("upstream")


def test_cfg_scope_restores_in_place_even_on_error(fake_ptycho):
    cfg = fake_ptycho.params.cfg
    before = dict(cfg)
    np.random.seed(7)
    state = np.random.get_state()
    with (
        pytest.raises(RuntimeError, match="boom"),
        upstream_cfg(fake_ptycho.params, {"N": 32, "new_key": 1}),
    ):
        assert cfg["N"] == 32 and cfg["new_key"] == 1
        np.random.seed(0)
        np.random.rand()
        raise RuntimeError("boom")
    assert fake_ptycho.params.cfg is cfg and cfg == before
    after = np.random.get_state()
    assert after[0] == state[0] and np.array_equal(after[1], state[1]) and after[2:] == state[2:]


def _synthetic():
    return synthetic_raw()


def test_adapter_sets_and_restores_params_cfg(fake_ptycho):
    pytest.importorskip("tensorflow")
    from crosscheck.run import format_failure, run_crosscheck

    raw = _synthetic()
    cfg = fake_ptycho.params.cfg
    cfg["user_key"] = "kept"
    before = dict(cfg)
    np.random.seed(11)
    state = np.random.get_state()
    params = pj.ChainParams(N=32, gridsize=2, K=4, n_groups=16, seed=3, nphotons=1e6)

    backend = resolve_backend("upstream")
    assert isinstance(backend, UpstreamBackend)
    res = run_crosscheck(raw, port="tf", reference=backend, params=params)
    assert res.passed, format_failure(res)
    compared = {s.name for s in res.stages if s.skipped is None}
    assert compared >= {
        "grouping",
        "grouped",
        "normalize",
        "patches",
        "container",
        "intensity_scales",
    }
    assert res.stage("scaler").skipped and "ptycho.model" in res.stage("scaler").skipped

    # while upstream ran, it saw the run's values ...
    seen = fake_ptycho.SEEN
    assert {s["_call"] for s in seen} >= {
        "generate_grouped_data",
        "load",
        "scale_nphotons",
        "calculate_intensity_scale",
        "get_image_patches",
    }
    for s in seen:
        assert (s["N"], s["gridsize"], s["nphotons"], s["neighbor_count"]) == (32, 2, 1e6, 4), s
        assert s["user_key"] == "kept"
    # ... and afterwards the dict (same object) and the global RNG are as before
    assert fake_ptycho.params.cfg is cfg and cfg == before
    after = np.random.get_state()
    assert np.array_equal(after[1], state[1]) and after[2:] == state[2:]


def test_adapter_restores_cfg_when_upstream_raises(fake_ptycho, monkeypatch):
    pytest.importorskip("tensorflow")
    import ptycho.loader

    from crosscheck.run import run_crosscheck

    monkeypatch.setattr(ptycho.loader, "FAIL", True)
    raw = _synthetic()
    cfg = fake_ptycho.params.cfg
    before = dict(cfg)
    params = pj.ChainParams(N=32, gridsize=2, K=4, n_groups=16, seed=3, nphotons=1e6)
    res = run_crosscheck(raw, port="tf", reference="upstream", params=params)
    assert not res.passed
    assert any("load failed on purpose" in n for s in res.stages for n in s.notes)
    assert cfg == before and cfg["N"] == 128


def test_adapter_refuses_other_groups(fake_ptycho):
    pytest.importorskip("tensorflow")
    from crosscheck.backends import StageUnsupported

    raw = _synthetic()
    params = pj.ChainParams(N=32, gridsize=2, K=4, n_groups=16, seed=3, nphotons=1e6)
    b = UpstreamBackend()
    nn = b.grouping(raw, params)["nn_indices"]
    assert nn.shape == (16, 4)
    with pytest.raises(StageUnsupported, match="cannot inject"):
        b.grouped(raw, params, nn_indices=nn[::-1])
    assert fake_ptycho.params.cfg["N"] == 128
