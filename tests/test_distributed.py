"""Two localhost processes under `jax.distributed` (CPU, gloo collectives) give the one-process result.

Each process has 2 CPU devices (4 in the mesh, 61 groups: padded to 64) and reads only its half of
the frames from a memory-mapped `.npy`; the frames its groups need from the other process arrive over
the cross-process ring exchange. Process 0 writes the gathered outputs; they are compared here with
`run_chain` on one device.
"""

import json
import os
import socket
import subprocess
import sys
import warnings

import numpy as np
import pytest
from _golden import DATA, max_ulp
from helpers import TESTS

import ptycho_jax as pj

VARIANTS = ("main", "seed")
BIT_EQUAL = (
    "diffraction",
    "Y",
    "nn_indices",
    "Y_I",
    "Y_phi",
    "coords_nominal",
    "coords_nn",
    "coords_offsets",
    "coords_relative",
    "coords_start_nn",
    "coords_start_offsets",
    "coords_start_relative",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def raw():
    return pj.RawData.from_npz(DATA / "input_rawdata.npz")


@pytest.fixture(scope="module")
def two_processes(raw, tmp_path_factory):
    data, out = tmp_path_factory.mktemp("data"), tmp_path_factory.mktemp("out")
    np.savez(
        data / "positions.npz",
        **{
            k: getattr(raw, k)
            for k in (
                "xcoords",
                "ycoords",
                "xcoords_start",
                "ycoords_start",
                "probeGuess",
                "objectGuess",
            )
        },
    )
    np.save(data / "diff3d.npy", raw.diff3d)
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"} | {"JAX_PLATFORMS": "cpu"}
    port = _free_port()
    cmd = [
        sys.executable,
        str(TESTS / "distributed_worker.py"),
        str(data),
        str(out),
        "--port",
        str(port),
        "--num-processes",
        "2",
    ]
    cmd += [a for v in VARIANTS for a in ("--variant", v)]
    procs = [
        subprocess.Popen(
            cmd + ["--process-id", str(i)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=180)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for i, p in enumerate(procs):
        assert p.returncode == 0, (
            f"process {i} failed (rc {p.returncode}):\n{logs[i][-6000:] if i < len(logs) else ''}"
        )
    return out


def test_each_process_loaded_only_its_part(two_processes):
    parts = [json.loads((two_processes / f"loaded_{i}.json").read_text()) for i in range(2)]
    assert [(p["lo"], p["hi"]) for p in parts] == [(0, 256), (256, 512)]
    assert all(p["devices"] == 2 and p["global_devices"] == 4 for p in parts)


@pytest.mark.parametrize("variant", VARIANTS)
def test_two_processes_equal_one(two_processes, raw, variant):
    params = pj.ChainParams(
        gridsize=2, n_groups=61, seed=42, variant=variant, patch_positions="member"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ref = pj.run_chain(raw, params)
    got = dict(np.load(two_processes / f"result_{variant}.npz"))
    g, c = ref.grouped, ref.container
    want = {
        k: getattr(g, k) for k in ("diffraction", "X_full", "Y", "nn_indices", "normalize_gain")
    }
    want |= {
        k: getattr(g, k) for k in BIT_EQUAL if k.startswith("coords_") and k != "coords_nominal"
    }
    want |= {k: getattr(c, k) for k in ("Y_I", "Y_phi", "coords_nominal", "norm_Y_I")}
    for k in BIT_EQUAL:
        a, b = got[k], np.asarray(want[k])
        assert a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes(), k
    for k in ("X_full", "normalize_gain", "norm_Y_I"):
        assert max_ulp(got[k], np.asarray(want[k])) <= 1, k
    assert max_ulp(got["log_scale"], ref.scaler.log_scale_f32) <= 1
    scales = json.loads((two_processes / f"scales_{variant}.json").read_text())
    for k, v in ref.intensity_scales.items():
        w = scales["intensity_scales"][k]
        assert max_ulp(np.float32(w), np.float32(v)) <= 1 and abs(w - v) <= 1e-14 * abs(v), k
    assert max_ulp(np.float32(scales["training_scale"]), np.float32(ref.training_scale)) <= 1
