"""The `upstream` backend on the real upstream code (`../shared/upstream`) in its own environment.

Needs the upstream environment (`PTYCHO_UPSTREAM_PYTHON` or `.venv-upstream/`, see .ci/run) and
the shared goldens. Without them these tests skip with the reason, except under
`PTYCHO_REQUIRE_UPSTREAM=1` (set by CI), where they fail.
"""

import json
import subprocess
import sys
import types

import numpy as np
import pytest
from _upstream import GOLDEN, ROOT, require_upstream

import ptycho_jax as pj
from ptycho_jax.crosscheck import upstream as up
from ptycho_jax.crosscheck.backends import REQUIRED, STAGES, GoldenBackend, resolve_backend

# upstream's printing arrives as UpstreamOutput warnings (stage notes in the harness)
pytestmark = pytest.mark.filterwarnings("ignore::ptycho_jax.crosscheck.upstream.UpstreamOutput")

CASES = ("gs1_ideal", "gs2_ideal", "gs2_sequential")
UPSTREAM_NOISE = ("neighbor-sampled", "DEBUG:", "INFO:", "loader:", "PtychoDataContainer")


@pytest.fixture(scope="module")
def upstream():
    require_upstream()
    b = up.UpstreamBackend()
    yield b
    b.close()


def _case(name):
    d = GOLDEN / name
    raw = pj.RawData.from_npz(d / "input_rawdata.npz")
    golden = GoldenBackend(d)
    return raw, golden, pj.ChainParams(**golden.recorded_params())


def _assert_complete(res, *, label):
    from ptycho_jax.crosscheck.render import format_failure

    assert res.passed, f"{label}:\n{format_failure(res)}"
    by_name = {s.name: s for s in res.stages}
    assert set(by_name) == set(STAGES), label
    for stage in STAGES:
        s = by_name[stage]
        assert s.skipped is None, f"{label} {stage} skipped: {s.skipped}"
        compared = {a.name.split(".")[-1] for a in s.arrays if a.status == "compared"}
        missing = set(REQUIRED[stage]) - compared
        assert not missing, f"{label} {stage}: not compared {sorted(missing)}"


# ---------------------------------------------------------------------------------------------
# no upstream needed


def test_cfg_scope_restores_in_place_even_on_error():
    params = types.SimpleNamespace(cfg={"N": 128, "kept": "yes"})
    cfg = params.cfg
    before = dict(cfg)
    np.random.seed(7)
    state = np.random.get_state()
    with pytest.raises(RuntimeError, match="boom"), up.upstream_cfg(params, {"N": 32, "new": 1}):
        assert cfg["N"] == 32 and cfg["new"] == 1
        np.random.seed(0)
        np.random.rand()
        raise RuntimeError("boom")
    assert params.cfg is cfg and cfg == before
    after = np.random.get_state()
    assert np.array_equal(after[1], state[1]) and after[2:] == state[2:]


def test_readme_builds_the_upstream_environment_as_ci_does():
    """README's crosscheck section gives CI's command for the upstream environment, verbatim,
    and names every variable the upstream/torch backends and their tests read."""
    readme = (
        (ROOT / "README.md").read_text().split("## Cross-check a port", 1)[1].split("\n## ", 1)[0]
    )
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    build = [line for line in ci if line.startswith("python3 -m venv .venv-upstream")]
    assert len(build) == 1 and f"```bash\n{build[0]}\n```" in readme
    for word in (
        up.ENV_PYTHON,
        up.ENV_PATH,
        "PTYCHO_REQUIRE_UPSTREAM",
        "--port ptycho_torch",
        "--reference upstream",
    ):
        assert word in readme, word
    assert any(line.strip() == "export PTYCHO_REQUIRE_UPSTREAM=1" for line in ci)


def test_missing_environment_or_code_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv(up.ENV_PYTHON, str(tmp_path / "no-python"))
    with pytest.raises(pj.BackendUnavailableError, match="no such interpreter"):
        resolve_backend("upstream")
    monkeypatch.setenv(up.ENV_PYTHON, sys.executable)
    monkeypatch.setenv(up.ENV_PATH, str(tmp_path))
    with pytest.raises(pj.BackendUnavailableError, match=r"ptycho/params\.py"):
        resolve_backend("upstream")
    with pytest.raises(pj.BackendUnavailableError, match=r"ptycho/params\.py"):
        resolve_backend("ptycho_torch")


def test_recover_gain_reproduces_the_product_bit_for_bit():
    rng = np.random.default_rng(0)
    frames = rng.random((8, 16, 16, 4), dtype=np.float32) * 30
    g = np.float32(0.5608061)
    out = g * frames
    assert up._w.recover_gain(out, frames) == g
    with pytest.raises(RuntimeError, match="not a float32 scalar"):
        up._w.recover_gain(out + np.float32(1e-3), frames)


# ---------------------------------------------------------------------------------------------
# the real upstream


@pytest.mark.parametrize("case", CASES)
def test_upstream_equals_each_golden_on_every_stage_and_array(upstream, case):
    from ptycho_jax.crosscheck.run import run_crosscheck

    raw, golden, params = _case(case)
    res = run_crosscheck(raw, port=upstream, reference=golden, params=params)
    _assert_complete(res, label=f"upstream vs golden {case}")
    # bit for bit where the goldens say so: groups, coordinates, X_full and its gain, scaler
    exact = {
        "grouped": ("diffraction", "coords_nn", "coords_relative"),
        "normalize": ("X_full", "normalize_gain"),
        "scaler": ("seed_era.scaler_out", "main_head.scaler_out", "main_head.log_scale"),
        "container": ("X", "norm_Y_I", "Y_I"),
    }
    for stage, names in exact.items():
        arrays = {a.name: a for a in res.stage(stage).arrays}
        for n in names:
            assert arrays[n].max_abs == 0.0, (case, stage, n, arrays[n].max_abs)
    # upstream's printing went into the notes, not to stdout
    notes = [n for s in res.stages for n in s.notes]
    assert any("UpstreamOutput" in n and "neighbor-sampled" in n for n in notes), notes[:3]


@pytest.mark.parametrize("case", CASES)
def test_jax_against_upstream_compares_everything(upstream, case):
    from ptycho_jax.crosscheck.run import run_crosscheck

    raw, _, params = _case(case)
    res = run_crosscheck(raw, port="jax", reference=upstream, params=params)
    _assert_complete(res, label=f"jax vs upstream {case}")
    c = res.counts()
    assert (c["required"], c["compared"], c["uncompared"], c["excepted"], c["failed"]) == (
        37,
        37,
        0,
        0,
        0,
    )


def test_injected_groups_are_built_by_upstream(upstream):
    raw, golden, params = _case("gs2_ideal")
    own = upstream.grouping(raw, params)["nn_indices"]
    other = np.ascontiguousarray(own[::-1][:16])
    g = upstream.grouped(raw, params, nn_indices=other)
    assert g["diffraction"].shape == (16, 64, 64, 4)
    assert np.array_equal(g["diffraction"], np.transpose(raw.diff3d[other], (0, 2, 3, 1)))
    assert np.array_equal(g["coords_nn"][:, 0, 0, :], raw.xcoords[other])
    c = upstream.container(raw, params, nn_indices=other)
    assert np.array_equal(c["nn_indices"], other)


def test_global_state_is_restored_after_every_request(upstream):
    raw, _, params = _case("gs1_ideal")
    upstream.worker.request(
        "seed_global_rng", seed=123, cfg={"user_key": "kept", "N": 999}, log_scale=7.5
    )
    before = upstream.state()
    nn = upstream.grouping(raw, params)["nn_indices"]
    upstream.normalize(raw, params, nn_indices=nn[:8])  # a fresh run with injected groups
    upstream.scaler(np.ones((2, 64, 64, 1), np.float32), scale=494.1, trainable=True)
    after = upstream.state()
    assert after["cfg"]["N"] == "999" and after["cfg"]["user_key"] == "'kept'"
    assert after == before
    assert after["log_scale"] == pytest.approx(np.log(7.5), rel=1e-6)


def test_cli_stdout_carries_only_the_verdict(tmp_path):
    require_upstream()
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "ptycho_jax.app.cli",
            "crosscheck",
            "--port",
            "upstream",
            "--reference",
            f"golden:{GOLDEN / 'gs1_ideal'}",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[0] == f"crosscheck upstream vs golden:{GOLDEN / 'gs1_ideal'}: PASS", proc.stdout
    assert lines[1].startswith("PASS (exit 0): 37 of 37 required arrays compared"), proc.stdout
    # the verdict and its stage table only: no upstream/TF output, no 'wrote' line (stderr)
    assert lines[2] == "" and all(line.startswith("|") for line in lines[3:]), proc.stdout
    assert len(lines) == 3 + 2 + 7, proc.stdout  # header, separator, one row per stage
    assert "wrote " in proc.stderr and "wrote " not in proc.stdout
    for noise in UPSTREAM_NOISE:
        assert noise not in proc.stdout, (noise, proc.stdout)
    data = json.loads((out / "crosscheck.json").read_text())
    notes = [n for s in data["stages"] for n in s["notes"]]
    assert any("neighbor-sampled" in n for n in notes)


def test_upstream_error_is_reported_and_the_worker_keeps_serving(upstream):
    import dataclasses

    raw, _, params = _case("gs2_ideal")
    too_many = dataclasses.replace(params, n_groups=600)  # > 512 points, oversampling off
    before = upstream.state()
    with pytest.raises(up.WorkerError, match="oversampling is required but not enabled"):
        upstream.grouping(raw, too_many)
    assert upstream.state() == before  # params.cfg and the RNG restored after the error
    assert upstream.grouping(raw, params)["nn_indices"].shape == (64, 4)
