"""One process of the two-process `run_chain(..., mesh=...)` test (tests/test_distributed.py launches two).

Usage: python distributed_worker.py DATA_DIR OUT_DIR --process-id I --num-processes P --port PORT
[--local-devices L] [--variant main|seed] [--groups B]

DATA_DIR holds `positions.npz` (xcoords, ycoords, xcoords_start, ycoords_start, probeGuess,
objectGuess) and `diff3d.npy`; this process memory-maps `diff3d.npy` and reads only the frames of
`process_frame_range`. It writes `loaded_<I>.json` (the range it read) and, on process 0, the chain
outputs gathered to the host as `result_<variant>.npz`.
"""

import argparse
import json
import os
import pathlib
import sys

import numpy as np


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("data", type=pathlib.Path)
    p.add_argument("out", type=pathlib.Path)
    p.add_argument("--process-id", type=int, required=True)
    p.add_argument("--num-processes", type=int, default=2)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--local-devices", type=int, default=2)
    p.add_argument("--variant", action="append", choices=("main", "seed"))
    p.add_argument("--groups", type=int, default=61)
    p.add_argument("--gridsize", type=int, default=2)
    args = p.parse_args(argv)

    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax

    # Process switches belong to entry points (never to the library): CPU devices and gloo collectives.
    jax.config.update("jax_platforms", "cpu")
    jax.config.update("jax_num_cpu_devices", args.local_devices)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=f"127.0.0.1:{args.port}",
        num_processes=args.num_processes,
        process_id=args.process_id,
        initialization_timeout=60,
    )
    import warnings

    from jax.experimental import multihost_utils

    import ptycho_jax as pj

    def to_host(a):
        if a is None:
            return None
        if isinstance(a, np.ndarray):
            return a
        if a.is_fully_addressable:
            return np.asarray(a)
        if a.is_fully_replicated:
            return np.asarray(a.addressable_data(0))
        return np.asarray(multihost_utils.process_allgather(a, tiled=True))

    mesh = pj.make_mesh()
    meta = np.load(args.data / "positions.npz")
    M = meta["xcoords"].shape[0]
    lo, hi = pj.process_frame_range(M, mesh=mesh)
    frames = np.load(args.data / "diff3d.npy", mmap_mode="r")
    raw = pj.RawData(
        xcoords=meta["xcoords"][lo:hi],
        ycoords=meta["ycoords"][lo:hi],
        xcoords_start=meta["xcoords_start"][lo:hi],
        ycoords_start=meta["ycoords_start"][lo:hi],
        diff3d=np.array(frames[lo:hi]),  # only this process's frames are read from disk
        probeGuess=meta["probeGuess"],
        scan_index=np.zeros(hi - lo, np.int64),
        objectGuess=meta["objectGuess"],
    )
    (args.out / f"loaded_{args.process_id}.json").write_text(
        json.dumps(
            {
                "lo": lo,
                "hi": hi,
                "devices": len(jax.local_devices()),
                "global_devices": len(jax.devices()),
            }
        )
    )
    for variant in args.variant or ["main"]:
        params = pj.ChainParams(
            gridsize=args.gridsize,
            n_groups=args.groups,
            seed=42,
            variant=variant,
            patch_positions="member",
        )
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            result = pj.run_chain(raw, params, mesh=mesh)
        g, c = result.grouped, result.container
        arrays = {
            "diffraction": to_host(g.diffraction),
            "X_full": to_host(g.X_full),
            "normalize_gain": to_host(g.normalize_gain),
            "Y": to_host(g.Y),
            "nn_indices": g.nn_indices,
            "Y_I": to_host(c.Y_I),
            "Y_phi": to_host(c.Y_phi),
            "coords_nominal": to_host(c.coords_nominal),
            "norm_Y_I": to_host(c.norm_Y_I),
            "log_scale": np.asarray(result.scaler.log_scale_f32),
        }
        for k in (
            "coords_nn",
            "coords_offsets",
            "coords_relative",
            "coords_start_nn",
            "coords_start_offsets",
            "coords_start_relative",
        ):
            arrays[k] = getattr(g, k)
        if args.process_id == 0:
            np.savez(args.out / f"result_{variant}.npz", **arrays)
            (args.out / f"scales_{variant}.json").write_text(
                json.dumps(
                    {
                        "intensity_scales": result.intensity_scales,
                        "training_scale": result.training_scale,
                    }
                )
            )
    jax.distributed.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
