"""Frames resident on a device (`RawData.on_device`): placed once, gathered from there, outputs bit-identical."""

import warnings

import jax
import numpy as np
import pytest
from _golden import DATA
from helpers import assert_equal_chain, chain_deltas

import ptycho_jax as pj
from ptycho_jax import _pipeline
from ptycho_jax._errors import RawDataError


@pytest.fixture(scope="module")
def raw():
    return pj.RawData.from_npz(DATA / "input_rawdata.npz")


@pytest.fixture(scope="module")
def resident(raw):
    return raw.on_device(jax.devices()[0])


def test_on_device_places_the_frames_once(raw, resident):
    placed = resident.device_frames
    assert raw.device_frames is None
    assert isinstance(placed, jax.Array) and placed.committed
    assert placed.sharding.device_set == {jax.devices()[0]}
    assert placed.dtype == np.float32 and placed.shape == raw.diff3d.shape
    assert np.asarray(placed).tobytes() == raw.diff3d.tobytes()
    # Host fields shared, not copied or revalidated.
    assert resident.diff3d is raw.diff3d and resident.probeGuess is raw.probeGuess
    assert raw.on_device().device_frames.sharding.device_set == {jax.devices()[0]}
    with pytest.raises(RawDataError, match="on_device: device"):
        raw.on_device("cpu:0")


@pytest.mark.parametrize(
    "gridsize,variant,positions", [(2, "main", "upstream"), (1, "seed", "member")]
)
def test_chain_from_resident_frames_is_bit_identical_and_transfers_nothing(
    raw, resident, monkeypatch, gridsize, variant, positions
):
    params = pj.ChainParams(
        gridsize=gridsize, n_groups=61, seed=42, variant=variant, patch_positions=positions
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pj.MirroredPatchWarning)
        ref = pj.run_chain(raw, params)
        before = resident.device_frames.unsafe_buffer_pointer()

        def no_transfer(*a, **k):
            raise AssertionError("the frames were placed again although they are resident")

        monkeypatch.setattr(_pipeline, "place_frames", no_transfer)
        got = pj.run_chain(resident, params)
        grouped = pj.group(resident, params)
        with pytest.raises(AssertionError, match="placed again"):
            pj.run_chain(raw, params)  # the host RawData does place them: the check can fail
    assert_equal_chain(chain_deltas(got, ref))
    assert np.asarray(grouped.X_full).tobytes() == np.asarray(ref.grouped.X_full).tobytes()
    assert resident.device_frames.unsafe_buffer_pointer() == before  # same buffer, not replaced


def test_streaming_and_replace_fall_back_to_the_host_frames(raw, resident):
    import dataclasses

    params = pj.ChainParams(gridsize=2, n_groups=20, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pj.MirroredPatchWarning)
        ref = pj.run_chain(raw, params)
        streamed = pj.run_chain(resident, params, chunk_groups=7)
    assert_equal_chain(chain_deltas(streamed, ref))
    assert dataclasses.replace(resident, objectGuess=None).device_frames is None
    assert resident.subset(np.arange(10)).device_frames is None
