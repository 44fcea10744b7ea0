"""Rebuild the simulation/patch fixtures in this folder from the full goldens (../../../../shared/golden).

Run from the repository root: `.venv/bin/python tests/data/sim/make_fixture.py`. Writes
`sim_golden.npz` (trimmed golden arrays, compressed) and `golden_digests.json` (sha256 of the full
golden test-half arrays the simulation must reproduce bit-for-bit).
"""

import hashlib
import json
import pathlib

import numpy as np

HERE = pathlib.Path(__file__).parent
SHARED = HERE.resolve().parents[3] / "shared" / "golden"
CASES = ("gs1_ideal", "gs2_ideal", "gs2_sequential")
GROUPS = 4  # groups kept per case for the patch tests
FRAMES = 8  # simulation patches kept (test half, first frames)
RAW_KEYS = (
    "objectGuess",
    "probeGuess",
    "xcoords",
    "ycoords",
    "xcoords_start",
    "ycoords_start",
    "scan_index",
)


def sha(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def main() -> None:
    raw = np.load(SHARED / "gs2_ideal" / "input_rawdata.npz")
    extras = np.load(SHARED / "gs2_ideal" / "sim_extras.npz")
    out = {k: raw[k] for k in ("objectGuess", "xcoords", "ycoords")}
    out["Y_sim_patches"] = extras["Y_sim_patches"][:FRAMES]
    out["train_xcoords"] = extras["train_xcoords"]
    out["train_ycoords"] = extras["train_ycoords"]
    out["norm_Y_I_sim"] = extras["norm_Y_I_sim"]
    digests = {
        "gs2_ideal": {
            k: {"sha256": sha(raw[k]), "dtype": str(raw[k].dtype), "shape": list(raw[k].shape)}
            for k in RAW_KEYS
        }
    }
    for case in CASES:
        s1 = np.load(SHARED / case / "stage1_grouping.npz")
        # spread the kept groups over the batch
        idx = np.linspace(0, s1["coords_nn"].shape[0] - 1, GROUPS).round().astype(int)
        for k in ("coords_offsets", "coords_relative", "coords_nn", "Y", "Y_from_sim_patches"):
            out[f"{case}/{k}"] = s1[k][idx]
        out[f"{case}/groups"] = idx
        r = np.load(SHARED / case / "input_rawdata.npz")
        if not np.array_equal(r["objectGuess"], raw["objectGuess"]):
            raise SystemExit(f"{case}: objectGuess differs from gs2_ideal's")
    np.savez_compressed(HERE / "sim_golden.npz", **out)
    (HERE / "golden_digests.json").write_text(json.dumps(digests, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
