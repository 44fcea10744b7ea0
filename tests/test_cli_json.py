"""`--json` for report and crosscheck, and crosscheck's quiet happy path (issue 21: "`--json` on
stdout for report and crosscheck", items 7 and 12 for crosscheck)."""

import json
import pathlib

import pytest
from helpers import console

from ptycho_jax.app.cli import main
from ptycho_jax.crosscheck.synthetic import synthetic_raw

ROOT = pathlib.Path(__file__).resolve().parents[1]
CHAIN = ["--N", "32", "--gridsize", "2", "--K", "4", "--n-groups", "16", "--seed", "3"]
TF_NOISE = ("oneDNN", "absl", "I0000", "W0000", "cuda", "tensorflow", "TF_")


@pytest.fixture(scope="module")
def scan(tmp_path_factory) -> pathlib.Path:
    """A scan with an object but no Y: with gridsize 2 the chain announces mirrored patches."""
    path = tmp_path_factory.mktemp("scan") / "scan.npz"
    synthetic_raw().to_npz(path)
    return path


@pytest.mark.parametrize("where", ["before", "after"])
def test_report_json_on_stdout_is_the_json_file(tmp_path, scan, where):
    out = tmp_path / "rep"
    flags = ["report", "--input", str(scan), *CHAIN, "--no-figure", "--out", str(out)]
    argv = ["--json", *flags] if where == "before" else [*flags, "--json"]
    proc = console(*argv, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    payload = json.loads(proc.stdout)  # one JSON document and nothing else
    assert payload == json.loads((out / "intensity_stats.json").read_text())
    assert proc.stdout == (out / "intensity_stats.json").read_text().rstrip("\n") + "\n"
    assert payload["provenance"]["parameters"]["n_groups"] == 16
    assert f"ptycho-jax: json: {out / 'intensity_stats.json'}" in proc.stderr.splitlines()
    assert "ptycho-jax: [1/6]" in proc.stderr  # progress stays on stderr
    # the mirrored-patch note is in the provenance, not on stderr (item 7)
    assert any(n.startswith("MirroredPatchWarning: ") for n in payload["provenance"]["notes"])
    assert "warning" not in proc.stderr.lower()


def test_crosscheck_json_on_stdout_and_the_mirrored_note_in_provenance(tmp_path, scan):
    pytest.importorskip("tensorflow")
    out = tmp_path / "cc"
    proc = console(
        "crosscheck", "--input", str(scan), "--reference", "tf", *CHAIN, "--nphotons", "1e6",
        "--out", str(out), "--json", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    payload = json.loads(proc.stdout)
    assert payload == json.loads((out / "crosscheck.json").read_text())
    assert payload["verdict"] == "PASS" and payload["exit_code"] == 0
    prov = payload["provenance"]
    assert prov["input"] == str(scan)
    (note,) = prov["notes"]
    assert note.startswith("MirroredPatchWarning: group: Y cut from objectGuess at upstream's")
    # moved, not copied: no stage repeats it
    assert not any("Mirrored" in n for s in payload["stages"] for n in s["notes"])
    md = (out / "crosscheck.md").read_text()
    assert f"- input: {scan}" in md and "- note: MirroredPatchWarning: group:" in md
    err = proc.stderr.splitlines()
    assert "crosscheck jax vs tf: PASS" in err  # the verdict text: on stderr with --json
    assert "warning" not in proc.stderr.lower()
    assert not [line for line in err if any(noise in line for noise in TF_NOISE)], err


def test_default_crosscheck_against_tf_prints_only_progress(tmp_path):
    pytest.importorskip("tensorflow")
    out = tmp_path / "cc"
    proc = console("crosscheck", "--reference", "tf", "--out", str(out), cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("crosscheck jax vs tf: PASS\n")
    err = proc.stderr.splitlines()
    # progress lines and where the files went, nothing else: no warning, no TensorFlow log line
    assert [line.split("]")[0] for line in err[:-1]] == [f"ptycho-jax: [{i}/7" for i in range(1, 8)]
    assert err[-1].startswith("wrote ") and len(err) == 8, err
    payload = json.loads((out / "crosscheck.json").read_text())
    assert payload["provenance"]["input"] == "scenario gs2_ideal (test half)"
    assert "notes" not in payload["provenance"]  # the simulated test half carries its Y


@pytest.mark.parametrize("argv", [["--json", "scenarios"], ["simulate", "--json"]])
def test_json_is_refused_where_no_json_file_is_written(tmp_path, capsys, argv):
    code = main([*argv, *(["--out", str(tmp_path / "s.npz")] if "simulate" in argv else [])])
    err = capsys.readouterr().err
    assert code == 2
    assert err.splitlines() == [
        "ptycho-jax: error: --json: expected the report or crosscheck command (they write a JSON "
        f"file), got {'scenarios' if 'scenarios' in argv else 'simulate'}"
    ]
    assert not (tmp_path / "s.npz").exists()
