"""Times the real upstream PtychoPINN on one case; runs in upstream's own environment.

Started by `benchmarks.upstream.time_upstream` as `<upstream python> upstream_timer.py REQUEST.json`
with the upstream checkout on `sys.path`. Imports only the standard library, NumPy and upstream
(never JAX or ptycho_jax). Everything upstream prints goes to stderr; the last stdout line is the
JSON reply: `{"ok": true, "stages": {stage: {"first_s", "times_s", "scale", "minor_faults", "note"}}, ...}`.

Stages, on the request's RawData (an NPZ) and the port's groups `nn` (same groups, same object):
- `group_normalize`: `RawData.generate_grouped_data(N, K, nsamples=n_groups, seed, gridsize)` on a
  RawData without objectGuess (selection, gather, coordinates and `normalize_data`; no patches).
- `container`: `loader.load` on upstream's grouped dict of the port's groups with the port's Y
  (|Y|, angle(Y), `scale_nphotons`).
- `patches`: `raw_data.get_image_patches(objectGuess, coords_offsets[:k], coords_relative[:k], N,
  gridsize)` (as upstream builds Y) on the first k groups, scaled per group to all n_groups.
"""

import contextlib
import importlib.util
import json
import os
import pathlib
import resource
import sys
import time

import numpy as np


@contextlib.contextmanager
def _quiet():
    """Send fd 1 (and Python's stdout) to stderr while upstream runs."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _timed(fn, repeats: int) -> tuple[float, list[float], list[int]]:
    """First call, then `repeats` warm calls: their times and minor page faults (getrusage)."""
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    times, faults = [], []
    for _ in range(repeats):
        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
    return first, times, faults


def _cfg_helper(crosscheck_dir: str):
    """`upstream_cfg` and `_cfg_values` of crosscheck's upstream worker (standard library + NumPy)."""
    spec = importlib.util.spec_from_file_location(
        "_xc_upstream_worker", pathlib.Path(crosscheck_dir) / "_upstream_worker.py"
    )
    mod = importlib.util.module_from_spec(spec)
    sys.path.insert(0, crosscheck_dir)  # the worker imports its sibling `_keys` as a script does
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(crosscheck_dir)
    return mod


def main(req_path: str) -> int:
    req = json.loads(pathlib.Path(req_path).read_text())
    sys.path.insert(0, req["upstream_root"])
    p = req["params"]
    N, K, n_groups, g = int(p["N"]), int(p["K"]), int(p["n_groups"]), int(p["gridsize"])
    repeats = int(req.get("repeats", 3))
    with np.load(req["npz"], allow_pickle=False) as z:
        a = {k: z[k] for k in z.files}
    out: dict = {"ok": True, "stages": {}}
    t0 = time.perf_counter()
    with _quiet():
        import ptycho.params as uparams
        from ptycho import loader, raw_data

        w = _cfg_helper(req["crosscheck_dir"])
        out["import_s"] = time.perf_counter() - t0
        cfg = w._cfg_values({**p, "sequential": False, "oversample": False, "trainable": False}, N)
        with w.upstream_cfg(uparams, cfg):
            args = [a[k] for k in ("xcoords", "ycoords", "xcoords_start", "ycoords_start", "diff3d", "probeGuess", "scan_index")]  # fmt: skip
            bare = raw_data.RawData(*args)
            seed = p.get("seed")

            def group_normalize():
                # nsamples: upstream's own keyword for the group count
                return bare.generate_grouped_data(N, K=K, nsamples=n_groups, seed=seed, gridsize=g)

            first, times, faults = _timed(group_normalize, repeats)
            out["stages"]["group_normalize"] = {
                "first_s": first, "times_s": times, "scale": 1.0, "minor_faults": faults,
                "note": "RawData.generate_grouped_data without objectGuess (selection, gather, coordinates, normalize_data)",
            }  # fmt: skip

            dset = dict(bare._generate_dataset_from_groups(a["nn"], N, K, g))
            dset["Y"] = a["Y"]
            probe = a["probeGuess"]

            def container():
                return loader.load(lambda: dset, probe, which=None, create_split=False)

            first, times, faults = _timed(container, repeats)
            out["stages"]["container"] = {
                "first_s": first, "times_s": times, "scale": 1.0, "minor_faults": faults,
                "note": "loader.load on the port's groups and Y (|Y|, angle(Y), scale_nphotons)",
            }  # fmt: skip

            k = max(1, min(int(req.get("patch_groups", 4)), n_groups))
            offsets = np.asarray(dset["coords_offsets"])[:k]
            relative = np.asarray(dset["coords_relative"])[:k]

            def patches():  # as upstream builds Y in _generate_dataset_from_groups
                return raw_data.get_image_patches(a["objectGuess"], offsets, relative, N=N, gridsize=g)  # fmt: skip

            first, times, faults = _timed(patches, repeats)
            out["stages"]["patches"] = {
                "first_s": first * n_groups / k, "times_s": [t * n_groups / k for t in times], "scale": n_groups / k,
                "minor_faults": faults,  # of the subset call, not scaled
                "note": f"raw_data.get_image_patches (whole-canvas translation per patch) on {k} of {n_groups} groups, scaled per group",
            }  # fmt: skip
            mine = np.asarray(patches())
            out["patches_check"] = {"groups": k, "max_abs_diff": float(np.abs(mine - a["Y"][:k]).max()), "max_abs": float(np.abs(a["Y"][:k]).max())}  # fmt: skip
    out["versions"] = {"numpy": np.__version__}
    with contextlib.suppress(Exception):
        import tensorflow as tf

        out["versions"]["tensorflow"] = tf.__version__
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1]))
    except Exception as e:  # noqa: BLE001 - the parent reports it as the upstream column's reason
        import traceback

        traceback.print_exc()
        print(json.dumps({"ok": False, "error": f"{type(e).__name__}: {e}"}))
        sys.exit(1)
