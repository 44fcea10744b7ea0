"""The `ptycho-jax` console script: the default report job, simulate, and exit codes on bad input."""

import json

import matplotlib.image
import numpy as np
import pytest

import ptycho_jax as pj
from ptycho_jax.app.cli import main

SECTIONS = [
    "# Intensity Statistics",
    "## Intensity Scale Comparison",
    "## Stage Means",
    "## Stage Ratios",
    "## Largest Drop",
    "## IntensityScaler State",
    "## Training Container X Stats",
    "## Per-Stage Statistics",
    "## Provenance",
]


@pytest.fixture(scope="module")
def default_report(tmp_path_factory, request):
    out = tmp_path_factory.mktemp("report")
    monkey = pytest.MonkeyPatch()
    monkey.chdir(out)
    try:
        code = main([])  # no arguments: the gs2_ideal report into ./report
    finally:
        monkey.undo()
    return code, out / "report"


def test_default_job_writes_the_three_files(default_report, capsys):
    code, out = default_report
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "intensity_stats.json",
        "intensity_stats.md",
        "intensity_stats.png",
    ]


def test_default_report_sections_in_order(default_report):
    _, out = default_report
    md = (out / "intensity_stats.md").read_text()
    positions = [md.index(s + "\n") for s in SECTIONS]
    assert positions == sorted(positions)
    assert md.endswith("\n") and not md.endswith("\n\n")
    assert "- Stage count: 4\n" in md and "| shape | [64, 64, 64, 4] |" in md


def test_default_report_json_schema(default_report):
    _, out = default_report
    text = (out / "intensity_stats.json").read_text()
    payload = json.loads(text)
    assert text == json.dumps(payload, indent=2, sort_keys=True)
    assert [s["name"] for s in payload["stages"]] == [
        "raw_diffraction",
        "grouped_diffraction",
        "grouped_X_full",
        "container_X",
    ]
    for stage in payload["stages"]:
        assert set(stage["stats"]) == {
            "min",
            "max",
            "mean",
            "std",
            "nan_count",
            "shape",
            "dtype",
            "finite_count",
            "total_count",
        }
    assert set(payload["ratios"]) == {
        "raw_to_grouped",
        "grouped_to_normalized",
        "normalized_to_container",
    }
    assert payload["ratios"]["normalized_to_container"] == 1.0
    # main variant: closed-form training scale, bundle = NumPy float32 exp of float32 log(988.2117919921875)
    assert payload["bundle_intensity_scale"] == 988.211669921875
    assert payload["intensity_scaler_state"]["params_cfg_intensity_scale"] == 988.2117919921875
    ds = payload["dataset_intensity_scale"]
    assert abs(ds["dataset_scale"] - 577.738) / 577.738 < 3e-3  # within Poisson noise of the seed
    assert (
        payload["provenance"]["variant"] == "main"
        and payload["provenance"]["parameters"]["n_groups"] == 64
    )


def test_default_report_png_decodes(default_report):
    _, out = default_report
    img = matplotlib.image.imread(out / "intensity_stats.png")
    assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 200


def test_simulate_then_report_from_file(tmp_path):
    data = tmp_path / "data.npz"
    assert main(["-q", "simulate", "--scenario", "gs1_ideal", "--out", str(data)]) == 0
    raw = pj.RawData.from_npz(data)
    assert raw.diff3d.shape == (256, 64, 64)  # gs1_ideal stable profile: 512 frames, test half
    out = tmp_path / "rep"
    assert (
        main(
            [
                "-q",
                "report",
                "--input",
                str(data),
                "--gridsize",
                "1",
                "--n-groups",
                "32",
                "--variant",
                "seed",
                "--no-figure",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    payload = json.loads((out / "intensity_stats.json").read_text())
    assert payload["provenance"]["input_sha256"] and payload["stages"][1]["stats"]["shape"] == [
        32,
        64,
        64,
        1,
    ]
    # seed variant: dataset-derived training scale ≈ sqrt(1e9 / (N/2)²) for normalised X, gridsize 1
    np.testing.assert_allclose(
        payload["intensity_scaler_state"]["params_cfg_intensity_scale"],
        np.sqrt(1e9) / 32,
        rtol=1e-4,
    )


@pytest.mark.parametrize(
    "argv,match",
    [
        (["report", "--input", "{tmp}/absent.npz"], "no such file"),
        (["report", "--scenario", "nope"], "expected one of"),
        (["report", "--input", "{tmp}/bad.npz"], "expected an NPZ archive"),
        (["report", "--input", "{tmp}/good.npz", "--gridsize", "0"], "gridsize"),
        (["report", "--input", "{tmp}/good.npz", "--K", "2", "--n-groups", "5"], "K=2"),
        (["report", "--input", "{tmp}/good.npz"], "needs K-choose-C oversampling"),
    ],
)
def test_bad_input_exits_2_without_partial_output(tmp_path, capsys, argv, match):
    (tmp_path / "bad.npz").write_text("not an npz")
    from helpers import make_raw

    make_raw(m=20, n=8).to_npz(tmp_path / "good.npz")
    out = tmp_path / "out"
    code = main(["-q", *[a.format(tmp=tmp_path) for a in argv], "--out", str(out)])
    assert code == 2
    assert match in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize(
    "argv",
    [
        ["report", "--groups", "5"],
        ["crosscheck", "--neighbor-count", "4", "--out", "x"],
        ["report", "--variant", "dose"],
    ],
)
def test_old_or_bad_chain_flags_are_usage_errors(argv, capsys):
    # One vocabulary: report's --groups and crosscheck's --neighbor-count are now --n-groups and --K.
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "unrecognized arguments" in err or "invalid choice: 'dose'" in err


def test_report_chain_flags_reach_chain_params(tmp_path):
    from helpers import make_raw

    make_raw(m=20, n=8).to_npz(tmp_path / "in.npz")
    argv = ["-q", "report", "--input", str(tmp_path / "in.npz"), "--gridsize", "1", "--K", "3", "--n-groups", "7",
            "--seed", "5", "--sequential", "--nphotons", "1e6", "--engine", "scipy", "--patch-positions", "member",
            "--no-figure", "--out", str(tmp_path / "out")]  # fmt: skip
    assert main(argv) == 0
    params = json.loads((tmp_path / "out" / "intensity_stats.json").read_text())["provenance"][
        "parameters"
    ]
    want = {"N": 8, "gridsize": 1, "K": 3, "n_groups": 7, "seed": 5, "sequential": True, "oversample": False,
            "nphotons": 1e6, "variant": "main", "engine": "scipy", "patch_positions": "member"}  # fmt: skip
    assert {k: params[k] for k in want} == want
