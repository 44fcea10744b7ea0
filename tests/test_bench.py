"""The benchmark harness runs end to end at a tiny size and its baselines compute the right thing (no timing assertions)."""

import argparse
import json
import pathlib

import numpy as np
import pytest

import ptycho_jax as pj
from benchmarks import cli, machine, plan, stages
from ptycho_jax._errors import PtychoInputError
from ptycho_jax._patches import extract_patches
from ptycho_jax.app.chain_flags import given_chain_values

GOLDEN = pathlib.Path(__file__).parent / "data" / "golden"


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_tiny_suite_writes_json_markdown_and_plot(tmp_path, capsys):
    assert cli.run(_args("--tiny", "--repeats", "1", "--out", str(tmp_path))) == 0
    doc = json.loads((tmp_path / "cpu-tiny.json").read_text())
    assert doc["schema"] == plan.SCHEMA
    assert doc["machine"]["cpu_count"] >= 1 and doc["versions"]["jax"]
    assert doc["git"]["sha"]
    figures = {(f["stage"], f["impl"]): f for f in doc["figures"] if f["case"] == "tiny"}
    for stage in plan.CHAIN_STAGES:
        assert (stage, "jax") in figures, stage
    assert ("patches", "upstream-np") in figures
    assert {("neighbours", "jax"), ("neighbours", "ckdtree")} <= {
        (f["stage"], f["impl"]) for f in doc["figures"]
    }
    for f in doc["figures"]:
        assert 0 < f["min_s"] <= f["median_s"] <= f["max_s"]
        assert f["bytes"] > 0 and f["n"] >= 1
        # Minor page faults per warm call (getrusage): a non-negative int for every figure.
        faults = f["minor_faults_per_call"]
        assert isinstance(faults, int) and not isinstance(faults, bool) and faults >= 0, f
    # The byte model of a figure is the one specs/benchmarks.md states (normalize: read + write one stack).
    norm = figures[("normalize", "jax")]
    assert norm["bytes"] == 2 * norm["P"] * norm["N"] ** 2 * 4
    # Upstream's whole-canvas patches and the port's local gathers agree (same function, different cost).
    (check,) = [c for c in doc["checks"] if c["case"] == "tiny"]
    assert check["max_abs_diff"] <= 1e-6 * check["max_abs"]
    if "tf-ref" in doc["versions"] and doc["versions"]["tensorflow"]:
        ratio = [r for r in doc["ratios"] if r["case"] == "tiny" and r["stage"] == "end_to_end"]
        assert ratio and ratio[0]["numerator"] == "tf-ref"
    md = (tmp_path / "cpu-tiny.md").read_text()
    assert md.startswith("# ptycho-jax benchmarks: cpu (tiny)")
    assert "| tiny (M=96, B=16, C=4, N=16) | end_to_end |" in md
    assert "minor faults / warm call" in md
    assert (tmp_path / "cpu-tiny.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert capsys.readouterr().out.startswith("# ptycho-jax benchmarks")
    # --render re-renders Markdown and plot from the JSON alone (how a GPU run's JSON is rendered here).
    (tmp_path / "cpu-tiny.md").unlink()
    assert cli.run(_args("--render", str(tmp_path / "cpu-tiny.json"), "--no-plot")) == 0
    assert (tmp_path / "cpu-tiny.md").read_text() == md


@pytest.mark.skipif(
    not (GOLDEN / "gs2_ideal.npz").is_file(), reason="trimmed golden fixture absent"
)
def test_upstream_whole_canvas_baseline_reproduces_golden_patches():
    # Upstream's get_image_patches output for the first 4 groups of gs2_ideal (mirrored positions).
    g = np.load(GOLDEN / "gs2_ideal.npz")
    obj = np.load(GOLDEN / "input_rawdata.npz")["objectGuess"]
    off = (g["coords_offsets"][:1] + g["coords_relative"][:1]).astype(
        np.float32
    )  # group 0, float64 sum then cast
    centres = off[:, 0].transpose(0, 2, 1).reshape(-1, 2)
    patches = stages.upstream_whole_canvas_patches(obj, centres, N=64)
    golden = np.moveaxis(g["Y_head"][0], -1, 0)  # (C, N, N)
    scale = float(np.abs(golden).max())
    np.testing.assert_allclose(patches, golden, rtol=0, atol=1e-6 * scale)
    np.testing.assert_allclose(
        patches, np.asarray(extract_patches(obj, centres, N=64)), rtol=0, atol=1e-6 * scale
    )


def test_upstream_whole_canvas_zero_fill_outside():
    # A patch centred off the object's corner: bilinear zero fill per corner, as upstream's translate.
    obj = np.ones((8, 8), np.complex64)
    centres = np.array([[0.5, 0.5], [-20.0, -20.0]], np.float32)
    up = stages.upstream_whole_canvas_patches(obj, centres, N=4)
    np.testing.assert_allclose(
        up, np.asarray(extract_patches(obj, centres, N=4)), rtol=0, atol=1e-7
    )
    assert np.all(up[1] == 0)


def test_stage_bytes_and_plan_sizes():
    d = {"M": 20_000, "B": 5_000, "C": 4, "N": 64, "P": 20_000, "H": 1700, "W": 1700}
    S = 20_000 * 64 * 64 * 4
    assert (
        plan.stage_bytes("gather_normalize", d) == 2 * S
    )  # specs/benchmarks.md §4: the fused floor
    assert plan.stage_bytes("patches", d) == 2 * S + 1700 * 1700 * 8
    full = {c.name: c for c in plan.build_plan("full", device="cpu")}
    large = full["large"]
    assert (large.M, large.B, large.gridsize, large.N) == (20_000, 5_000, 2, 64)
    assert {1, 2, 3} <= {c.gridsize for c in full.values()} and {64, 128} <= {
        c.N for c in full.values()
    }
    assert min(c.M for c in full.values() if c.family == "positions") == 1_000
    assert max(c.M for c in full.values() if c.family == "positions") == 1_000_000
    assert {64, 50_000} <= {c.B for c in full.values()}
    gpu = plan.build_plan("full", device="gpu")
    assert [c.name for c in gpu[:4]] == ["gs2_ideal", "large", "B16384", "B50000"]


def test_host_memory_probe_sees_an_allocation():
    mem = machine.HostMemory()
    if not mem.resettable:
        pytest.skip("peak RSS cannot be reset on this system")
    base = mem.reset()
    a = np.ones(
        64 * 2**20 // 8
    )  # 64 MiB, touched (above glibc's largest mmap threshold, so fresh pages)
    grown = mem.peak() - base
    del a
    assert 63 * 2**20 <= grown <= 128 * 2**20


def test_bad_impls_are_rejected(tmp_path):
    with pytest.raises(PtychoInputError, match="--impls"):
        cli.run(_args("--tiny", "--impls", "tf-ref", "--out", str(tmp_path)))
    with pytest.raises(PtychoInputError, match="--impls"):
        cli.run(_args("--tiny", "--impls", "jax,torch", "--out", str(tmp_path)))


def test_chain_flags_set_every_case():
    base = plan.build_plan("tiny", device="cpu")
    assert plan.apply_chain_values(base, {}) == base
    args = _args(
        "--tiny",
        "--N",
        "8",
        "--gridsize",
        "1",
        "--n-groups",
        "8",
        "--K",
        "5",
        "--seed",
        "7",
        "--nphotons",
        "1e6",
        "--variant",
        "seed",
        "--chunk-groups",
        "4",
    )
    tiny, positions = plan.apply_chain_values(
        base, given_chain_values(args), devices=args.devices, chunk_groups=args.chunk_groups
    )
    assert (tiny.N, tiny.gridsize, tiny.B, tiny.K, tiny.seed, tiny.nphotons, tiny.chunk_groups) == (
        8,
        1,
        8,
        5,
        7,
        1e6,
        4,
    )
    assert tiny.params() == pj.ChainParams(
        N=8, gridsize=1, K=5, n_groups=8, seed=7, nphotons=1e6, variant="seed"
    )
    assert positions.N == 16 and positions.B == 8  # positions-only cases have no frames to resize
    more = plan.apply_chain_values(base, {"n_groups": 200})[0]
    assert more.M >= 200 and more.B == 200  # enough positions for the groups asked for


def test_the_installed_command_has_no_bench(capsys):
    # the suite lives in the repository, not in the wheel: `python -m benchmarks` from a checkout
    from ptycho_jax.app.cli import main

    for argv in (["bench", "--tiny"], ["-q", "bench"], ["bench", "--help"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert err.splitlines() == [
            "ptycho-jax: error: bench: the benchmark suite is not part of the installed command; "
            "run it from a source checkout (the repository root) with `python -m benchmarks`"
        ], (argv, err)


def test_minor_faults_per_call_counts_a_fresh_allocation():
    from benchmarks.timing import minor_faults, minor_faults_per_call

    assert minor_faults_per_call(None) is None and minor_faults_per_call([]) is None
    assert minor_faults_per_call([3, 1, 2]) == 2
    f0 = minor_faults()
    a = np.ones(64 * 2**20 // 8)  # 64 MiB written: thousands of fresh pages (4 KiB, or 2 MiB huge)
    assert minor_faults() - f0 >= 16 and a[-1] == 1.0


def test_foreign_port_and_resident_frames_are_timed_beside_ours(tmp_path):
    port = "ptycho_jax.crosscheck.examples.numpy_port:NumpyPort"
    argv = ("--tiny", "--repeats", "1", "--out", str(tmp_path), "--no-plot", "--port", port)
    assert cli.run(_args(*argv, "--impls", "jax,jax-resident,port")) == 0
    doc = json.loads((tmp_path / "cpu-tiny.json").read_text())
    figs = {(f["stage"], f["impl"]): f for f in doc["figures"] if f["case"] == "tiny"}
    for stage in ("gather_normalize", "scaler", "intensity_scale"):
        assert port in figs[(stage, "port")]["note"], stage
        assert any(
            r["stage"] == stage and r["numerator"] == "port" and r["denominator"] == "jax"
            for r in doc["ratios"]
        ), stage
    # What the example port does not compute is cut, with the reason.
    cuts = {(c["stage"], c["impl"]): c["reason"] for c in doc["cuts"] if c["case"] == "tiny"}
    assert "container" in cuts[("container", "port")]
    assert "grouping" in cuts[("selection", "port")]
    # Frames on the device: the one transfer apart, the chain from resident frames, the bandwidth.
    assert ("h2d", "jax-resident") in figs and ("end_to_end", "jax-resident") in figs
    assert doc["copy_bandwidth"]["h2d"]["gbps"] > 0
    assert any("RawData.on_device, the one transfer" in n for n in doc["notes"])
    md = (tmp_path / "cpu-tiny.md").read_text()
    assert "port / jax" in md and "jax-resident / jax" in md
