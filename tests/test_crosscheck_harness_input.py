"""Bad input to the harness: each a clear per-stage message and the right exit code, no
traceback, nothing half-written.

A port that raises, returns NaN/Inf, wrong shapes, dtypes or keys, or no mapping at all fails
that stage (FAIL, exit 1) or leaves it uncompared (INCOMPLETE, exit 3); a missing or unreadable
golden folder, an unknown stage, a bad tolerance file or backend spec is bad input (exit 2).
"""

import json
import textwrap

import numpy as np
import pytest
from _crosscheck_stubs import PARAMS, Stub, record, replaced

import ptycho_jax as pj
from ptycho_jax.app import crosscheck_cli as cli
from ptycho_jax.crosscheck.backends import resolve_backend
from ptycho_jax.crosscheck.compare import Verdict
from ptycho_jax.crosscheck.render import format_failure, write_outputs
from ptycho_jax.crosscheck.run import run_crosscheck
from ptycho_jax.crosscheck.synthetic import synthetic_raw


@pytest.fixture(scope="module")
def raw():
    return synthetic_raw()


@pytest.fixture(scope="module")
def outs(raw):
    return record(raw)


def run(raw, port, ref, **kw):
    return run_crosscheck(raw, port=port, reference=ref, params=PARAMS, **kw)


def _boom(d):
    raise RuntimeError("port exploded in normalize")


@pytest.mark.parametrize(
    "change, stage, verdict, words",
    [
        (
            {"normalize": _boom},
            "normalize",
            Verdict.FAIL,
            ["port 'bad' normalize() raised RuntimeError: port exploded in normalize"],
        ),
        (
            {"normalize": lambda d: [d["X_full"]]},
            "normalize",
            Verdict.FAIL,
            ["normalize() returned list, expected a mapping"],
        ),
        (
            {"normalize": lambda d: None},
            "normalize",
            Verdict.FAIL,
            ["returned NoneType, expected a mapping"],
        ),
        (
            {"normalize": lambda d: {**d, "X_full": np.array(["a", "b"])}},
            "normalize",
            Verdict.FAIL,
            ["['X_full']: expected a numeric array, got dtype <U1"],
        ),
        (
            {"normalize": lambda d: {**d, "X_full": np.array([object()], dtype=object)}},
            "normalize",
            Verdict.FAIL,
            ["got dtype object"],
        ),
        (
            {"grouped": replaced(diffraction=lambda x: x[:, :-1])},
            "grouped",
            Verdict.FAIL,
            ["shape"],
        ),
        (
            {"grouped": replaced(coords_nn=lambda x: x.astype(np.float32))},
            "grouped",
            Verdict.FAIL,
            ["float"],
        ),
        (
            {"normalize": lambda d: {"Xfull": d["X_full"], "normalize_gain": d["normalize_gain"]}},
            "normalize",
            Verdict.INCOMPLETE,
            ["did you mean 'X_full'?"],
        ),
    ],
    ids=["raises", "list", "none", "strings", "objects", "shape", "dtype", "wrong_key"],
)
def test_bad_port_output_is_a_clear_stage_verdict(raw, outs, change, stage, verdict, words):
    res = run(raw, Stub(outs, "bad", change=change), Stub(outs, "ref"))
    st = res.stage(stage)
    text = format_failure(res)
    assert res.verdict == verdict and st.verdict == verdict, text
    for w in words:
        assert w in text
    assert "Traceback" not in text
    others = [s.verdict for s in res.stages if s.name != stage]
    assert set(others) <= {Verdict.PASS}, text  # the damage stays in its stage


def test_shape_and_dtype_failures_are_named(raw, outs):
    res = run(
        raw,
        Stub(
            outs,
            change={
                "grouped": replaced(
                    diffraction=lambda x: x[:, :-1], coords_nn=lambda x: x.astype(np.float32)
                )
            },
        ),
        Stub(outs),
    )
    arrays = {a.name: a for a in res.stage("grouped").arrays}
    assert arrays["diffraction"].status == "shape_mismatch" and not arrays["diffraction"].passed
    assert arrays["diffraction"].shape_port == (16, 31, 32, 4) and arrays[
        "diffraction"
    ].shape_ref == (16, 32, 32, 4)
    assert (arrays["coords_nn"].dtype_port, arrays["coords_nn"].dtype_ref) == ("float32", "float64")
    assert not arrays["coords_nn"].passed


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_inf_from_the_port_fails(raw, outs, bad):
    def poison(x):
        x = x.copy()
        x[1, 2, 3, 0] = bad
        return x

    res = run(raw, Stub(outs, change={"normalize": replaced(X_full=poison)}), Stub(outs))
    assert res.verdict == Verdict.FAIL
    x = {a.name: a for a in res.stage("normalize").arrays}["X_full"]
    assert not x.passed and x.n_beyond >= 1 and x.worst_index == (1, 2, 3, 0)
    assert (x.nan_port, x.inf_port) == ((1, 0) if np.isnan(bad) else (0, 1))
    # the NaN/Inf flows into nothing else: the stub's other stages are untouched
    assert [s.name for s in res.stages if s.verdict != Verdict.PASS] == ["normalize"]


def test_reference_that_raises_fails_its_stage(raw, outs):
    res = run(raw, Stub(outs), Stub(outs, "ref", change={"patches": _boom}))
    assert res.verdict == Verdict.FAIL and res.stage("patches").verdict == Verdict.FAIL
    assert "reference 'ref' patches() raised RuntimeError" in format_failure(res)


def test_layout_declaration_that_does_not_fit_fails_the_stage(raw, outs):
    port = Stub(outs, layouts={"images": "B C H W"})  # but it returns B H W C (rank 4 still)
    res = run(raw, port, Stub(outs), stages="normalize")
    assert res.verdict == Verdict.FAIL  # transposed: every frame differs
    port = Stub(outs, layouts={"coords_offsets": "B xy"})  # returns (B, 1, 2, 1)
    res = run(raw, port, Stub(outs), stages="grouped")
    assert res.verdict == Verdict.FAIL
    assert (
        "declared layout 'B xy' has 2 axes, got an array of shape (16, 1, 2, 1)"
        in format_failure(res)
    )


@pytest.mark.parametrize(
    "attrs, match",
    [
        ({"layouts": {"images": "B C H"}}, "must name the axes of ours, 'B H W C'"),
        ({"layouts": {"normalize_gain": "B"}}, "has no axes to reorder"),
        ({"array_names": {"normalise": {"X": "X_full"}}}, "unknown stage 'normalise'"),
        ({"array_names": {"normalize": {"a": "X_full", "b": "X_full"}}}, "maps two names onto one"),
        ({"array_names": ["X"]}, "array_names must map a stage"),
    ],
)
def test_bad_declarations_are_bad_input(raw, outs, attrs, match):
    with pytest.raises(pj.PtychoInputError, match=match):
        run(raw, Stub(outs, **attrs), Stub(outs))


# ---------------------------------------------------------------------------------------------
# the command line


def _main(tmp_path, capsys, *argv):
    rc = cli.main(list(argv))
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


@pytest.fixture()
def npz(tmp_path, raw):
    path = tmp_path / "scan.npz"
    raw.to_npz(path)
    return path


CHAIN = ["--N", "32", "--gridsize", "2", "--n-groups", "16", "--seed", "3", "--nphotons", "1e6"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["--reference", "golden:{tmp}/nowhere"],
            "expected a golden case folder with stage1_grouping.npz, got a missing folder",
        ),
        (["--reference", "golden:{tmp}/corrupt"], "cannot read"),
        (["--reference", "golden:{tmp}/badjson"], "params.json"),
        (
            ["--stages", "grouping,normalise"],
            "unknown stage 'normalise'; valid stages: grouping, grouped",
        ),
        (["--tolerances", "{tmp}/bad.toml"], "unknown keys ['ulps']"),
        (["--tolerances", "{tmp}/missing.toml"], "cannot read"),
        (
            ["--port", "module:ptycho_jax.crosscheck.backends:TFBackend"],
            "expected package.module:Attribute",
        ),
        (["--port", "ptycho_jax.crosscheck.backends:NoSuch"], "has no attribute 'NoSuch'"),
        (["--port", "no_such_pkg.mod:Backend"], "cannot import module 'no_such_pkg.mod'"),
        (
            ["--port", "ptycho_jax.crosscheck.backends:GoldenBackend"],
            "GoldenBackend() raised TypeError",
        ),
        (
            ["--reference", "torchx"],
            "expected jax, tf, upstream, ptycho_torch, golden:DIR or package.module:Attribute",
        ),
    ],
    ids=[
        "golden_missing",
        "golden_corrupt",
        "golden_bad_json",
        "stage",
        "tol_keys",
        "tol_missing",
        "module_prefix",
        "no_attr",
        "no_module",
        "ctor_raises",
        "unknown",
    ],
)
def test_cli_bad_input_exits_2_with_a_message_and_writes_nothing(
    tmp_path, capsys, npz, argv, message
):
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "stage1_grouping.npz").write_bytes(b"not a zip file")
    (tmp_path / "badjson").mkdir()
    np.savez(tmp_path / "badjson" / "stage1_grouping.npz", nn_indices=np.zeros((2, 4), np.int64))
    (tmp_path / "badjson" / "params.json").write_text("{not json")
    (tmp_path / "bad.toml").write_text("[stages.grouped.float64]\nulps = 1\n")
    argv = [a.format(tmp=tmp_path) for a in argv]
    out = tmp_path / "out"
    rc, stdout, err = _main(
        tmp_path,
        capsys,
        "--input",
        str(npz),
        *CHAIN,
        "--reference",
        "jax",
        *argv,
        "--out",
        str(out),
    )
    assert rc == 2, (stdout, err)
    assert message in err and "Traceback" not in err
    assert stdout == ""
    assert not out.exists()


def test_unreadable_golden_file_exits_2(tmp_path, capsys, npz):
    d = tmp_path / "unreadable"
    d.mkdir()
    np.savez(d / "stage1_grouping.npz", nn_indices=np.zeros((2, 4), np.int64))
    (d / "stage2_normalize.npz").mkdir()  # unreadable as a file, for root too
    rc, _, err = _main(
        tmp_path,
        capsys,
        "--input",
        str(npz),
        *CHAIN,
        "--reference",
        f"golden:{d}",
        "--out",
        str(tmp_path / "o"),
    )
    assert (
        rc == 2
        and "cannot read" in err
        and "stage2_normalize.npz" in err
        and "IsADirectoryError" in err
    )
    assert not (tmp_path / "o").exists()


def test_port_that_raises_exits_1_with_the_stage_message(tmp_path, capsys, npz, monkeypatch):
    mod = tmp_path / "mods"
    mod.mkdir()
    (mod / "raising_port.py").write_text(
        textwrap.dedent("""
        from ptycho_jax.crosscheck.backends import JaxBackend

        class Backend(JaxBackend):
            name = "raising"

            def container(self, raw, params, *, nn_indices=None):
                raise ZeroDivisionError("division by zero in my container")
        """)
    )
    monkeypatch.syspath_prepend(str(mod))
    out = tmp_path / "out"
    rc, stdout, err = _main(
        tmp_path,
        capsys,
        "--input",
        str(npz),
        *CHAIN,
        "--port",
        "raising_port:Backend",
        "--reference",
        "jax",
        "--out",
        str(out),
    )
    assert rc == 1
    assert "| container | FAIL |" in stdout
    assert (
        "port 'raising' container() raised ZeroDivisionError: division by zero in my container"
        in stdout
    )
    assert "Traceback" not in stdout + err
    payload = json.loads((out / "crosscheck.json").read_text())
    assert payload["verdict"] == "FAIL"
    assert {s["name"]: s["verdict"] for s in payload["stages"]}["container"] == "FAIL"


def test_outputs_are_all_or_nothing(raw, outs, tmp_path, monkeypatch):
    res = run(raw, Stub(outs), Stub(outs))
    import ptycho_jax.crosscheck.render as run_mod

    def broken(result):
        raise RuntimeError("renderer broke")

    monkeypatch.setattr(run_mod, "render_png", broken)
    with pytest.raises(RuntimeError, match="renderer broke"):
        write_outputs(res, tmp_path / "o")
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())
    monkeypatch.undo()
    old = tmp_path / "p"
    write_outputs(res, old)
    before = {p.name: p.read_bytes() for p in old.iterdir()}
    monkeypatch.setattr(run_mod, "render_png", broken)
    with pytest.raises(RuntimeError):
        write_outputs(res, old)
    assert {p.name: p.read_bytes() for p in old.iterdir()} == before  # old outputs untouched


def test_resolve_backend_messages():
    with pytest.raises(
        pj.BackendUnavailableError, match=r"one colon between an importable module path"
    ):
        resolve_backend("module:pkg:Cls")
    with pytest.raises(pj.BackendUnavailableError, match=r"expected package.module:Attribute"):
        resolve_backend(":Backend")


# ---------------------------------------------------------------------------------------------
# adapter declarations: name maps and axis layouts are converted before comparing


def _channel_first(outs):
    """The recorded outputs as a channel-first port with its own names would return them."""
    cf = {k: dict(v) for k, v in outs.items()}
    cf["grouped"]["frames"] = np.moveaxis(cf["grouped"].pop("diffraction"), -1, 1)
    cf["grouped"]["coords_nn"] = cf["grouped"]["coords_nn"][:, 0].transpose(0, 2, 1)  # (B, C, xy)
    n = cf["normalize"]
    cf["normalize"] = {"X": np.moveaxis(n["X_full"], -1, 1), "gain": n["normalize_gain"]}
    return cf


def test_name_maps_and_layouts_are_applied(raw, outs):
    cf = _channel_first(outs)
    decl = {
        "array_names": {
            "grouped": {"frames": "diffraction"},
            "normalize": {"X": "X_full", "gain": "normalize_gain"},
        },
        "layouts": {"images": "B C H W", "coords_nn": "B C xy"},
    }
    undeclared = run(raw, Stub(cf, "cf"), Stub(outs), stages="grouped,normalize")
    assert undeclared.verdict == Verdict.FAIL  # coords_nn compared in the wrong layout
    assert {n for n, _ in undeclared.stage("normalize").uncompared} == {"X_full", "normalize_gain"}
    res = run(raw, Stub(cf, "cf", **decl), Stub(outs), stages="grouped,normalize")
    assert res.verdict == Verdict.PASS, format_failure(res)
    x = {a.name: a for a in res.stage("normalize").arrays}["X_full"]
    assert x.shape_port == x.shape_ref == (16, 32, 32, 4) and x.max_ulp == 0
    # the reference may declare the same (both sides are converted)
    res = run(raw, Stub(outs), Stub(cf, "cf", **decl), stages="grouped,normalize")
    assert res.verdict == Verdict.PASS


def test_scaler_input_is_handed_over_in_the_backends_layout(raw, outs):
    from _crosscheck_stubs import scaler

    seen = []

    class ChannelFirstScaler(Stub):
        def scaler(self, x, *, scale, trainable=True):
            seen.append(np.shape(x))
            out = scaler(np.moveaxis(x, 1, -1), scale=scale)  # compute in ours, return theirs
            return {k: (np.moveaxis(v, -1, 1) if np.ndim(v) == 4 else v) for k, v in out.items()}

    port = ChannelFirstScaler(outs, "cf-scaler", layouts={"images": "B C H W"})
    res = run(raw, port, Stub(outs), stages="scaler")
    assert res.verdict == Verdict.PASS, format_failure(res)
    assert seen == [(4, 4, 32, 32)] * 2


def test_worked_example_backend_through_the_cli(tmp_path, capsys, npz):
    """The backend of specs/writing-a-backend.md, run as the guide runs it."""
    out = tmp_path / "out"
    rc, stdout, err = _main(
        tmp_path,
        capsys,
        "--input",
        str(npz),
        *CHAIN,
        "--port",
        "ptycho_jax.crosscheck.examples.numpy_port:NumpyPort",
        "--reference",
        "jax",
        "--out",
        str(out),
    )
    assert rc == 0, stdout + err
    payload = json.loads((out / "crosscheck.json").read_text())
    assert payload["verdict"] == "PASS"
    verdicts = {s["name"]: s["verdict"] for s in payload["stages"]}
    assert verdicts == {
        "grouping": "EXCEPTED",
        "grouped": "PASS",
        "normalize": "PASS",
        "patches": "EXCEPTED",
        "intensity_scales": "PASS",
        "scaler": "PASS",
        "container": "EXCEPTED",
    }
    c = payload["counts"]
    assert (c["required"], c["compared"], c["excepted"], c["failed"]) == (37, 21, 16, 0)
    assert "| normalize | PASS | 2/2 | X_full | 0 |" in stdout
    # the seed variant is declared not computed by the example (not_computed(params))
    rc, stdout, _ = _main(
        tmp_path,
        capsys,
        "--input",
        str(npz),
        *CHAIN,
        "--variant",
        "seed",
        "--port",
        "ptycho_jax.crosscheck.examples.numpy_port:NumpyPort",
        "--reference",
        "jax",
        "--out",
        str(tmp_path / "seed"),
    )
    assert rc == 0 and "| normalize | EXCEPTED |" in stdout
    # without its declarations the same port is INCOMPLETE, never PASS
    rc, stdout, _ = _main(
        tmp_path,
        capsys,
        "--input",
        str(npz),
        *CHAIN,
        "--port",
        "ptycho_jax.crosscheck.examples.numpy_port:NumpyPort",
        "--reference",
        "jax",
        "--stages",
        "grouped,patches",
        "--out",
        str(tmp_path / "p"),
    )
    assert rc == 0  # patches is declared not computed
    rc, stdout, _ = _main(
        tmp_path,
        capsys,
        "--input",
        str(npz),
        *CHAIN,
        "--port",
        "ptycho_jax.crosscheck.examples.numpy_port:NumpyPort",
        "--reference",
        "jax",
        "--out",
        str(tmp_path / "q"),
        "--allow-missing",
        "patches",
    )
    assert rc == 0
