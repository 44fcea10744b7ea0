"""The harness end to end: jax vs tf and vs golden:DIR, the output files, the CLI and the pytest helper."""

import argparse
import json
import pathlib
import textwrap

import numpy as np
import pytest
from _golden import SHARED as GOLDEN

pytest.importorskip("tensorflow")

import ptycho_jax as pj
from ptycho_jax.app import crosscheck_cli as cli
from ptycho_jax.crosscheck.backends import GoldenBackend, TFBackend, resolve_backend
from ptycho_jax.crosscheck.compare import Verdict
from ptycho_jax.crosscheck.errors import HarnessInputError
from ptycho_jax.crosscheck.pytest_plugin import (
    assert_backends_match,
    crosscheck_match,  # noqa: F401 - the plugin's fixture
)
from ptycho_jax.crosscheck.render import write_outputs
from ptycho_jax.crosscheck.run import run_crosscheck
from ptycho_jax.crosscheck.synthetic import synthetic_raw

ROOT = pathlib.Path(__file__).resolve().parents[1]
N = 32
PARAMS = pj.ChainParams(N=N, gridsize=2, K=4, n_groups=16, seed=3, nphotons=1e6)


@pytest.fixture(scope="module")
def raw():
    return synthetic_raw()


@pytest.fixture(scope="module")
def tf_backend():
    return TFBackend()


@pytest.fixture(scope="module")
def recorded(tmp_path_factory, raw, tf_backend):
    """A golden-layout folder recorded from the TF reference on the synthetic scan."""
    d = tmp_path_factory.mktemp("golden_case")
    nn = tf_backend.grouping(raw, PARAMS)["nn_indices"]
    g = tf_backend.grouped(raw, PARAMS, nn_indices=nn)
    pt = tf_backend.patches(raw, PARAMS, nn_indices=nn)
    main = tf_backend.normalize(raw, PARAMS, nn_indices=nn)
    seed = tf_backend.normalize(
        raw, pj.ChainParams(**{**PARAMS.to_dict(), "variant": "seed"}), nn_indices=nn
    )
    c = tf_backend.container(raw, PARAMS, nn_indices=nn)
    sc = tf_backend.intensity_scales(raw, PARAMS, nn_indices=nn)
    np.savez(
        d / "stage1_grouping.npz", nn_indices=nn, Y=pt["Y"], Y_from_sim_patches=pt["Y_member"], **g
    )
    np.savez(
        d / "stage2_normalize.npz",
        X_full=main["X_full"],
        normalize_gain=main["normalize_gain"],
        X_full_loader_normalize_data=seed["X_full"],
    )
    np.savez(d / "stage3_container.npz", **c)
    s4 = {k: np.float64(v) for k, v in sc.items()}
    for prefix, key in (
        ("seed_era", "seed_era_dataset_derived_scale_normalized_X"),
        ("main_head", "main_head_train_pinn_calculate_intensity_scale"),
    ):
        out = tf_backend.scaler(c["X"][:4], scale=sc[key])
        s4.update(
            {
                f"{prefix}_scaler_in": c["X"][:4],
                f"{prefix}_intensity_scale_in": np.float64(sc[key]),
                f"{prefix}_log_scale": out["log_scale"],
                f"{prefix}_scaler_out": out["scaler_out"],
                f"{prefix}_scaler_inv_out": out["scaler_inv_out"],
            }
        )
    np.savez(d / "stage4_intensity.npz", **s4)
    raw.to_npz(d / "input_rawdata.npz")
    (d / "params.json").write_text(
        json.dumps(
            {
                "case_params": {
                    "gridsize": 2,
                    "K": 4,
                    "n_groups": 16,
                    "group_seed": 3,
                    "sequential_sampling": False,
                    "sim": {"N": N, "nphotons": 1e6},
                }
            }
        )
    )
    return d


def test_jax_matches_recorded_golden_layout(raw, recorded):
    res = run_crosscheck(raw, port="jax", reference=f"golden:{recorded}", params=PARAMS)
    assert res.passed and res.verdict == Verdict.PASS
    assert all(s.skipped is None for s in res.stages), [(s.name, s.skipped) for s in res.stages]
    assert res.counts()["uncompared"] == 0 and res.counts()["excepted"] == 0
    # a recording answers only what it recorded: other parameters are refused up front (exit 2),
    # never a cascade of skipped stages
    other = pj.ChainParams(**{**PARAMS.to_dict(), "seed": 4})
    with pytest.raises(HarnessInputError, match="seed: recorded 3, asked for 4"):
        run_crosscheck(raw, port="jax", reference=f"golden:{recorded}", params=other)
    # variant seed: the recording holds the seed copy of X_full but not its gain, the container,
    # the X-derived scales or scaler runs on the seed X. A reference's absence is never an
    # exception (issue 18: this route used to PASS with 20 arrays uncompared): INCOMPLETE.
    seed = run_crosscheck(
        raw,
        port="jax",
        reference=f"golden:{recorded}",
        params=pj.ChainParams(**{**PARAMS.to_dict(), "variant": "seed"}),
    )
    assert not seed.passed and seed.verdict == Verdict.INCOMPLETE
    assert seed.stage("container").verdict == Verdict.INCOMPLETE
    assert seed.stage("scaler").verdict == Verdict.INCOMPLETE
    assert "normalize_gain" in dict(seed.stage("normalize").uncompared)
    assert seed.counts()["excepted"] == 0 and seed.counts()["uncompared"] == 1 + 10 + 3 + 6
    assert seed.stage("normalize").counts()["compared"] == 1  # X_full vs the loader copy


def test_outputs_are_written(raw, tf_backend, tmp_path):
    class Doubled:
        name = "tf-doubled-X"

        def __getattr__(self, item):
            return getattr(tf_backend, item)

        def normalize(self, *a, **k):
            out = dict(tf_backend.normalize(*a, **k))
            out["X_full"] = out["X_full"] * np.float32(2)
            return out

    res = run_crosscheck(raw, port=Doubled(), reference=tf_backend, params=PARAMS)
    assert not res.passed
    paths = write_outputs(res, tmp_path / "out")
    md = paths["markdown"].read_text()
    assert md.startswith("# Cross-check: `tf-doubled-X` (port) vs `tf` (reference)")
    table_at = md.index("| stage | verdict |")
    assert (
        table_at
        < md.index("## Per-array deltas")
        < md.index("## Diagnoses")
        < md.index("## Intensity Statistics")
    )
    assert "| normalize | FAIL |" in md and "constant scale factor 2" in md
    assert md.count("## Intensity Statistics — ") == 2
    payload = json.loads(paths["json"].read_text())
    assert payload["passed"] is False and payload["verdict"] == "FAIL"
    stages = {s["name"]: s for s in payload["stages"]}
    assert list(stages) == [
        "grouping",
        "grouped",
        "normalize",
        "patches",
        "intensity_scales",
        "scaler",
        "container",
    ]
    x = {a["name"]: a for a in stages["normalize"]["arrays"]}["X_full"]
    assert x["passed"] is False and x["diagnosis_class"] == "scale_factor"
    assert {
        "max_abs",
        "max_rel",
        "max_ulp",
        "p99_ulp",
        "n_beyond",
        "worst_index",
        "worst_port",
        "worst_ref",
        "nan_port",
        "nan_ref",
        "inf_port",
        "inf_ref",
        "dtype_port",
        "dtype_ref",
    } <= set(x)
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "crosscheck.json",
        "crosscheck.md",
        "crosscheck.png",
    ]


def _args(**kw) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    argv = []
    for k, v in kw.items():
        argv += [f"--{k.replace('_', '-')}", str(v)]
    return parser.parse_args(argv)


def test_cli_exit_codes(raw, tmp_path, monkeypatch, capsys):
    npz = tmp_path / "scan.npz"
    raw.to_npz(npz)
    common = {"input": npz, "gridsize": 2, "n_groups": 16, "seed": 3, "nphotons": 1e6}
    assert cli.run(_args(out=tmp_path / "ok", **common)) == cli.ExitCode.OK
    assert (tmp_path / "ok" / "crosscheck.json").is_file()
    assert "jax vs tf: PASS" in capsys.readouterr().out

    mod = tmp_path / "mods"
    mod.mkdir()
    (mod / "my_broken_port.py").write_text(
        textwrap.dedent("""
        import numpy as np
        from ptycho_jax.crosscheck.backends import TFBackend

        class Backend(TFBackend):
            name = "my-broken-port"

            def grouped(self, raw, params, *, nn_indices=None):
                out = dict(super().grouped(raw, params, nn_indices=nn_indices))
                out["coords_relative"] = -out["coords_relative"]
                return out
    """)
    )
    monkeypatch.syspath_prepend(str(mod))
    rc = cli.run(_args(out=tmp_path / "bad", port="my_broken_port:Backend", **common))
    assert rc == cli.ExitCode.MISMATCH
    assert "sign flip of relative offsets" in (tmp_path / "bad" / "crosscheck.md").read_text()

    tol = tmp_path / "loose.toml"
    tol.write_text("[stages.grouped.float64]\nexact = false\nrtol = 3\n")
    assert (
        cli.run(
            _args(out=tmp_path / "loose", port="my_broken_port:Backend", tolerances=tol, **common)
        )
        == 0
    )

    capsys.readouterr()
    assert cli.run(_args(out=tmp_path / "x", input=tmp_path / "missing.npz")) == cli.ExitCode.USAGE
    assert cli.run(_args(out=tmp_path / "x", reference="nonsense", **common)) == cli.ExitCode.USAGE
    assert (
        cli.run(_args(out=tmp_path / "x", port="no_such_module:Backend", **common))
        == cli.ExitCode.USAGE
    )
    assert (
        cli.run(_args(out=tmp_path / "x", reference=f"golden:{tmp_path}", **common))
        == cli.ExitCode.USAGE
    )
    tol.write_text("[stages.grouped.float64]\nulps = 1\n")
    assert cli.run(_args(out=tmp_path / "x", tolerances=tol, **common)) == cli.ExitCode.USAGE
    err = capsys.readouterr().err
    assert "missing.npz" in err and "golden" in err and "unknown keys" in err


def test_assert_backends_match(raw, tf_backend, crosscheck_match):  # noqa: F811
    res = crosscheck_match("jax", tf_backend, raw, params=PARAMS)
    assert res.passed

    class Shifted:
        name = "tf-shifted-patches"

        def __getattr__(self, item):
            return getattr(tf_backend, item)

        def patches(self, *a, **k):
            out = dict(tf_backend.patches(*a, **k))
            out["Y"] = np.roll(out["Y"], -1, axis=2)
            return out

    with pytest.raises(AssertionError) as exc:
        assert_backends_match(Shifted(), tf_backend, raw, params=PARAMS)
    text = str(exc.value)
    assert "| patches | FAIL |" in text and "integer-pixel shift" in text and "- patches/Y:" in text


def test_resolve_backend_errors(tmp_path):
    with pytest.raises(pj.BackendUnavailableError, match="expected jax, tf"):
        resolve_backend("torchvision")
    with pytest.raises(pj.BackendUnavailableError, match="has no attribute"):
        resolve_backend("ptycho_jax.crosscheck.backends:NoSuchThing")
    with pytest.raises(pj.BackendUnavailableError, match="stage1_grouping.npz"):
        resolve_backend(f"golden:{tmp_path}")
    b = resolve_backend("ptycho_jax.crosscheck.backends:TFBackend")
    assert isinstance(b, TFBackend)


@pytest.mark.parametrize("case", ["gs2_ideal", "gs1_ideal", "gs2_sequential"])
def test_jax_matches_shared_goldens(case):
    d = GOLDEN / case
    if not (d / "stage1_grouping.npz").is_file():
        pytest.skip(f"full goldens not present at {GOLDEN}")
    res = assert_backends_match("jax", f"golden:{d}", d)
    assert all(s.skipped is None for s in res.stages)
    assert GoldenBackend(d).recorded_params()["n_groups"] == res.params["n_groups"]


@pytest.mark.parametrize("change", [{"seed": None}, {"engine": "jax"}])
def test_unseeded_or_other_engine_groups_are_checked_by_invariants(raw, tf_backend, change):
    params = pj.ChainParams(**{**PARAMS.to_dict(), **change})
    res = run_crosscheck(raw, port="jax", reference=tf_backend, params=params)
    assert res.passed
    names = [a.name for a in res.stage("grouping").arrays]
    assert names == ["nn_indices[port]", "nn_indices[reference]"]
    assert all(a.status == "invariants" for a in res.stage("grouping").arrays)

    class FarGroups:
        name = "far-groups"

        def __getattr__(self, item):
            return getattr(tf_backend, item)

        def grouping(self, raw, params):
            far = np.argsort(raw.xcoords)
            return {"nn_indices": np.stack([far[:16], far[-16:], far[16:32], far[-32:-16]], axis=1)}

    res = run_crosscheck(raw, port=FarGroups(), reference=tf_backend, params=params)
    g = {a.name: a for a in res.stage("grouping").arrays}["nn_indices[port]"]
    assert not res.passed and not g.passed and g.diagnosis_class == "invalid_groups"
    assert "not among the K=4 nearest" in g.diagnosis
    assert [s.name for s in res.stages if not s.passed] == ["grouping"]


@pytest.mark.parametrize(
    "change",
    [
        {"n_groups": 100, "oversample": True, "neighbor_pool_size": 6},
        {"sequential": True},
        {"gridsize": 1, "n_groups": 20},
        {"gridsize": 3, "K": 9, "n_groups": 10},
        {"patch_positions": "member"},
    ],
    ids=["oversampling", "sequential", "gridsize1", "gridsize3", "member_patches"],
)
def test_jax_matches_tf_on_every_grouping_path(raw, tf_backend, change):
    params = pj.ChainParams(**{**PARAMS.to_dict(), **change})
    res = run_crosscheck(raw, port="jax", reference=tf_backend, params=params)
    assert res.passed
    assert res.stage("grouping").arrays[0].status == "compared"  # seeded: exact
