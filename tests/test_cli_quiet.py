"""The default happy path prints no warning: `report --input` on `simulate`'s own output (issue 21
item 7; the mirrored-patch convention is a provenance note, citing its spec with the folder)."""

import json

from ptycho_jax.app.cli import main


def test_report_on_simulates_own_output_prints_no_warning(tmp_path, capsys):
    data = tmp_path / "scan.npz"
    assert main(["-q", "simulate", "--scenario", "gs1_ideal", "--out", str(data)]) == 0
    capsys.readouterr()
    out = tmp_path / "rep"
    argv = ["report", "--input", str(data), "--gridsize", "2", "--n-groups", "16", "--no-figure"]
    assert main([*argv, "--out", str(out)]) == 0
    err = capsys.readouterr().err.splitlines()
    # progress and path lines only: no warning (the gridsize 2 chain mirrors patches)
    assert all(line.startswith(("ptycho-jax: [", "ptycho-jax: markdown: ", "ptycho-jax: json: "))
               for line in err), err  # fmt: skip
    assert len(err) == 6 + 2, err  # 6 stages of progress, 2 paths
    (note,) = json.loads((out / "intensity_stats.json").read_text())["provenance"]["notes"]
    assert note.startswith("MirroredPatchWarning: group: Y cut from objectGuess")
    assert "(ptycho-jax specs/pipeline.md §5)" in note  # the spec named with its folder
