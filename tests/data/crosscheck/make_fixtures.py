"""Regenerate the trimmed golden fixture of the crosscheck tests from ../shared/golden.

Run once from the repository root: `python tests/data/crosscheck/make_fixtures.py [GOLDEN_DIR]`.
The three golden cases share one input; only the frames their groups use are kept, plus sha256
digests of the golden stage arrays and small slices of the arrays compared with a tolerance.
"""

import hashlib
import json
import pathlib
import sys

import numpy as np

HERE = pathlib.Path(__file__).parent
CASES = ("gs2_ideal", "gs1_ideal", "gs2_sequential")
DIGESTED = {
    "stage1_grouping.npz": (
        "nn_indices",
        "coords_nn",
        "coords_offsets",
        "coords_relative",
        "coords_start_nn",
        "coords_start_offsets",
        "coords_start_relative",
        "diffraction",
        "Y",
        "Y_from_sim_patches",
    ),
    "stage2_normalize.npz": ("X_full", "X_full_loader_normalize_data"),
    "stage3_container.npz": (
        "X",
        "Y_I",
        "Y_phi",
        "coords_nominal",
        "coords_true",
        "probe",
        "nn_indices",
        "global_offsets",
        "local_offsets",
        "Y_complex",
    ),
    "stage4_intensity.npz": (
        "seed_era_scaler_out",
        "seed_era_scaler_inv_out",
        "main_head_scaler_out",
        "main_head_scaler_inv_out",
    ),
}


def digest(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def main(golden: pathlib.Path) -> None:
    inp = dict(np.load(golden / CASES[0] / "input_rawdata.npz"))
    used = sorted(
        {
            int(i)
            for c in CASES
            for i in np.load(golden / c / "stage1_grouping.npz")["nn_indices"].ravel()
        }
    )
    ids = np.asarray(used, dtype=np.int64)
    np.savez_compressed(
        HERE / "input_trim.npz",
        frame_ids=ids,
        **{
            k: inp[k]
            for k in (
                "xcoords",
                "ycoords",
                "xcoords_start",
                "ycoords_start",
                "probeGuess",
                "objectGuess",
                "scan_index",
            )
        },
    )
    half = len(ids) // 2
    np.savez_compressed(HERE / "frames_1.npz", diff3d=inp["diff3d"][ids[:half]])
    np.savez_compressed(HERE / "frames_2.npz", diff3d=inp["diff3d"][ids[half:]])
    digests = {}
    for c in CASES:
        st = {f: np.load(golden / c / f) for f in DIGESTED}
        params = json.loads((golden / c / "params.json").read_text())["case_params"]
        digests[c] = {
            "params": {
                k: params[k]
                for k in ("gridsize", "K", "n_groups", "group_seed", "sequential_sampling")
            }
        }
        for f, keys in DIGESTED.items():
            for k in keys:
                a = st[f][k]
                digests[c][f"{f}/{k}"] = {
                    "sha256": digest(a),
                    "shape": list(a.shape),
                    "dtype": str(a.dtype),
                }
        s1, s2, s3, s4 = (st[f] for f in DIGESTED)
        D, X_loader = s1["diffraction"], s2["X_full_loader_normalize_data"]
        i = int(np.argmax(D))
        gain_loader = np.float32(X_loader.ravel()[i] / D.ravel()[i])
        assert np.array_equal(gain_loader * D, X_loader), "loader X_full is not gain * D"
        scalars = {f"s4_{k}": s4[k] for k in s4.files if s4[k].ndim == 0}
        np.savez_compressed(
            HERE / f"case_{c}.npz",
            nn_indices=s1["nn_indices"],
            normalize_gain=s2["normalize_gain"],
            gain_loader=gain_loader,
            norm_Y_I=s3["norm_Y_I"],
            Y_slice=s1["Y"][:2],
            Y_member_slice=s1["Y_from_sim_patches"][:2],
            Y_maxabs=np.float64(np.abs(s1["Y"]).max()),
            Y_member_maxabs=np.float64(np.abs(s1["Y_from_sim_patches"]).max()),
            Y_I_slice=s3["Y_I"][:2],
            **{
                f"{p}_{k}_slice": s4[f"{p}_{k}"][:1]
                for p in ("seed_era", "main_head")
                for k in ("scaler_out", "scaler_inv_out")
            },
            **scalars,
        )
    (HERE / "golden_digests.json").write_text(json.dumps(digests, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main(pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/golden"))
