"""The chain sharded over 8 devices equals one device: gathers and coordinates bit-equal, reductions within 1 ulp.

The 8-device checks need 8 CPU devices, which can only be chosen before JAX starts its backend, so
they run this file as a script in a subprocess with `XLA_FLAGS=--xla_force_host_platform_device_count=8`
(or in-process when the test process already has 8 devices). The script computes per-field
deltas (bit equality, ulp distance) of the sharded and streamed-on-8 chains against `run_chain` and
against the upstream goldens, writes them as JSON, and the tests below assert on those numbers.
"""

import json
import os
import pathlib
import subprocess
import sys
import warnings

import jax
import numpy as np
import pytest
from _golden import DATA, load_case, max_ulp
from helpers import TESTS, assert_equal_chain, chain_deltas

import ptycho_jax as pj
from ptycho_jax._mesh import balanced_blocks, plan_exchange, tail_padded_blocks

DEVICES = 8


# name, golden case (or None), gridsize, groups, variant, patch positions, K, also streamed on 8 devices
CASES = [
    ("gs2_ideal", "gs2_ideal", 2, 64, "main", "upstream", 4, False),
    ("gs2_61_main", None, 2, 61, "main", "member", 4, True),
    ("gs1_61_seed", None, 1, 61, "seed", "member", 4, True),
    ("gs3_29_seed", None, 3, 29, "seed", "member", 10, False),
]


def golden_deltas(result, case: str) -> dict:
    g = load_case(case, "trimmed")
    grouped = result.grouped
    out = {
        "nn_indices": bool(np.array_equal(grouped.nn_indices, g.stage("stage1/nn_indices"))),
        "diffraction": np.asarray(grouped.diffraction).tobytes()
        == np.ascontiguousarray(g.stage("stage1/diffraction")).tobytes(),
        "X_full_ulp": max_ulp(np.asarray(grouped.X_full), g.stage("stage2/X_full")),
        "gain_ulp": max_ulp(np.asarray(grouped.normalize_gain), g.stage("stage2/normalize_gain")),
        "norm_Y_I_ulp": max_ulp(np.asarray(result.container.norm_Y_I), g.stage("stage3/norm_Y_I")),
        "log_scale": bool(result.scaler.log_scale_f32 == g.stage("stage4/main_head_log_scale")),
    }
    for k in (
        "coords_nn",
        "coords_offsets",
        "coords_relative",
        "coords_start_nn",
        "coords_start_offsets",
        "coords_start_relative",
    ):
        out[k] = getattr(grouped, k).tobytes() == g.stage(f"stage1/{k}").tobytes()
    return out


def _layout(result) -> dict:
    X = result.grouped.X_full
    return {
        "devices": len(X.sharding.device_set),
        "shard_rows": int(X.addressable_shards[0].data.shape[0]),
        "rows": int(X.shape[0]),
    }


def eight_device_report() -> dict:
    """Run every case on one device, sharded over 8, and (some) streamed on 8; return the deltas."""
    if len(jax.devices()) < DEVICES:
        raise RuntimeError(f"needs {DEVICES} devices, JAX sees {len(jax.devices())}")
    raw = pj.RawData.from_npz(DATA / "input_rawdata.npz")
    mesh = pj.make_mesh(DEVICES)
    report = {}
    for name, golden, gs, groups, variant, positions, K, streamed in CASES:
        params = pj.ChainParams(
            gridsize=gs, K=K, n_groups=groups, seed=42, variant=variant, patch_positions=positions
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", pj.MirroredPatchWarning)
            ref = pj.run_chain(raw, params)
            sharded = pj.run_chain(raw, params, mesh=mesh)
            entry = {"sharded": chain_deltas(sharded, ref), "layout": _layout(sharded)}
            if golden:
                entry["golden"] = golden_deltas(sharded, golden)
            if streamed:
                chunk = -(-groups // 7)
                entry["streamed"] = chain_deltas(
                    pj.run_chain(raw, params, chunk_groups=chunk, mesh=mesh), ref
                )
        report[name] = entry
    return report


# -- the 8-device run ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def eight(tmp_path_factory):
    if len(jax.devices()) >= DEVICES:
        return eight_device_report()
    out = tmp_path_factory.mktemp("eight") / "report.json"
    env = dict(
        os.environ,
        XLA_FLAGS=f"--xla_force_host_platform_device_count={DEVICES}",
        JAX_PLATFORMS="cpu",
    )
    proc = subprocess.run(
        [sys.executable, str(TESTS / "test_sharding.py"), str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, (
        f"8-device run failed (rc {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    )
    return json.loads(out.read_text())


@pytest.mark.parametrize(
    "case,mode", [(c[0], "sharded") for c in CASES] + [(c[0], "streamed") for c in CASES if c[-1]]
)
def test_eight_devices_equal_one(eight, case, mode):
    assert_equal_chain(eight[case][mode])


def test_eight_devices_layout(eight):
    # B divisible by 8 stays sharded (B/8 rows per device); otherwise padded, masked and sliced back.
    assert eight["gs2_ideal"]["layout"] == {"devices": 8, "shard_rows": 8, "rows": 64}
    assert (
        eight["gs2_61_main"]["layout"]["rows"] == 61
        and eight["gs3_29_seed"]["layout"]["rows"] == 29
    )


def test_eight_devices_match_upstream_golden(eight):
    g = eight["gs2_ideal"]["golden"]
    for k in ("nn_indices", "diffraction", "log_scale") + tuple(
        k for k in g if k.startswith("coords")
    ):
        assert g[k] is True, k
    assert g["X_full_ulp"] <= 1 and g["gain_ulp"] <= 1 and g["norm_Y_I_ulp"] <= 1, g


# -- in-process checks (any device count) --------------------------------------------------------
def _simulate_ring(nn, groups, frames, plan, M):
    """Replay the exchange plan in NumPy: every receiver's buffer, then its gather."""
    D = groups.devices
    frame_ids = frames.scatter(np.arange(M)[:, None], fill=-1)[:, 0].reshape(D, frames.size)
    rounds = [k for k, q in enumerate(plan.sizes) if q]
    got = np.full((groups.padded, nn.shape[1]), -2, np.int64)
    for r in range(D):
        buffer = []
        for k, send in zip(rounds, plan.sends, strict=True):
            o = (r - k) % D
            buffer.append(frame_ids[o][send[o]])
        buffer.append(np.array([-1]))
        buffer = np.concatenate(buffer)
        got[r * groups.size : (r + 1) * groups.size] = buffer[
            plan.local_nn[r * groups.size : (r + 1) * groups.size]
        ]
    return got


@pytest.mark.parametrize("D", [1, 3, 8])
@pytest.mark.parametrize(
    "M,B,C,layout",
    [
        (512, 61, 4, "random"),
        (512, 64, 1, "random"),
        (100, 97, 4, "sequential"),
        (5, 9, 2, "random"),
    ],
)
def test_exchange_plan_delivers_each_member_frame(D, M, B, C, layout):
    rng = np.random.default_rng(D * 1000 + M + B)
    if (
        layout == "sequential"
    ):  # neighbouring groups use neighbouring frames: traffic stays near the diagonal
        nn = (np.arange(B)[:, None] + np.arange(C)[None, :]) % M
    else:
        nn = rng.integers(0, M, size=(B, C))
    groups, frames = tail_padded_blocks(B, D), balanced_blocks(M, D)
    plan = plan_exchange(nn, groups, frames)
    got = _simulate_ring(nn, groups, frames, plan, M)
    np.testing.assert_array_equal(got[:B], nn)
    assert (got[B:] == -1).all()  # padding groups read the zero row
    assert len(plan.sizes) == D and plan.local_nn.dtype == np.int32
    # No device receives more rows than the frames its groups need times the rounds' padding.
    need = max(
        len(np.unique(nn[groups.starts[r] : groups.starts[r] + groups.counts[r]])) for r in range(D)
    )
    assert sum(plan.sizes) <= D * need
    if layout == "sequential" and D == 8:
        assert (
            sum(plan.sizes) <= 3 * need
        )  # a ring of permutes, not an all-to-all padded to the worst pair


def test_blocks():
    g = tail_padded_blocks(61, 8)
    assert (
        g.size == 8
        and g.padded == 64
        and g.counts.tolist() == [8] * 7 + [5]
        and g.valid().sum() == 61
    )
    f = balanced_blocks(10, 4)
    assert f.starts.tolist() == [0, 2, 5, 7] and f.counts.tolist() == [2, 3, 2, 3] and f.size == 3
    assert balanced_blocks(3, 8).counts.sum() == 3


def test_process_frame_range_single_process():
    mesh = pj.make_mesh()
    assert pj.process_frame_range(512, mesh=mesh) == (0, 512)


def test_make_mesh():
    mesh = pj.make_mesh(1)
    assert (
        mesh.axis_names == ("groups",)
        and mesh.size == 1
        and mesh.devices.flat[0] == jax.devices()[0]
    )
    assert pj.make_mesh().size == len(jax.devices())
    assert pj.make_mesh([jax.devices()[0]]).size == 1


@pytest.mark.parametrize(
    "devices,match",
    [
        (0, r"devices: expected an int in \[1, \d+\]"),
        (10**6, "xla_force_host_platform_device_count"),
        ([], "at least one device"),
        (["cpu"], "jax.Device"),
        (True, "got bool"),
        ("cpu", "got str"),
    ],
)
def test_make_mesh_errors(devices, match):
    with pytest.raises(pj.PtychoInputError, match=match):
        pj.make_mesh(devices)


def test_wrong_mesh_is_rejected():
    raw = pj.RawData.from_npz(DATA / "input_rawdata.npz")
    bad = jax.sharding.Mesh(np.asarray(jax.devices()[:1], dtype=object), ("batch",))
    with pytest.raises(pj.PtychoInputError, match="expected one axis named 'groups'"):
        pj.run_chain(raw, pj.ChainParams(n_groups=8), mesh=bad)
    with pytest.raises(pj.PtychoInputError, match="expected a jax.sharding.Mesh"):
        pj.group(raw, mesh="cpu", N=64, gridsize=1, n_groups=4)


def test_group_and_normalize_sharded_on_available_devices():
    """In-process (usually one device): the public pieces agree with `group` / `normalize_data`."""
    raw = pj.RawData.from_npz(DATA / "input_rawdata.npz")
    mesh = pj.make_mesh()
    kw = {"N": 64, "gridsize": 2, "n_groups": 13, "seed": 7, "patch_positions": "member"}
    got, ref = pj.group(raw, mesh=mesh, **kw), pj.group(raw, **kw)
    for k in ("diffraction", "Y", "coords_relative", "coords_start_offsets", "nn_indices"):
        assert np.asarray(getattr(got, k)).tobytes() == np.asarray(getattr(ref, k)).tobytes(), k
    assert max_ulp(np.asarray(got.X_full), np.asarray(ref.X_full)) <= 1
    for variant in ("main", "seed"):
        X, gain = pj.normalize_data(ref.diffraction, 64, mesh=mesh, variant=variant)
        X_ref, gain_ref = pj.normalize_data(ref.diffraction, 64, variant=variant)
        assert (
            max_ulp(np.asarray(X), np.asarray(X_ref)) <= 1
            and max_ulp(np.asarray(gain), np.asarray(gain_ref)) <= 1
        )


@pytest.mark.parametrize(
    "x,N,match",
    [
        (np.zeros((2, 8, 8, 1), np.float32), 8, "zero total energy"),
        (np.ones((2, 8, 8, 1), np.float64), 8, "float32 amplitudes, got float64"),
        (np.ones((2, 8, 8), np.float32), 8, r"must be \(B, N, N, C\)"),
        (np.ones((2, 8, 8, 1), np.float32), 16, "N=16 does not match the frame size 8"),
        (np.full((2, 8, 8, 1), np.nan, np.float32), 8, "non-finite"),
    ],
)
def test_normalize_data_sharded_errors(x, N, match):
    with pytest.raises(pj.NormalizationError, match=match):
        pj.normalize_data(x, N, mesh=pj.make_mesh(1))


if (
    __name__ == "__main__"
):  # the 8-device run: python tests/test_sharding.py OUT.json (with XLA_FLAGS set)
    pathlib.Path(sys.argv[1]).write_text(json.dumps(eight_device_report(), indent=1))
