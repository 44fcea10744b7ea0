"""diff3d given as uint16 or float64 (specs/bad-input.md §2.1): converted exactly to float32 and
recorded, the chain unchanged, the file written back as given; what has no exact float32 form, and
the seed variant (which squares in the source dtype), refused with the conversion to make."""

import numpy as np
import pytest
from _golden import load_case

import ptycho_jax as pj
from ptycho_jax._rawdata import frames_as_given

PARAMS = pj.ChainParams(gridsize=2, n_groups=32, seed=7)
pytestmark = pytest.mark.filterwarnings("ignore::ptycho_jax.MirroredPatchWarning")


@pytest.fixture(scope="module")
def raw32() -> pj.RawData:
    """The golden input with its frames rounded to whole counts (so uint16 holds them exactly)."""
    raw = load_case("gs2_ideal").raw
    frames = np.round(raw.diff3d * 20).astype(np.float32)
    assert frames.max() < 65536 and frames.max() > 50, frames.max()
    return _with_frames(raw, frames)


def _with_frames(raw: pj.RawData, frames: np.ndarray) -> pj.RawData:
    return pj.RawData(
        xcoords=raw.xcoords,
        ycoords=raw.ycoords,
        xcoords_start=raw.xcoords_start,
        ycoords_start=raw.ycoords_start,
        diff3d=frames,
        probeGuess=raw.probeGuess,
        scan_index=raw.scan_index,
        objectGuess=raw.objectGuess,
    )


@pytest.mark.parametrize("dtype", ["uint16", "float64"])
def test_source_dtype_is_converted_exactly_and_recorded(raw32, dtype):
    raw = _with_frames(raw32, raw32.diff3d.astype(dtype))
    assert raw.diff3d.dtype == np.float32
    assert raw.diff3d_source_dtype == dtype
    assert raw.diff3d.tobytes() == raw32.diff3d.tobytes()
    given = frames_as_given(raw)
    assert given.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(given, raw32.diff3d.astype(dtype))
    assert raw.subset(np.arange(5)).diff3d_source_dtype == dtype


@pytest.mark.parametrize("dtype", ["uint16", "float64"])
def test_file_round_trips_in_the_source_dtype(raw32, dtype, tmp_path):
    raw = _with_frames(raw32, raw32.diff3d.astype(dtype))
    raw.to_npz(tmp_path / "raw.npz")
    with np.load(tmp_path / "raw.npz") as z:
        assert z["diff3d"].dtype == np.dtype(dtype)
    back = pj.RawData.from_npz(tmp_path / "raw.npz")
    assert back.diff3d_source_dtype == dtype
    assert back.diff3d.tobytes() == raw32.diff3d.tobytes()


@pytest.mark.parametrize("dtype", ["uint16", "float64"])
def test_main_chain_is_the_float32_chain(raw32, dtype):
    ref = pj.run_chain(raw32, PARAMS)
    got = pj.run_chain(_with_frames(raw32, raw32.diff3d.astype(dtype)), PARAMS)
    for name in ("X", "Y_I", "coords_nominal"):
        a, b = np.asarray(getattr(ref.container, name)), np.asarray(getattr(got.container, name))
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), name
    assert float(ref.container.norm_Y_I) == float(got.container.norm_Y_I)
    assert ref.intensity_scales == got.intensity_scales
    assert ref.training_scale == got.training_scale


def test_uint16_squares_would_wrap_so_float64_squares_are_used(raw32):
    # the hazard the exact conversion avoids: upstream's float64 cast before squaring
    u = raw32.diff3d.astype(np.uint16)
    assert (np.square(u) != np.square(u.astype(np.float64))).any()


@pytest.mark.parametrize("dtype", ["uint16", "float64"])
def test_seed_variant_refuses_non_float32_frames(raw32, dtype):
    raw = _with_frames(raw32, raw32.diff3d.astype(dtype))
    seed = pj.ChainParams(gridsize=2, n_groups=32, seed=7, variant="seed")
    with pytest.raises(pj.NormalizationError, match=rf"variant 'seed'.*got {dtype}.*astype"):
        pj.run_chain(raw, seed)
    pj.run_chain(raw32, seed)  # the same frames as float32 run


def test_inexact_float64_names_the_first_value(raw32):
    frames = raw32.diff3d.astype(np.float64)
    frames[3, 4, 5] += 1e-9
    with pytest.raises(
        pj.RawDataError, match=r"1 values that are not \(first at index \(3, 4, 5\)"
    ):
        _with_frames(raw32, frames)
