"""Scaling of the sharded and streamed chain over 1, 2, 4 and 8 devices (writes results/scaling.{json,md}).

Each device count runs in its own subprocess with `XLA_FLAGS=--xla_force_host_platform_device_count=D`
(the device count is fixed when JAX starts). On a CPU-only machine the "devices" are threads of the
same cores, so the figures show overhead and correctness of the sharded path, not speed-up; on a
multi-GPU node run it with `--platform gpu` to measure real scaling.

    python benchmarks/scaling.py                               # 20,000 positions, 5,000 groups: ~2 min on 2 cores
    python benchmarks/scaling.py --positions 8000 --groups 2000  # quicker
"""

import argparse
import hashlib
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
RESULTS = HERE / "results"


def _synthetic(positions: int, N: int, seed: int):
    import numpy as np

    from ptycho_jax.internal import scan_raw

    rng = np.random.default_rng(seed)
    side = int(np.ceil(np.sqrt(positions)))
    gx, gy = np.meshgrid(np.arange(side) * 3.0, np.arange(side) * 3.0)
    x = (gx.ravel()[:positions] + rng.uniform(-0.5, 0.5, positions) + 100).astype(np.float64)
    y = (gy.ravel()[:positions] + rng.uniform(-0.5, 0.5, positions) + 100).astype(np.float64)
    frames = (rng.random((positions, N, N), dtype=np.float32) ** 3 * np.float32(20)).astype(
        np.float32
    )
    return scan_raw(x, y, frames)


def _digest(result) -> str:
    import numpy as np

    h = hashlib.sha256()
    for a in (result.grouped.X_full, result.grouped.normalize_gain, result.container.norm_Y_I):
        h.update(np.ascontiguousarray(np.asarray(a)).tobytes())
    h.update(result.grouped.coords_relative.tobytes())
    return h.hexdigest()[:16]


def _time(fn, repeats: int) -> dict:
    import jax

    t0 = time.perf_counter()
    result = fn()
    jax.block_until_ready((result.grouped.X_full, result.container.X, result.container.Y_I))
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        r = fn()
        jax.block_until_ready((r.grouped.X_full, r.container.X, r.container.Y_I))
        times.append(time.perf_counter() - t0)
    return {
        "first_call_s": first,
        "min_s": min(times),
        "median_s": statistics.median(times),
        "repeats": repeats,
        "digest": _digest(result),
    }


def worker(args) -> dict:
    import jax

    import ptycho_jax as pj

    D = len(jax.devices())
    raw = _synthetic(args.positions, args.N, args.seed)
    params = pj.ChainParams(
        gridsize=args.gridsize, n_groups=args.groups, seed=42, patch_positions="member"
    )
    t0 = time.perf_counter()
    nn = pj.select_groups(raw.positions(), params)
    selection = time.perf_counter() - t0
    mesh = pj.make_mesh(D)
    chunk = -(-args.groups // 7)
    out = {"devices": D, "selection_s": selection, "chunk_groups": chunk, "runs": {}}
    if D == 1:
        out["runs"]["one_shot"] = _time(
            lambda: pj.run_chain(raw, params, nn_indices=nn), args.repeats
        )
    out["runs"]["sharded"] = _time(
        lambda: pj.run_chain(raw, params, mesh=mesh, nn_indices=nn), args.repeats
    )
    out["runs"]["streamed"] = _time(
        lambda: pj.run_chain(raw, params, chunk_groups=chunk, mesh=mesh, nn_indices=nn),
        args.repeats,
    )
    return out


def _markdown(report: dict) -> str:
    s = report["setup"]
    lines = [
        "# Scaling of the sharded and streamed chain",
        "",
        (
            f"{s['positions']} positions of {s['N']}x{s['N']}, {s['groups']} groups of gridsize {s['gridsize']} "
            f"(C = {s['gridsize'] ** 2}), variant main, no object patches; streamed chunks of "
            f"{report['chunk_groups']} groups (1/7 of them). Platform: {s['platform']}, {s['cpu_count']} CPU "
            f"cores, JAX {s['jax']}."
        ),
        "",
        f"> {s['note']}",
        "",
        "| devices | path | first call (s, incl. compile) | min (s) | median (s) | output digest |",
        "| ---: | --- | ---: | ---: | ---: | --- |",
    ]
    for r in report["per_device_count"]:
        for path, t in r["runs"].items():
            lines.append(
                f"| {r['devices']} | {path} | {t['first_call_s']:.2f} | {t['min_s']:.2f} | {t['median_s']:.2f} | `{t['digest']}` |"
            )
    lines += [
        "",
        (
            f"Group selection (host KD-tree, the same for every path): "
            f"{report['per_device_count'][0]['selection_s']:.2f} s, not included above (the groups are injected)."
        ),
        "",
        (
            "All outputs bit-identical across paths and device counts (X_full, gain, norm_Y_I, coordinates): "
            f"**{'yes' if report['all_digests_equal'] else 'NO'}**."
        ),
        "",
        "Reproduce: `python benchmarks/scaling.py` (timings on a shared 2-core machine are noisy; compare min).",
        "",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--positions", type=int, default=20000)
    p.add_argument("--groups", type=int, default=5000)
    p.add_argument("--N", type=int, default=64)
    p.add_argument("--gridsize", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device-counts", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument(
        "--platform", default="cpu", help="cpu (forced host devices) or gpu (real devices)"
    )
    p.add_argument("--worker-out", type=pathlib.Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.worker_out is not None:
        import jax

        jax.config.update("jax_platforms", args.platform)
        args.worker_out.write_text(json.dumps(worker(args)))
        return 0

    import jax

    per = []
    with tempfile.TemporaryDirectory() as tmp:
        for D in args.device_counts:
            out = pathlib.Path(tmp) / f"d{D}.json"
            env = dict(os.environ, JAX_PLATFORMS=args.platform)
            if args.platform == "cpu":
                env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={D}"
            else:
                env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in range(D))
            cmd = (
                [sys.executable, __file__, "--worker-out", str(out)]
                + [
                    a
                    for k in ("positions", "groups", "N", "gridsize", "repeats", "seed")
                    for a in (f"--{k}", str(getattr(args, k)))
                ]
                + ["--platform", args.platform]
            )
            t0 = time.perf_counter()
            subprocess.run(cmd, env=env, check=True)
            print(
                f"scaling: {D} device(s) done in {time.perf_counter() - t0:.1f} s", file=sys.stderr
            )
            per.append(json.loads(out.read_text()))
    digests = {t["digest"] for r in per for t in r["runs"].values()}
    cpu = os.cpu_count()
    report = {
        "setup": {
            "positions": args.positions,
            "N": args.N,
            "groups": args.groups,
            "gridsize": args.gridsize,
            "dtype": "float32 frames, float64 coordinates",
            "platform": args.platform,
            "machine": platform.machine(),
            "cpu_count": cpu,
            "python": platform.python_version(),
            "jax": jax.__version__,
            "note": (
                f"CPU 'devices' are forced host devices sharing the same {cpu} cores, so more devices cannot be "
                "faster here: these figures measure the sharding overhead and check that every device count "
                "gives the same numbers. Run with --platform gpu on a multi-GPU node for real scaling."
                if args.platform == "cpu"
                else "Real devices."
            ),
        },
        "chunk_groups": per[0]["chunk_groups"],
        "per_device_count": per,
        "all_digests_equal": len(digests) == 1,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "scaling.json").write_text(json.dumps(report, indent=1) + "\n")
    (RESULTS / "scaling.md").write_text(_markdown(report))
    print(_markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
