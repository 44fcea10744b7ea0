"""RawData: construction checks, NPZ round trip, and the error for every kind of bad input."""

import dataclasses
import os
import zipfile

import numpy as np
import pytest
from helpers import make_raw

import ptycho_jax as pj


def test_round_trip_is_exact(tmp_path):
    raw = make_raw()
    path = tmp_path / "raw.npz"
    raw.to_npz(path)
    with np.load(path) as z:
        assert sorted(z.files) == sorted(
            [
                "xcoords",
                "ycoords",
                "xcoords_start",
                "ycoords_start",
                "diff3d",
                "probeGuess",
                "objectGuess",
                "scan_index",
            ]
        )
    back = pj.RawData.from_npz(path)
    for f in (
        "xcoords",
        "ycoords",
        "xcoords_start",
        "ycoords_start",
        "diff3d",
        "probeGuess",
        "objectGuess",
        "scan_index",
    ):
        a, b = getattr(raw, f), getattr(back, f)
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), f
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp")]


def test_upstream_defaults_for_optional_keys(tmp_path):
    raw = make_raw()
    path = tmp_path / "minimal.npz"
    np.savez(
        path, xcoords=raw.xcoords, ycoords=raw.ycoords, diff3d=raw.diff3d, probeGuess=raw.probeGuess
    )
    back = pj.RawData.from_npz(path)
    np.testing.assert_array_equal(back.xcoords_start, raw.xcoords)
    np.testing.assert_array_equal(back.scan_index, np.zeros(len(raw), np.int64))
    assert back.objectGuess is None


def test_golden_input_loads():
    from _golden import DATA

    raw = pj.RawData.from_npz(DATA / "input_rawdata.npz")
    assert raw.diff3d.shape == (512, 64, 64) and raw.N == 64 and len(raw) == 512


@pytest.mark.parametrize("key", ["xcoords", "ycoords", "diff3d", "probeGuess"])
def test_missing_required_key(tmp_path, key):
    raw = make_raw()
    arrays = {k: getattr(raw, k) for k in ("xcoords", "ycoords", "diff3d", "probeGuess")}
    del arrays[key]
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(pj.RawDataError, match=f"missing required key.*{key}"):
        pj.RawData.from_npz(path)


def test_truncated_file(tmp_path):
    raw = make_raw()
    path = tmp_path / "raw.npz"
    raw.to_npz(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(pj.RawDataError, match="NPZ|truncated|corrupt"):
        pj.RawData.from_npz(path)


def test_not_an_npz(tmp_path):
    path = tmp_path / "notes.npz"
    path.write_text("hello")
    with pytest.raises(pj.RawDataError, match="expected an NPZ archive"):
        pj.RawData.from_npz(path)
    with pytest.raises(pj.RawDataError, match="no such file"):
        pj.RawData.from_npz(tmp_path / "absent.npz")


def test_pickled_placeholder_is_refused(tmp_path):
    raw = make_raw()
    path = tmp_path / "pickled.npz"
    np.savez(
        path,
        xcoords=raw.xcoords,
        ycoords=raw.ycoords,
        diff3d=raw.diff3d,
        probeGuess=raw.probeGuess,
        objectGuess=np.array(None),
    )
    with pytest.raises(pj.RawDataError, match="pickle"):
        pj.RawData.from_npz(path)


@pytest.mark.parametrize(
    "overrides,match",
    [
        (dict(xcoords=np.zeros((6, 1))), r"xcoords: expected a 1-D float array"),
        (dict(ycoords=np.arange(6)), r"ycoords: expected a 1-D float array.*int"),
        (dict(ycoords_start=np.zeros(5)), r"one length, got lengths"),
        (
            dict(diff3d=np.zeros((6, 8, 9), np.float32)),
            r"diff3d: expected a 3-D array of square frames",
        ),
        (dict(diff3d=np.zeros((6, 8), np.float32)), r"diff3d: expected a 3-D array"),
        (
            dict(diff3d=np.full((6, 8, 8), 0.1)),
            r"diff3d: float64 frames are taken only when.*first at index \(0, 0, 0\)",
        ),
        (dict(diff3d=np.ones((6, 8, 8), np.int16)), r"diff3d: expected dtype float32.*int16"),
        (
            dict(diff3d=np.full((6, 8, 8), 0.5, np.float32), diff3d_source_dtype="uint16"),
            r"diff3d: expected whole values in \[0, 65535\]",
        ),
        (dict(diff3d_source_dtype="int8"), r"diff3d_source_dtype: expected one of"),
        (dict(diff3d=np.ones((5, 8, 8), np.float32)), r"diff3d: expected 6 frames.*got 5"),
        (dict(probeGuess=np.ones((16, 16), np.complex64)), r"probeGuess: expected shape \(8, 8\)"),
        (dict(probeGuess=np.ones((8, 8), np.complex128)), r"probeGuess: expected dtype complex64"),
        (dict(objectGuess=np.ones((4, 4, 2), np.complex64)), r"objectGuess: expected a 2-D"),
        (dict(objectGuess=np.ones((4, 4), np.float32)), r"objectGuess: expected dtype complex64"),
        (dict(scan_index=np.zeros(6, np.float64)), r"scan_index: expected a 1-D integer array"),
        (
            dict(xcoords=np.array([1.0, np.nan, 3, 4, 5, 6])),
            r"xcoords: expected finite values.*index \(1,\)",
        ),
        (dict(ycoords=np.array([1.0, np.inf, 3, 4, 5, 6])), r"ycoords: expected finite values"),
        (dict(diff3d=np.full((6, 8, 8), np.nan, np.float32)), r"diff3d: expected finite values"),
        (dict(diff3d=-np.ones((6, 8, 8), np.float32)), r"diff3d: expected amplitudes >= 0"),
        (
            dict(
                xcoords=np.zeros(0),
                ycoords=np.zeros(0),
                xcoords_start=np.zeros(0),
                ycoords_start=np.zeros(0),
            ),
            "at least one",
        ),
    ],
)
def test_invalid_fields(overrides, match):
    with pytest.raises(pj.RawDataError, match=match):
        make_raw(**overrides)


def test_raw_data_error_is_value_error():
    assert issubclass(pj.RawDataError, ValueError)


def test_subset_keeps_order_and_shared_fields():
    raw = make_raw()
    sub = raw.subset(np.array([4, 1]))
    np.testing.assert_array_equal(sub.xcoords, raw.xcoords[[4, 1]])
    np.testing.assert_array_equal(sub.diff3d, raw.diff3d[[4, 1]])
    assert sub.probeGuess is raw.probeGuess
    with pytest.raises(pj.RawDataError, match="indices must lie"):
        raw.subset(np.array([9]))


def test_frozen():
    raw = make_raw()
    with pytest.raises(dataclasses.FrozenInstanceError):
        raw.xcoords = raw.ycoords  # type: ignore[misc]


def test_zipfile_without_arrays(tmp_path):
    path = tmp_path / "empty.npz"
    with zipfile.ZipFile(path, "w"):
        pass
    with pytest.raises(pj.RawDataError, match="missing required key"):
        pj.RawData.from_npz(path)


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_frames_are_64_byte_aligned_and_exact(tmp_path, save):
    # JAX's CPU client aliases 64-byte-aligned host arrays in device_put instead of copying them.
    src = make_raw(m=7, n=8)
    Y = np.random.default_rng(1).random((7, 8, 8, 1)).astype(np.complex64)
    unaligned = (
        np.empty(src.diff3d.nbytes + 4, np.uint8)[4:].view(np.float32).reshape(src.diff3d.shape)
    )
    unaligned[...] = src.diff3d
    raw = dataclasses.replace(src, diff3d=unaligned, Y=Y)
    assert raw.diff3d.ctypes.data % 64 == 0 and raw.Y.ctypes.data % 64 == 0
    np.testing.assert_array_equal(raw.diff3d, src.diff3d)
    arrays = {k: getattr(raw, k) for k in ("xcoords", "ycoords", "diff3d", "probeGuess", "Y")}
    save(tmp_path / "r.npz", **arrays)
    back = pj.RawData.from_npz(tmp_path / "r.npz")
    assert back.diff3d.ctypes.data % 64 == 0 and back.Y.ctypes.data % 64 == 0
    np.testing.assert_array_equal(back.diff3d, src.diff3d)
    np.testing.assert_array_equal(back.Y, Y)
