"""Build tests/data/golden/ (trimmed, compressed goldens) from ../shared/golden. Run from the repo root.

Big stage arrays are not stored: each is rebuilt in the tests from the shared input and small
pieces (X_full = gain · input[nn] bit for bit) and checked against the sha256 recorded here.
"""

import hashlib
import json
import pathlib

import numpy as np

SRC = pathlib.Path("../shared/golden")
DST = pathlib.Path("tests/data/golden")
CASES = {
    "gs1_ideal": {"gridsize": 1, "n_groups": 128, "sequential": False},
    "gs2_ideal": {"gridsize": 2, "n_groups": 64, "sequential": False},
    "gs2_sequential": {"gridsize": 2, "n_groups": 64, "sequential": True},
}
KEEP_GROUPS = 4


def sha(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def recovered_gain(X: np.ndarray, D: np.ndarray) -> np.float32:
    i = int(np.argmax(D))
    g = np.float32(X.reshape(-1)[i] / D.reshape(-1)[i])
    assert np.array_equal(g * D, X)
    return g


def main() -> None:
    DST.mkdir(parents=True, exist_ok=True)
    raw = np.load(SRC / "gs2_ideal" / "input_rawdata.npz")
    np.savez_compressed(DST / "input_rawdata.npz", **{k: raw[k] for k in raw.files})
    manifest = {"source": "upstream main 712c23f goldens (../shared/golden)", "cases": {}}
    for case, params in CASES.items():
        s1, s2, s3, s4 = (
            np.load(SRC / case / f"stage{i}_{n}.npz")
            for i, n in [(1, "grouping"), (2, "normalize"), (3, "container"), (4, "intensity")]
        )
        D = s1["diffraction"]
        out = {k: s1[k] for k in s1.files if k.startswith("coords") or k == "nn_indices"}
        out["normalize_gain"] = s2["normalize_gain"]
        out["loader_gain"] = recovered_gain(s2["X_full_loader_normalize_data"], D)
        out["Y_head"] = s1["Y"][:KEEP_GROUPS]
        out["Y_from_sim_patches_head"] = s1["Y_from_sim_patches"][:KEEP_GROUPS]
        for k in (
            "norm_Y_I",
            "coords_nominal",
            "coords_true",
            "global_offsets",
            "local_offsets",
            "probe",
        ):
            out[f"container_{k}"] = s3[k]
        for k in s4.files:
            a = s4[k]
            out[f"intensity_{k}"] = a[:1] if a.ndim == 4 else a
        np.savez_compressed(DST / f"{case}.npz", **out)
        digests = {f"stage1/{k}": sha(s1[k]) for k in s1.files}
        digests |= {f"stage2/{k}": sha(s2[k]) for k in s2.files}
        digests |= {f"stage3/{k}": sha(s3[k]) for k in s3.files}
        manifest["cases"][case] = {"params": params, "sha256": digests}
    (DST / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
