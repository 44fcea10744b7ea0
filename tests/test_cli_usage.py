"""The command line's argument model (issue 21): flags anywhere, flag names in errors, early checks."""

import pathlib

import pytest
from helpers import console, make_raw

from ptycho_jax.app.cli import main

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "good.npz"
    make_raw(m=20, n=8).to_npz(path)
    return path


REPORT = ["--n-groups", "8", "--gridsize", "1", "--no-figure"]


@pytest.mark.parametrize(
    "argv",
    [
        ["report", "-q", "--input", "{data}", *REPORT, "--out", "{out}"],  # item 2: -q after
        ["-q", "report", "--input", "{data}", *REPORT, "--out", "{out}"],
        [
            "-q",
            "--input",
            "{data}",
            *REPORT,
            "--out",
            "{out}",
        ],  # item 1: bare command, report's flags
        ["--input", "{data}", *REPORT, "--out", "{out}", "-q", "--no-compile-cache"],
    ],
)
def test_global_flags_anywhere_and_the_bare_command_takes_report_flags(
    tmp_path, data, capsys, argv
):
    out = tmp_path / "rep"
    code = main([a.format(data=data, out=out) for a in argv])
    err = capsys.readouterr().err
    assert code == 0, err
    assert (out / "intensity_report.md").is_file() or any(out.glob("*.md")), sorted(out.iterdir())
    assert "ptycho-jax: [" not in err  # -q: no progress lines wherever it was given


def test_simulate_out_must_be_an_npz_file(tmp_path, capsys):  # item 3
    for out, words in (
        (f"{tmp_path}/some/dir/x/", "a folder path"),
        (f"{tmp_path}/x", "suffix ''"),
    ):
        code = main(["simulate", "--scenario", "gs1_ideal", "--out", out])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("ptycho-jax: error: --out") and words in err, err
        assert "expected a .npz file name" in err
    assert not any(tmp_path.rglob("*")), list(tmp_path.rglob("*"))


def test_text_file_named_npz_is_not_called_pickled(tmp_path, capsys):  # item 4
    bad = tmp_path / "notes.npz"
    bad.write_text("hello world\n")
    code = main(["-q", "report", "--input", str(bad), "--out", str(tmp_path / "rep")])
    err = capsys.readouterr().err
    assert code == 2
    assert "expected an NPZ archive" in err and "b'hello '" in err and "pickle" not in err, err


def test_creatable_check_names_the_given_path(tmp_path):  # item 5, also as root
    from ptycho_jax.app.guard import OutputPathError, check_output_dir

    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputPathError) as e:
        check_output_dir(blocker / "rep")
    assert f"--out '{blocker / 'rep'}'" in str(e.value) and "/_'" not in str(e.value)


@pytest.mark.parametrize(
    "flags, words",
    [
        (["--gridsize", "0"], "--gridsize must be >= 1, got 0"),
        (["--n-groups", "-3"], "--n-groups must be >= 1, got -3"),
        (["--nphotons", "0"], "--nphotons must be > 0, got 0"),
        (["--scenario", "x"], "--scenario: expected one of ['gs1_ideal', 'gs2_ideal'], got 'x'"),
    ],
)
def test_flag_errors_name_the_flag_before_any_data_are_read(
    tmp_path, capsys, flags, words
):  # item 6
    absent = tmp_path / "absent.npz"  # never read: the flags are checked first
    argv = ["report", *flags, "--out", str(tmp_path / "rep")]
    if flags[0] != "--scenario":
        argv[1:1] = ["--input", str(absent)]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and err.strip().startswith(f"ptycho-jax: error: {words}"), err
    assert len(err.strip().splitlines()) == 1, err


def test_library_errors_are_told_in_flag_terms(tmp_path, data, capsys):  # item 6
    code = main(
        ["-q", "report", "--input", str(data), "--n-groups", "1000", "--out", str(tmp_path)]
    )
    err = capsys.readouterr().err
    assert code == 2, err
    assert "--oversample" in err and "--neighbor-pool-size" in err, err
    assert "oversample=True" not in err and "ChainParams." not in err, err


def test_crosscheck_errors_share_the_prefix(tmp_path, capsys):  # item 8
    code = main(["crosscheck", "--stages", "nope", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("ptycho-jax: error: "), err


@pytest.mark.parametrize(
    "command, choices",
    [
        ("report", ["{gs1_ideal,gs2_ideal}", "{main,seed}", "{scipy,jax}", "{upstream,member}"]),
        (
            "crosscheck",
            ["{gs1_ideal,gs2_ideal}", "{main,seed}", "{scipy,jax}", "{upstream,member}"],
        ),
        ("simulate", ["{gs1_ideal,gs2_ideal}", "{test,train,all}"]),
    ],
)
def test_help_lists_every_closed_choice(capsys, command, choices):  # item 9
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for c in choices:
        assert c in text, (command, c)


def test_scenarios_are_listed(capsys):  # item 9
    import ptycho_jax as pj

    assert main(["scenarios"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == list(pj.SCENARIOS)
    gs2 = pj.get_scenario("gs2_ideal")
    assert (
        f"{gs2.total_images} frames of 64x64 ({gs2.test_count} in the report's test half)"
        in lines[1]
    )
    assert lines[1].endswith("(default)")


def test_out_defaults_everywhere(tmp_path, capsys):  # item 10
    from ptycho_jax.app.cli import _parser

    p = _parser()
    assert str(p.parse_args(["report"]).out) == "report"
    assert str(p.parse_args(["crosscheck"]).out) == "report"
    assert str(p.parse_args(["simulate"]).out) == "scan.npz"


def test_python_dash_m_and_py_typed(tmp_path):  # item 14
    import ptycho_jax

    assert (pathlib.Path(ptycho_jax.__file__).parent / "py.typed").is_file()
    proc = console("scenarios", cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.startswith("gs1_ideal:"), proc.stderr


def test_readme_worked_port_input_is_made_by_a_step_before_it():  # item 13
    text = (ROOT / "README.md").read_text()
    use = text.index("--input scan.npz --port ptycho_jax.crosscheck.examples.numpy_port")
    made = text.find("ptycho-jax simulate")
    assert 0 <= made < use
    assert "scan.npz" in text[made:use]


def test_report_provenance_says_whose_specs_it_cites():  # item 16
    import ptycho_jax as pj

    prov = pj.make_provenance()
    assert "upstream PtychoPINN's specifications" in prov["spec_references"]
    assert "specs/spec-ptycho-core.md" in prov["spec_references"]


def test_crosscheck_shows_progress_and_no_tensorflow_log(tmp_path):  # item 12
    proc = console(
        "crosscheck", "--scenario", "gs1_ideal", "--reference", "tf", "--out", str(tmp_path / "o"),
        cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    err = proc.stderr.splitlines()
    assert [line.split("]")[0] for line in err if line.startswith("ptycho-jax: [")] == [
        f"ptycho-jax: [{i}/7" for i in range(1, 8)
    ], err
    for noise in ("oneDNN", "absl", "I0000", "W0000", "cuda"):
        assert not any(noise in line for line in err), (noise, err)


def test_report_paths_on_stderr_and_one_level_spelling(tmp_path, data):  # item 8
    proc = console(
        "-v", "report", "--input", str(data), *REPORT, "--out", str(tmp_path / "rep"), cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout == ""
    assert f"{tmp_path / 'rep'}" in proc.stderr
    assert "ptycho-jax: info " in proc.stderr, proc.stderr[-2000:]
    assert "ptycho-jax: INFO" not in proc.stderr and "ptycho-jax: WARNING" not in proc.stderr
