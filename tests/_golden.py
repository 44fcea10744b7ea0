"""Access to the upstream goldens: the trimmed copy in tests/data/golden, or the full ../shared/golden when present."""

import dataclasses
import functools
import hashlib
import json
import pathlib

import numpy as np

import ptycho_jax as pj

DATA = pathlib.Path(__file__).parent / "data" / "golden"
SHARED = pathlib.Path(__file__).resolve().parents[2] / "shared" / "golden"
MANIFEST = json.loads((DATA / "manifest.json").read_text())
CASES = tuple(MANIFEST["cases"])
SOURCES = ("trimmed", "full")


def sha(a) -> str:
    return hashlib.sha256(np.ascontiguousarray(np.asarray(a)).tobytes()).hexdigest()


def _ordered(a: np.ndarray) -> np.ndarray:
    """Map floats to integers whose difference counts representable values between them."""
    bits = {4: np.int32, 8: np.int64}[a.dtype.itemsize]
    i = a.view(bits).astype(np.int64)
    magnitude = i & np.int64(np.iinfo(bits).max)
    return np.where(i < 0, -magnitude, magnitude)


def max_ulp(a, b) -> int:
    """Largest distance in units in the last place between two same-shaped float arrays of one dtype."""
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape and a.dtype == b.dtype, (a.shape, a.dtype, b.shape, b.dtype)
    if np.iscomplexobj(a):
        return max(max_ulp(a.real, b.real), max_ulp(a.imag, b.imag))
    return int(np.max(np.abs(_ordered(a) - _ordered(b)))) if a.size else 0


@dataclasses.dataclass(frozen=True)
class GoldenCase:
    name: str
    source: str
    params: dict
    arrays: dict  # stage arrays by "stageK/key"; big ones rebuilt and checked against the manifest

    @property
    def raw(self) -> pj.RawData:
        return _raw(self.source, self.name)

    def stage(self, key: str) -> np.ndarray:
        return self.arrays[key]

    @property
    def full(self) -> bool:
        return self.source == "full"


@functools.cache
def _raw(source: str, case: str) -> pj.RawData:
    path = (
        (SHARED / case / "input_rawdata.npz") if source == "full" else (DATA / "input_rawdata.npz")
    )
    return pj.RawData.from_npz(path)


def _rebuild(case: str) -> dict:
    t = np.load(DATA / f"{case}.npz")
    raw = _raw("trimmed", case)
    nn = t["nn_indices"]
    D = np.moveaxis(raw.diff3d[nn], 1, -1)
    arrays = {f"stage1/{k}": t[k] for k in t.files if k.startswith("coords") or k == "nn_indices"}
    arrays["stage1/diffraction"] = D
    arrays["stage2/normalize_gain"] = t["normalize_gain"]
    arrays["stage2/X_full"] = t["normalize_gain"] * D
    arrays["stage2/X_full_loader_normalize_data"] = t["loader_gain"] * D
    arrays["stage3/X"] = arrays["stage2/X_full"]
    arrays["stage1/Y"] = t["Y_head"]
    arrays["stage1/Y_from_sim_patches"] = t["Y_from_sim_patches_head"]
    for k in t.files:
        if k.startswith("container_"):
            arrays["stage3/" + k.removeprefix("container_")] = t[k]
        if k.startswith("intensity_"):
            arrays["stage4/" + k.removeprefix("intensity_")] = t[k]
    arrays["stage3/nn_indices"] = nn
    digests = MANIFEST["cases"][case]["sha256"]
    for key in (
        "stage1/diffraction",
        "stage2/X_full",
        "stage2/X_full_loader_normalize_data",
        "stage3/X",
    ):
        assert sha(arrays[key]) == digests[key], (
            f"rebuilt golden {case}:{key} does not match its sha256"
        )
    return arrays


def _full(case: str) -> dict:
    arrays = {}
    for i, stem in enumerate(("grouping", "normalize", "container", "intensity"), start=1):
        with np.load(SHARED / case / f"stage{i}_{stem}.npz") as z:
            arrays |= {f"stage{i}/{k}": z[k] for k in z.files}
    return arrays


@functools.cache
def load_case(case: str, source: str = "trimmed") -> GoldenCase:
    arrays = _full(case) if source == "full" else _rebuild(case)
    return GoldenCase(case, source, MANIFEST["cases"][case]["params"], arrays)


def shared_available() -> bool:
    return (SHARED / "gs2_ideal" / "stage1_grouping.npz").exists()
