"""The device neighbour search (`device_neighbours`, `neighbour_search="device"`) returns exactly
cKDTree's indices (`kdtree_neighbours`), ties included, and therefore upstream's seeded groups;
rows it cannot certify go to cKDTree on the host (issue 20, specs/pipeline.md §3)."""

import argparse
import json
import warnings

import numpy as np
import pytest
from _golden import CASES, SOURCES, load_case, shared_available
from helpers import golden_group, make_raw
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ptycho_jax as pj
from ptycho_jax import _neighbours
from ptycho_jax._neighbours import device_neighbours, kdtree_neighbours, upstream_neighbours
from ptycho_jax.app import chain_flags

GOLDEN = [(c, s) for c in CASES for s in SOURCES]


def _golden(case, source):
    if source == "full" and not shared_available():
        pytest.skip("full goldens (../shared/golden) not present; the trimmed copy is tested")
    return load_case(case, source)


def _same(positions, k, query=None):
    """device == cKDTree on `query` (default: every position); the rows sent to the host."""
    positions = np.asarray(positions, np.float64)
    query = np.arange(len(positions)) if query is None else np.asarray(query)
    ref = kdtree_neighbours(positions, query, k=k)
    got, rows = device_neighbours(positions, query, k=k, return_fallback_rows=True)
    assert got.dtype == ref.dtype == np.int64 and got.shape == ref.shape == (len(query), k)
    np.testing.assert_array_equal(got, ref)
    return rows


# -- (1) the golden scans ------------------------------------------------------------------------
@pytest.mark.parametrize(("case", "source"), GOLDEN, ids=[f"{c}-{s}" for c, s in GOLDEN])
@pytest.mark.parametrize("k", [1, 2, 5, 9, 17])
def test_golden_positions_equal_kdtree(case, source, k):
    positions = _golden(case, source).raw.positions()
    _same(positions, k)
    _same(positions, k, query=np.random.default_rng(k).permutation(len(positions))[:100])


# -- (2) adversarial sets ------------------------------------------------------------------------
def _sets():
    rng = np.random.default_rng(7)
    t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    grid = np.stack(np.meshgrid(np.arange(12.0), np.arange(12.0)), -1).reshape(-1, 2)
    line = rng.uniform(0, 100, 200)
    return {
        "duplicates": np.repeat(rng.uniform(0, 30, (60, 2)), 3, axis=0),
        "duplicate-pairs-in-random": np.concatenate([u := rng.uniform(0, 50, (150, 2)), u[:40]]),
        "square-grid": 2.5 * grid + 17.0,
        "hexagonal-grid": np.stack(
            [grid[:, 0] + 0.5 * (grid[:, 1] % 2), grid[:, 1] * np.sqrt(3) / 2], -1
        ),
        "collinear-regular": np.stack([np.arange(100) * 0.5, np.full(100, 3.0)], -1),
        "collinear-random": np.stack([line, 2 * line + 1], -1),
        "circle-and-centre": np.concatenate(
            [[[0.0, 0.0]], 7 * np.stack([np.cos(t), np.sin(t)], -1)]
        ),
        "offset-1e6": 1e6 + rng.uniform(0, 1, (400, 2)),
        "offset-1e9-grid": 1e9 + grid,
        "clustered": np.concatenate(
            [c + rng.normal(0, 1e-3, (80, 2)) for c in rng.uniform(0, 1e3, (5, 2))]
        ),
        # distinct in float64, indistinguishable in float32: the float32 ranking is arbitrary
        "float32-near-ties": np.concatenate(
            [
                [[0.0, 0.0]],
                (1000 + 1e-9 * np.arange(40))[:, None]
                * np.stack([np.cos(t[:40]), np.sin(t[:40])], -1),
            ]
        ),
        "random": rng.uniform(0, 400, (1000, 2)),
    }


SETS = _sets()


@pytest.mark.parametrize("name", list(SETS))
@pytest.mark.parametrize("k", [1, 3, 5, 8])
def test_adversarial_sets_equal_kdtree(name, k):
    _same(SETS[name], k)


@pytest.mark.parametrize("n", [1, 2, 4, 5, 6])
@pytest.mark.parametrize("layout", ["random", "grid"])
def test_few_positions_k_at_and_beyond_n(n, layout):
    # K + 1 = 5 neighbours asked of n <= K + 1 positions: cKDTree pads with index n, distance inf.
    p = (
        np.random.default_rng(n).uniform(0, 10, (n, 2))
        if layout == "random"
        else np.stack([np.arange(n) % 2, np.arange(n) // 2], -1).astype(np.float64)
    )
    for k in (n, n + 1, 5, 9):
        _same(p, k)
    if n > 1:
        _same(p, 3, query=[n - 1, 0, n - 1])  # repeated and unordered queries


def test_query_edge_cases_mirror_kdtree():
    p = np.random.default_rng(0).uniform(0, 10, (20, 2))
    _same(p, 4, query=np.zeros(0, np.int64))
    _same(p, 4, query=[-1, -20])  # negative indices as positions[query] reads them
    with pytest.raises(IndexError):
        device_neighbours(p, np.array([20]), k=4)


# -- (3) the certificate: which rows go to the host ----------------------------------------------
def test_fallback_on_ties_and_not_on_random_positions():
    rng = np.random.default_rng(11)
    assert _same(rng.uniform(0, 400, (5000, 2)), 5).size == 0
    assert _same(1e6 + rng.uniform(0, 100, (2000, 2)), 8).size == 0
    # a square grid: every position has 4 equidistant nearest neighbours
    assert _same(SETS["square-grid"], 5).size == len(SETS["square-grid"])
    assert _same(SETS["square-grid"], 1).size == 0  # the point itself, alone at distance 0
    # twins tie at distance 0 with the point itself
    assert _same(SETS["duplicates"], 2).size == len(SETS["duplicates"])
    # float32 cannot rank these; the float64 order is unique but unprovable from the candidates
    near = _same(SETS["float32-near-ties"], 5, query=[0])
    np.testing.assert_array_equal(near, [0])
    # a tie only between the (k+1)-th and (k+2)-th neighbour also goes to the host: cKDTree cuts
    # the list inside the tie in its own order
    cut = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [0.0, -2.0], [5.0, 5.0]])
    assert list(_same(cut, 3, query=[0])) == [0]
    assert list(_same(cut, 2, query=[0])) == []


# -- (4) seeded groups: device == host == upstream -----------------------------------------------
@pytest.mark.parametrize(("case", "source"), GOLDEN, ids=[f"{c}-{s}" for c, s in GOLDEN])
def test_golden_groups_device_equal_host_and_upstream(case, source):
    g = _golden(case, source)
    device, host = (
        golden_group(g, neighbour_search="device"),
        golden_group(g, neighbour_search="host"),
    )
    ref = g.stage("stage1/nn_indices")
    assert device.nn_indices.dtype == host.nn_indices.dtype == ref.dtype
    np.testing.assert_array_equal(device.nn_indices, ref)
    np.testing.assert_array_equal(host.nn_indices, ref)
    assert np.asarray(device.X_full).tobytes() == np.asarray(host.X_full).tobytes()


def test_run_chain_device_equal_host():
    g = _golden("gs2_ideal", "trimmed")
    runs = {
        s: pj.run_chain(
            g.raw,
            pj.ChainParams(n_groups=64, seed=42, patch_positions="member", neighbour_search=s),
        )
        for s in ("device", "host")
    }
    np.testing.assert_array_equal(runs["device"].grouped.nn_indices, g.stage("stage1/nn_indices"))
    np.testing.assert_array_equal(
        runs["device"].grouped.nn_indices, runs["host"].grouped.nn_indices
    )
    assert runs["device"].training_scale == runs["host"].training_scale


@pytest.mark.parametrize(
    "kw",
    [
        dict(gridsize=2, K=4, n_groups=100, seed=3),  # ties: every row via the host
        dict(gridsize=2, K=6, n_groups=36, seed=1, sequential=True),
        dict(gridsize=3, K=9, n_groups=20, seed=5),
        dict(gridsize=2, K=5, n_groups=300, seed=2, oversample=True, neighbor_pool_size=6),
    ],
)
@pytest.mark.parametrize("layout", ["grid", "random", "duplicates"])
def test_select_groups_device_equal_host(kw, layout):
    rng = np.random.default_rng(4)
    if layout == "grid":
        p = SETS["square-grid"]
    elif layout == "random":
        p = rng.uniform(0, 60, (144, 2))
    else:
        p = np.repeat(rng.uniform(0, 60, (72, 2)), 2, axis=0)
    with warnings.catch_warnings(record=True) as w_host:
        warnings.simplefilter("always")
        host = pj.select_groups(p, neighbour_search="host", **kw)
    with warnings.catch_warnings(record=True) as w_dev:
        warnings.simplefilter("always")
        device = pj.select_groups(p, neighbour_search="device", **kw)
    assert device.dtype == host.dtype
    np.testing.assert_array_equal(device, host)
    assert [str(w.message) for w in w_dev] == [str(w.message) for w in w_host]


@pytest.mark.parametrize(("n", "K"), [(5, 4), (4, 4), (6, 7)])
def test_tiny_datasets_device_equal_host(n, K):
    # n = K + 1 and n < K + 1: upstream's k = min(K + 1, n) rows, the seed's own row kept
    p = np.random.default_rng(n).uniform(0, 10, (n, 2))
    kw = dict(gridsize=2, K=K, n_groups=3, seed=1)
    host = pj.select_groups(p, neighbour_search="host", **kw)
    np.testing.assert_array_equal(pj.select_groups(p, neighbour_search="device", **kw), host)


# -- a property: small integer grids, ties everywhere --------------------------------------------
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.sampled_from([8, 24]),
    k=st.sampled_from([1, 3, 5, 9]),
    side=st.integers(1, 6),
    seed=st.integers(0, 2**32 - 1),
    scale=st.sampled_from([1.0, 0.1, 3e5]),
)
def test_property_integer_grid_positions_equal_kdtree(n, k, side, seed, scale):
    p = np.random.default_rng(seed).integers(0, side, (n, 2)).astype(np.float64) * scale
    _same(p, k)


# -- the switch --------------------------------------------------------------------------------------
def test_neighbour_search_field_is_validated():
    assert pj.ChainParams().neighbour_search == "auto"
    with pytest.raises(
        pj.PtychoInputError,
        match=r"ChainParams.neighbour_search must be 'auto', 'host' or 'device', got 'gpu'",
    ):
        pj.ChainParams(neighbour_search="gpu")


def test_auto_is_the_host_on_cpu_and_the_device_elsewhere(monkeypatch):
    calls = []
    real = _neighbours.device_neighbours
    monkeypatch.setattr(
        _neighbours, "device_neighbours", lambda *a, **kw: calls.append(1) or real(*a, **kw)
    )
    p = SETS["random"]
    ref = kdtree_neighbours(p, np.arange(10), k=5)
    np.testing.assert_array_equal(upstream_neighbours(p, np.arange(10), k=5, search="auto"), ref)
    assert calls == []  # the CPU: cKDTree
    monkeypatch.setattr(_neighbours.jax, "default_backend", lambda: "gpu")
    np.testing.assert_array_equal(upstream_neighbours(p, np.arange(10), k=5, search="auto"), ref)
    assert calls == [1]
    np.testing.assert_array_equal(upstream_neighbours(p, np.arange(10), k=5, search="host"), ref)
    assert calls == [1]


def test_command_line_flag():
    parser = argparse.ArgumentParser()
    chain_flags.add_chain_arguments(parser)
    args = parser.parse_args(["--neighbour-search", "device"])
    assert chain_flags.chain_params(args).neighbour_search == "device"
    assert chain_flags.chain_params(parser.parse_args([])).neighbour_search == "auto"
    assert "{auto,host,device}" in parser.format_help()
    with pytest.raises(SystemExit):
        parser.parse_args(["--neighbour-search", "gpu"])


def test_report_records_the_field(tmp_path):
    from ptycho_jax.app.cli import main

    make_raw(m=20, n=8).to_npz(tmp_path / "in.npz")
    argv = ["-q", "report", "--input", str(tmp_path / "in.npz"), "--gridsize", "1", "--n-groups",
            "7", "--neighbour-search", "device", "--no-figure", "--out", str(tmp_path / "out")]  # fmt: skip
    assert main(argv) == 0
    params = json.loads((tmp_path / "out" / "intensity_stats.json").read_text())["provenance"][
        "parameters"
    ]
    assert params["neighbour_search"] == "device"
