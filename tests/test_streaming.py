"""Streaming in chunks of 1/7 of the groups (two-pass normalisation) equals the one-shot chain.

In-process, on one device; streaming with each chunk sharded over 8 devices is checked by the
8-device run of tests/test_sharding.py.
"""

import warnings

import numpy as np
import pytest
from _compile_count import count_compiles
from _golden import DATA, max_ulp
from helpers import assert_equal_chain, chain_deltas

import ptycho_jax as pj


@pytest.fixture(scope="module")
def raw():
    return pj.RawData.from_npz(DATA / "input_rawdata.npz")


@pytest.mark.parametrize(
    "gridsize,groups,variant,positions",
    [(2, 61, "main", "upstream"), (1, 61, "seed", "member")],
)
def test_streamed_in_sevenths_equals_one_shot(raw, gridsize, groups, variant, positions):
    params = pj.ChainParams(
        gridsize=gridsize, n_groups=groups, seed=42, variant=variant, patch_positions=positions
    )
    chunk = -(-groups // 7)
    stages = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pj.MirroredPatchWarning)
        ref = pj.run_chain(raw, params)  # the one-shot chain compiles its own (one chunk of B)
        with count_compiles() as compiles:
            got = pj.run_chain(raw, params, chunk_groups=chunk, progress=stages.append)
    assert_equal_chain(chain_deltas(got, ref))
    n = -(-groups // chunk)
    assert n == 7
    assert stages == [
        "grouping",
        *(f"energy pass {i}/7" for i in range(1, 8)),
        *(f"scale pass {i}/7" for i in range(1, 8)),
        "intensity_scale",
        "scaler",
    ]
    # Every chunk is padded to one size: the seven chunks share one compilation.
    assert compiles("scale_on_mesh") <= 1
    assert got.grouped.X_full.shape == (groups, 64, 64, gridsize**2)


def test_chunk_larger_than_dataset_and_raw_Y(raw):
    # raw.Y (simulation patches) is gathered like the frames; one chunk holding everything.
    Y = (raw.diff3d[..., None] * np.complex64(1 + 0.5j)).astype(np.complex64)
    sim = pj.RawData(
        **{
            k: getattr(raw, k)
            for k in (
                "xcoords",
                "ycoords",
                "xcoords_start",
                "ycoords_start",
                "diff3d",
                "probeGuess",
                "scan_index",
            )
        },
        Y=Y,
    )
    params = pj.ChainParams(gridsize=2, n_groups=16, seed=3)
    ref = pj.run_chain(sim, params)
    got = pj.run_chain(sim, params, chunk_groups=1000)
    assert_equal_chain(chain_deltas(got, ref))
    assert np.asarray(got.grouped.Y).tobytes() == np.asarray(ref.grouped.Y).tobytes()


def test_run_chain_mesh_and_chunk_options(raw):
    params = pj.ChainParams(gridsize=1, n_groups=10, seed=1, patch_positions="member")
    one_shot = pj.run_chain(raw, params)
    ref = pj.run_chain(raw, params)
    assert np.asarray(one_shot.grouped.X_full).tobytes() == np.asarray(ref.grouped.X_full).tobytes()
    streamed = pj.run_chain(raw, params, chunk_groups=3, mesh=pj.make_mesh(1))
    sharded = pj.run_chain(raw, params, mesh=pj.make_mesh(1))
    for got in (streamed, sharded):
        assert max_ulp(np.asarray(got.container.X), np.asarray(ref.container.X)) <= 1
        assert got.grouped.nn_indices.tobytes() == ref.grouped.nn_indices.tobytes()


@pytest.mark.parametrize("chunk", [0, -3, 2.5, True])
def test_bad_chunk_size(raw, chunk):
    with pytest.raises(pj.PtychoInputError, match="chunk_groups: expected an int >= 1"):
        pj.run_chain(raw, pj.ChainParams(n_groups=8), chunk_groups=chunk)


def test_zero_frames_raise(raw):
    dark = pj.RawData(
        **{
            k: getattr(raw, k)
            for k in (
                "xcoords",
                "ycoords",
                "xcoords_start",
                "ycoords_start",
                "probeGuess",
                "scan_index",
            )
        },
        diff3d=np.zeros_like(raw.diff3d),
    )
    with pytest.raises(pj.NormalizationError, match="zero total energy"):
        pj.run_chain(dark, pj.ChainParams(gridsize=1, n_groups=8, seed=0), chunk_groups=3)
