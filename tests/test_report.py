"""The Intensity Statistics report: goldens and SEED byte for byte, formatting, files."""

import dataclasses
import hashlib
import io
import json
import os
import pathlib

import jaxtyping
import matplotlib.image
import numpy as np
import pytest
from _golden import SHARED

import ptycho_jax as pj
from ptycho_jax import _report

DATA = pathlib.Path(__file__).parent / "data" / "report"
CASES = ("gs1_ideal", "gs2_ideal", "gs2_sequential")
STAGE_FILES = {
    "raw_diffraction": ("input_rawdata.npz", "diff3d"),
    "grouped_diffraction": ("stage1_grouping.npz", "diffraction"),
    "grouped_X_full": ("stage2_normalize.npz", "X_full"),
    "container_X": ("stage3_container.npz", "X"),
}
# intensity_stats_inputs.json stores metadata with sorted keys; §2.1 fixes the insertion order.
METADATA_ORDER = ("source", "count", "gridsize", "group_limit")


def _read(case: str, name: str) -> str:
    return (DATA / case / name).read_text(encoding="utf-8")


def _inputs(case: str) -> dict:
    return json.loads(_read(case, "intensity_stats_inputs.json"))


def _metadata(stage_inputs: dict) -> dict:
    md = stage_inputs["metadata"]
    assert set(md) <= set(METADATA_ORDER)
    return {k: md[k] for k in METADATA_ORDER if k in md}


def _scalars(case: str) -> dict:
    """Bundle/legacy scale and scaler state exactly as described in golden/README.md."""
    inp = _inputs(case)
    si = inp["intensity_scaler_state_inputs"]
    log_scale = np.float32(si["log_scale_float32"])
    bundle = float(np.exp(log_scale))  # NumPy's float32 exp on the host (§1), not jnp.exp
    assert bundle == inp["bundle_intensity_scale"] == inp["legacy_intensity_scale"]
    state = pj.intensity_scaler_state(
        log_scale,
        trainable=si["variable_trainable"],
        params_cfg_intensity_scale=si["params_cfg_intensity_scale"],
        params_cfg_trainable=si["params_cfg_trainable"],
    )
    assert state == inp["intensity_scaler_state"]
    return {"bundle": bundle, "state": state}


def _check_reproduces(report: pj.IntensityReport, case: str) -> None:
    md, want_md = report.to_markdown(), _read(case, "intensity_stats.md")
    got_lines, want_lines = md.split("\n"), want_md.split("\n")
    for i, (g, w) in enumerate(zip(got_lines, want_lines, strict=False), start=1):
        assert g == w, f"{case}: Markdown line {i}: got {g!r}, want {w!r}"
    assert len(got_lines) == len(want_lines)
    assert md.encode("utf-8") == (DATA / case / "intensity_stats.md").read_bytes()
    assert report.to_json().encode("utf-8") == (DATA / case / "intensity_stats.json").read_bytes()


@pytest.mark.parametrize("case", CASES)
def test_golden_report_from_stats(case):
    """stats → Markdown/JSON: the golden stage stats and scalars render the golden files exactly."""
    golden = json.loads(_read(case, "intensity_stats.json"))
    stats = {s["name"]: s["stats"] for s in golden["stages"]}
    stages = [
        pj.StageRecord(s["name"], stats[s["name"]], _metadata(s)) for s in _inputs(case)["stages"]
    ]
    sc = _scalars(case)
    report = pj.build_intensity_report(
        stages,
        bundle_intensity_scale=sc["bundle"],
        legacy_intensity_scale=sc["bundle"],
        intensity_scaler_state=sc["state"],
        training_container_stats=stats["container_X"],
    )
    _check_reproduces(report, case)
    # Derived numbers, spelled out for gs2_ideal (§3.1).
    if case == "gs2_ideal":
        assert report.normalize_gain == 0.5608061222095341
        assert report.ratios == {
            "raw_to_grouped": 1.036368024569195,
            "grouped_to_normalized": 0.5608061222095341,
            "normalized_to_container": 1.0,
        }
        assert report.largest_drop["key"] == "grouped_to_normalized"
        assert report.scale_delta == 0.0
        assert sc["state"]["delta"] == -0.00012601535536305164


@pytest.mark.skipif(not SHARED.exists(), reason="full goldens (../shared/golden) not present")
@pytest.mark.parametrize("case", CASES)
def test_golden_report_from_arrays(case):
    """arrays → stats → Markdown/JSON: the full golden stage arrays reproduce both files."""
    stages = []
    for s in _inputs(case)["stages"]:
        fname, key = STAGE_FILES[s["name"]]
        with np.load(SHARED / case / fname) as z:
            stages.append(pj.record_stage(s["name"], z[key], **_metadata(s)))
    sc = _scalars(case)
    report = pj.build_intensity_report(
        stages,
        bundle_intensity_scale=sc["bundle"],
        legacy_intensity_scale=sc["bundle"],
        intensity_scaler_state=sc["state"],
        training_container_stats=stages[-1].stats,
    )
    _check_reproduces(report, case)
    assert (SHARED / case / "intensity_stats.md").read_bytes() == report.to_markdown().encode()
    assert (SHARED / case / "intensity_stats.json").read_bytes() == report.to_json().encode()


# -- SEED (intensity-report.md §6) ---------------------------------------------------------------


def _seed_stats(shape, mx, mean, std) -> dict:
    n = int(np.prod(shape))
    return {
        "min": 0.0,
        "max": mx,
        "mean": mean,
        "std": std,
        "nan_count": 0,
        "shape": list(shape),
        "dtype": "float32",
        "finite_count": n,
        "total_count": n,
    }


def _seed_report(**kw) -> pj.IntensityReport:
    x_mean = 0.08508695662021637  # unrounded float32 means of §6 (the printed ones are rounded)
    container = _seed_stats([64, 64, 64, 4], 15.8923, x_mean, 0.492707)
    stages = [
        pj.StageRecord(
            "raw_diffraction",
            _seed_stats([512, 64, 64], 27.5231, 0.14583051204681396, 0.842717),
            {"source": "RawData", "count": 512},
        ),
        pj.StageRecord(
            "grouped_diffraction",
            _seed_stats([64, 64, 64, 4], 27.5231, 0.1473580300807953, 0.853297),
            {"source": "RawData.generate_grouped_data", "count": 64, "gridsize": 2},
        ),
        pj.StageRecord("grouped_X_full", container, {"source": "normalize_data", "count": 64}),
        pj.StageRecord(
            "container_X", container, {"source": "PtychoDataContainer", "group_limit": 64}
        ),
    ]
    bundle = 494.1046142578125
    args = {
        "bundle_intensity_scale": bundle,
        "legacy_intensity_scale": bundle,
        "intensity_scaler_state": pj.intensity_scaler_state(
            np.float32(6.202747344970703),
            trainable=True,
            params_cfg_intensity_scale=494.1046754672156,
            params_cfg_trainable=True,
        ),
        "training_container_stats": container,
        "dataset_scale": pj.dataset_scale_comparison(2995.974, nphotons=1e9, N=64),
    }
    args.update(kw)
    return pj.build_intensity_report(stages, **args)


def test_seed_reproduced_byte_for_byte():
    seed = (DATA / "seed-report.md").read_bytes()
    assert len(seed.decode("utf-8").split("\n")) == 167  # 166 lines + the final newline
    report = _seed_report()
    assert report.to_markdown().encode("utf-8") == seed
    # Bundle given as the float32 it is: same header (widened repr), delta still 0.0.
    f32 = _seed_report(
        bundle_intensity_scale=np.float32(494.1046142578125),
        legacy_intensity_scale=np.float32(494.1046142578125),
    )
    assert f32.to_markdown().encode("utf-8") == seed
    d = report.to_payload()["dataset_intensity_scale"]
    assert format(d["dataset_scale"], ".6g") == "577.738" and d["N"] == 64
    assert d["batch_mean_sum_intensity"] == 2995.974 and d["nphotons"] == 1e9


def test_seed_boilerplate_constants_are_seed_lines():
    seed = (DATA / "seed-report.md").read_text(encoding="utf-8").split("\n")
    for n, text in _report.SEED_LINES.items():
        assert seed[n - 1] == text, n
    assert seed[31].endswith(" ") and seed[32].endswith(" ") and not seed[33].endswith(" ")


def test_comparison_section_without_mismatch_and_rounded_E():
    # Feeding the printed E = 2995.97 changes the delta's last digit (§3.3).
    md = _seed_report(
        dataset_scale=pj.dataset_scale_comparison(2995.97, nphotons=1e9, N=64)
    ).to_markdown()
    assert "| Delta (dataset - fallback) | -410.473 |" in md
    # E = (N/2)^2 exactly: ratio 1, no warning lines, and the section still renders.
    md = _seed_report(
        dataset_scale=pj.dataset_scale_comparison(1024.0, nphotons=1e9, N=64)
    ).to_markdown()
    assert "| Ratio (dataset / fallback) | 1 |" in md
    assert "mismatch" not in md
    assert "(988.21)," in md
    # Just over 1 % off warns; the (N/2)² line follows N.
    d = pj.dataset_scale_comparison(256 / 1.0201**2, nphotons=4e6, N=32)
    assert (d["dataset_scale"], d["fallback_scale"], d["ratio"]) == (127.5125, 125.0, 1.0201)
    md = _seed_report(dataset_scale=d).to_markdown()
    assert "\nratio=1.0201 \n" not in md and "mismatch:** ratio=1.0201 \n" in md
    assert (
        "mean intensity per sample (246.011) \ndiffers from the assumed (N/2)\u00b2 = 256.\n" in md
    )
    assert "(125.00)," in md and "| N (patch size) | 32 |" in md and "| nphotons | 4e+06 |" in md
    # Within 1 %: no warning.
    near = pj.dataset_scale_comparison(256 / 1.0099**2, nphotons=4e6, N=32)
    assert "mismatch" not in _seed_report(dataset_scale=near).to_markdown()
    with pytest.raises(pj.PtychoInputError, match="E: expected finite > 0, got 0.0"):
        pj.dataset_scale_comparison(0.0, nphotons=1e9, N=64)
    with pytest.raises(pj.PtychoInputError, match="missing"):
        _seed_report(dataset_scale={"dataset_scale": 1.0})


def test_report_without_optional_sections():
    report = _seed_report(
        intensity_scaler_state=None, training_container_stats=None, dataset_scale=None
    )
    md = report.to_markdown()
    for title in (
        "## Intensity Scale Comparison",
        "## IntensityScaler State",
        "## Training Container X Stats",
    ):
        assert title not in md
    payload = report.to_payload()
    assert set(payload) == {
        "bundle_intensity_scale",
        "legacy_params_intensity_scale",
        "scale_delta",
        "stages",
        "stage_means",
        "ratios",
        "largest_drop",
        "normalize_gain",
    }
    # An empty dict: no section, but `{}` in the JSON (§5.6).
    empty = _seed_report(intensity_scaler_state={}, training_container_stats={})
    assert "## IntensityScaler State" not in empty.to_markdown()
    assert empty.to_payload()["intensity_scaler_state"] == {}
    assert empty.to_payload()["training_container_stats"] == {}


def test_largest_drop_and_missing_stages():
    def rec(name, mean):
        return pj.StageRecord(name, {**_seed_stats([4], 1.0, mean, 0.1)})

    # No drop below 1 → no section; a missing stage prints an em dash and a None ratio.
    report = pj.build_intensity_report(
        [rec("raw_diffraction", 1.0), rec("grouped_diffraction", 1.0), rec("container_X", 2.0)],
        bundle_intensity_scale=None,
        legacy_intensity_scale=2.0,
    )
    md = report.to_markdown()
    assert "## Largest Drop" not in md and report.largest_drop is None
    assert "| Grouped X (normalized) | \u2014 |" in md
    assert "| Raw diffraction \u2192 Grouped diffraction | 1 |" in md
    assert report.ratios == {
        "raw_to_grouped": 1.0,
        "grouped_to_normalized": None,
        "normalized_to_container": None,
    }
    assert "- Bundle intensity_scale: None\n" in md and "- bundle minus legacy delta: None\n" in md
    assert "- normalize_data gain: \u2014\n" in md
    # Ties: the first transition wins; a zero from-mean gives no ratio.
    tie = pj.build_intensity_report(
        [
            rec("raw_diffraction", 1.0),
            rec("grouped_diffraction", 0.5),
            rec("grouped_X_full", 0.25),
            rec("container_X", 0.0),
        ],
        bundle_intensity_scale=1.0,
        legacy_intensity_scale=1.0,
    )
    assert tie.ratios["normalized_to_container"] == 0.0
    assert tie.largest_drop["key"] == "normalized_to_container"
    tie2 = pj.build_intensity_report(
        [rec("raw_diffraction", 1.0), rec("grouped_diffraction", 0.5), rec("grouped_X_full", 0.25)],
        bundle_intensity_scale=1.0,
        legacy_intensity_scale=1.0,
    )
    assert tie2.largest_drop == {
        "key": "raw_to_grouped",
        "from_stage": "raw_diffraction",
        "to_stage": "grouped_diffraction",
        "from_mean": 1.0,
        "to_mean": 0.5,
        "ratio": 0.5,
    }
    zero = pj.build_intensity_report(
        [rec("raw_diffraction", 0.0), rec("grouped_diffraction", 1.0)],
        bundle_intensity_scale=1.0,
        legacy_intensity_scale=1.0,
    )
    assert zero.ratios["raw_to_grouped"] is None


def test_number_formatting():
    f = _report.fmt6
    assert [f(1e9), f(64), f(0), f(-2.14586e-05), f(0.085087), f(494.1046540086156)] == [
        "1e+09",
        "64",
        "0",
        "-2.14586e-05",
        "0.085087",
        "494.105",
    ]
    assert f(None) == f(float("nan")) == f(float("inf")) == f(np.float64("nan")) == "\u2014"
    assert f(np.float32("nan")) == "nan"  # not a Python float (§4)
    assert _report.raw(np.float32(494.1046142578125)) == "494.1046142578125"
    assert _report.raw(None) == "None" and _report.raw([64, 64, 64, 4]) == "[64, 64, 64, 4]"
    assert _report.fix2(988.2117688026185) == "988.21"


def test_scale_delta_uses_values_as_passed():
    # Two float32 values subtract in float32, then widen; float64 values subtract in float64.
    a, b = np.float32(494.1046142578125), np.float32(494.10464)
    report = _seed_report(bundle_intensity_scale=a, legacy_intensity_scale=b)
    assert report.scale_delta == float(a - b) == -3.0517578125e-05
    assert "- bundle minus legacy delta: -3.0517578125e-05\n" in report.to_markdown()
    payload = report.to_payload()
    assert payload["bundle_intensity_scale"] == 494.1046142578125
    assert type(payload["legacy_params_intensity_scale"]) is float
    # A 0-d JAX/NumPy array is taken as the NumPy scalar it holds.
    import jax.numpy as jnp

    j = _seed_report(
        bundle_intensity_scale=jnp.float32(494.1046142578125),
        legacy_intensity_scale=np.asarray(np.float32(494.1046142578125)),
    )
    assert j.to_markdown() == _seed_report().to_markdown()
    with pytest.raises(pj.PtychoInputError, match="bundle_intensity_scale: expected a real scalar"):
        _seed_report(bundle_intensity_scale=np.ones(2))


def test_intensity_scaler_state_unreadable_and_zero_cfg():
    state = pj.intensity_scaler_state(
        None, trainable=None, params_cfg_intensity_scale=494.1, params_cfg_trainable=True
    )
    assert list(state) == list(_report.SCALER_STATE_KEYS)
    assert state["log_scale_value"] is None and state["delta"] is None and state["ratio"] is None
    md = _seed_report(intensity_scaler_state=state).to_markdown()
    assert "| log_scale (raw) | \u2014 |" in md and "| trainable | None |" in md
    zero = pj.intensity_scaler_state(
        np.float32(0.0), trainable=False, params_cfg_intensity_scale=0.0, params_cfg_trainable=False
    )
    assert zero["exp_log_scale"] == 1.0 and zero["delta"] == 1.0 and zero["ratio"] is None
    # A float64 log_scale is rounded to the float32 the variable holds.
    assert (
        pj.intensity_scaler_state(
            6.202747344970703123,
            trainable=True,
            params_cfg_intensity_scale=1.0,
            params_cfg_trainable=True,
        )["exp_log_scale"]
        == 494.1046540086156
    )


def test_stage_record_validation_and_record_stage():
    with pytest.raises(
        pj.PtychoInputError, match=r"metadata\.count: expected a plain Python scalar"
    ):
        pj.record_stage("raw_diffraction", np.zeros((2, 2), np.float32), count=np.int64(2))
    with pytest.raises(pj.PtychoInputError, match="missing"):
        pj.StageRecord("x", {"mean": 1.0})
    with pytest.raises(jaxtyping.TypeCheckError, match="StageRecord"):  # the runtime type check
        pj.build_intensity_report(
            [{"name": "x"}], bundle_intensity_scale=1.0, legacy_intensity_scale=1.0
        )
    a = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    rec = pj.record_stage(
        "grouped_diffraction",
        a,
        source="RawData.generate_grouped_data",
        count=2,
        gridsize=2,
        name="metadata may be called name",
    )
    assert list(rec.metadata) == ["source", "count", "gridsize", "name"]
    assert rec.stats["mean"] == 11.5 and rec.stats["shape"] == [2, 3, 4]
    assert int(rec.histogram.counts.sum()) == 24 and rec.histogram.edges[0] == 0.0
    with pytest.raises(TypeError):
        rec.metadata["count"] = 3  # read-only
    assert pj.StageRecord.from_payload(rec.to_payload()) == rec
    none_meta = pj.StageRecord("container_X", rec.stats, {"group_limit": None})
    report = pj.build_intensity_report(
        [none_meta], bundle_intensity_scale=1.0, legacy_intensity_scale=1.0
    )
    assert "- group_limit: None\n" in report.to_markdown()
    assert '"group_limit": null' in report.to_json()
    assert "metadata" not in pj.StageRecord("x", rec.stats).to_payload()


# -- provenance and files ------------------------------------------------------------------------


def test_provenance_is_appended_after_the_seed(tmp_path):
    raw = tmp_path / "input.npz"
    raw.write_bytes(b"ptycho")
    prov = pj.make_provenance(input_path=raw, parameters={"N": 64, "gridsize": 2}, variant="main")
    assert prov["input_sha256"] == hashlib.sha256(b"ptycho").hexdigest()
    assert prov["input_path"] == str(raw)
    assert prov["package"] == "ptycho_jax" and prov["version"] == pj.__version__
    assert prov["git_sha"] is None or len(prov["git_sha"]) == 40
    report = _seed_report(provenance=prov)
    seed = (DATA / "seed-report.md").read_text(encoding="utf-8")
    md = report.to_markdown(figure_name="intensity_stats.png")
    assert md.startswith(seed) and md.endswith("\n") and not md.endswith("\n\n")
    tail = md[len(seed) :].split("\n")
    assert tail[:3] == ["", "## Provenance", ""]  # one blank line between sections
    assert (
        "- variant: main" in tail
        and "  - N: 64" in tail
        and "- figure: intensity_stats.png" in tail
    )
    assert "![Intensity statistics](intensity_stats.png)" in tail
    payload = json.loads(report.to_json(figure_name="intensity_stats.png"))
    assert payload["provenance"]["parameters"] == {"N": 64, "gridsize": 2}
    assert payload["provenance"]["figure"] == "intensity_stats.png"
    # No provenance: nothing added, whatever figure name is passed.
    assert _seed_report().to_markdown(figure_name="intensity_stats.png") == seed


def test_write_report(tmp_path):
    report = _seed_report(provenance=pj.make_provenance(parameters={"N": 64}, variant="seed"))
    out = tmp_path / "run"
    paths = pj.write_report(report, out)
    assert set(paths) == {"markdown", "json", "figure"}
    assert sorted(os.listdir(out)) == [
        "intensity_stats.json",
        "intensity_stats.md",
        "intensity_stats.png",
    ]
    text = paths["json"].read_text(encoding="utf-8")
    assert not text.endswith("\n") and text == report.to_json(figure_name="intensity_stats.png")
    payload = json.loads(text)
    assert list(payload) == sorted(payload)
    assert payload["provenance"]["figure"] == "intensity_stats.png"
    assert paths["markdown"].read_text(encoding="utf-8") == report.to_markdown(
        figure_name="intensity_stats.png"
    )
    import matplotlib.image

    img = matplotlib.image.imread(paths["figure"])
    assert img.ndim == 3 and img.shape[0] > 300 and img.shape[1] > 600
    # Without the figure and without provenance the files are the upstream ones exactly.
    plain = _seed_report()
    paths = pj.write_report(plain, tmp_path / "plain", figure=False)
    assert set(paths) == {"markdown", "json"}
    assert paths["markdown"].read_bytes() == (DATA / "seed-report.md").read_bytes()


def test_figure_from_arrays_and_stats_only():

    import matplotlib.image

    rng = np.random.default_rng(0)
    x = rng.exponential(0.1, (8, 16, 16, 4)).astype(np.float32)
    x[0, 0, 0, 0] = np.nan
    stages = [
        pj.record_stage("raw_diffraction", x[:, :, :, 0], source="RawData", count=8),
        pj.record_stage("grouped_diffraction", x, source="RawData.generate_grouped_data", count=8),
        pj.record_stage("grouped_X_full", x * np.float32(0.5), source="normalize_data", count=8),
        pj.StageRecord("container_X", pj.array_stats(np.zeros(4, np.float32))),  # stats only
        pj.record_stage("extra", np.full(3, np.nan, np.float32)),  # no finite entry
    ]
    report = pj.build_intensity_report(
        stages, bundle_intensity_scale=1.0, legacy_intensity_scale=1.0
    )
    png = pj.render_figure(report)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    img = matplotlib.image.imread(io.BytesIO(png), format="png")
    assert img.shape[2] == 4


@pytest.mark.parametrize("fail_at", ["fsync", "replace"])
def test_write_report_is_atomic(tmp_path, monkeypatch, fail_at):
    report = _seed_report()
    calls = {"n": 0}
    real = getattr(_report.os, fail_at)

    def failing(*args, **kw):
        calls["n"] += 1
        if calls["n"] == 2:  # the second file: the first one is already written / renamed
            raise OSError(f"simulated {fail_at} failure")
        return real(*args, **kw)

    monkeypatch.setattr(_report.os, fail_at, failing)
    with pytest.raises(OSError, match="simulated"):
        pj.write_report(report, tmp_path, figure=False)
    assert os.listdir(tmp_path) == []
    # A figure that fails to render leaves nothing either (rendering happens before any write).
    monkeypatch.undo()
    import ptycho_jax.app.figure

    def boom(*a, **k):
        raise RuntimeError("no figure")

    monkeypatch.setattr(ptycho_jax.app.figure, "render_figure", boom)
    with pytest.raises(RuntimeError, match="no figure"):
        pj.write_report(report, tmp_path)
    assert os.listdir(tmp_path) == []


# -- the chain, end to end ---------------------------------------------------------------------

GOLDEN_DATA = pathlib.Path(__file__).parent / "data" / "golden"


@pytest.mark.skipif(
    not (GOLDEN_DATA / "input_rawdata.npz").exists(), reason="tests/data/golden missing"
)
@pytest.mark.filterwarnings("ignore::ptycho_jax.MirroredPatchWarning")
@pytest.mark.parametrize("case", CASES)
def test_chain_report_reproduces_golden(case, tmp_path):
    """RawData → run_chain (golden nn_indices injected) → chain_report: the golden files exactly."""
    golden_params = json.loads((GOLDEN_DATA / "manifest.json").read_text())["cases"][case]["params"]
    raw = pj.RawData.from_npz(GOLDEN_DATA / "input_rawdata.npz")
    with np.load(GOLDEN_DATA / f"{case}.npz") as z:
        nn = z["nn_indices"]
    params = pj.ChainParams(
        N=64,
        gridsize=golden_params["gridsize"],
        n_groups=golden_params["n_groups"],
        sequential=golden_params["sequential"],
        seed=42,
        nphotons=1e9,
        variant="main",
    )
    result = pj.run_chain(raw, params, nn_indices=nn)
    report = pj.chain_report(result, raw=raw, dataset_comparison=False)
    _check_reproduces(report, case)
    # With the comparison section (as SEED): E from the raw frames, as the golden stage4 scalars.
    full = pj.chain_report(
        result, raw=raw, provenance=pj.make_provenance(parameters=params.to_dict(), variant="main")
    )
    d = full.to_payload()["dataset_intensity_scale"]
    assert d["batch_mean_sum_intensity"] == 2995.978064583932
    assert d["dataset_scale"] == 577.7376696739599 and d["fallback_scale"] == 988.2117688026185
    md = full.to_markdown()
    assert (
        "| E_batch[\u03a3|\u03a8|\u00b2] | 2995.98 |" in md and "mismatch:** ratio=0.584629 " in md
    )
    assert md.startswith(_read(case, "intensity_stats.md").split("## Stage Means")[0].rstrip("\n"))
    if case == "gs2_ideal":
        paths = pj.write_report(full, tmp_path)
        assert json.loads(paths["json"].read_text())["provenance"]["parameters"]["gridsize"] == 2


def test_figure_title_names_the_scenario_and_parameters():
    from ptycho_jax.app.figure import figure_title

    report = pj.build_intensity_report(
        [pj.record_stage("raw_diffraction", np.ones((2, 4, 4), np.float32))],
        bundle_intensity_scale=1.0,
        legacy_intensity_scale=1.0,
        provenance={
            "scenario": {"name": "gs2_ideal"},
            "parameters": {"gridsize": 2, "K": 4, "n_groups": 64, "nphotons": 1e9, "N": 64},
        },
    )
    assert figure_title(report) == (
        "ptycho-jax report: scenario gs2_ideal\ngridsize=2, N=64, K=4, n_groups=64, nphotons=1e+09"
    )
    by_file = dataclasses.replace(report, provenance={"input_path": "scan.npz", "parameters": {}})
    assert figure_title(by_file) == "ptycho-jax report: input scan.npz"


def test_figure_with_the_data_row_draws_the_frame_probe_and_object():
    # with `raw`, the figure gains a row of images above the histograms: taller, and the band
    # where the data row sits is drawn on (many distinct colours), not blank
    raw = make_raw_for_figure()
    report = pj.build_intensity_report(
        [pj.record_stage("raw_diffraction", np.asarray(raw.diff3d))],
        bundle_intensity_scale=1.0,
        legacy_intensity_scale=1.0,
    )
    plain = matplotlib.image.imread(io.BytesIO(pj.render_figure(report)), format="png")
    full = matplotlib.image.imread(io.BytesIO(pj.render_figure(report, raw=raw)), format="png")
    assert full.shape[0] > plain.shape[0] and full.shape[1] == plain.shape[1]
    band = full[int(0.12 * full.shape[0]) : int(0.32 * full.shape[0])]  # the data row
    assert len(np.unique(band.reshape(-1, 4), axis=0)) > 200
    # the same report without the object: the panel still shows the scan positions
    no_object = dataclasses.replace(raw, objectGuess=None)
    img = matplotlib.image.imread(io.BytesIO(pj.render_figure(report, raw=no_object)), format="png")
    assert img.shape == full.shape and not np.array_equal(img, full)


def make_raw_for_figure() -> pj.RawData:
    rng = np.random.default_rng(3)
    n, N = 16, 16
    x = rng.uniform(20, 40, n)
    y = rng.uniform(20, 40, n)
    probe = np.zeros((N, N), np.complex64)
    probe[4:12, 4:12] = 1.0
    return pj.RawData(
        xcoords=x,
        ycoords=y,
        xcoords_start=x,
        ycoords_start=y,
        diff3d=rng.exponential(1.0, (n, N, N)).astype(np.float32),
        probeGuess=probe,
        scan_index=np.zeros(n, np.int64),
        objectGuess=(rng.uniform(0.5, 1.0, (64, 64)) + 0j).astype(np.complex64),
    )
