"""The Intensity Statistics report: records, derived values, Markdown, JSON (specs/report.md)."""

import dataclasses
import json
import math
import os
import pathlib
import subprocess
import types
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from jaxtyping import ArrayLike, Shaped

from ._errors import PtychoInputError
from ._stats import array_stats, check_stats
from ._variants import VariantName
from ._version import __version__

if TYPE_CHECKING:
    from ._pipeline import ChainResult
    from ._rawdata import RawData


# ---------------------------------------------------------------------------------------------
# Fixed vocabulary (intensity-report.md §3.1, §3.2) and SEED boilerplate lines (§5, "SEED n").

STAGE_ORDER = ("raw_diffraction", "grouped_diffraction", "grouped_X_full", "container_X")
STAGE_LABELS = types.MappingProxyType(
    {
        "raw_diffraction": "Raw diffraction",
        "grouped_diffraction": "Grouped diffraction",
        "grouped_X_full": "Grouped X (normalized)",
        "container_X": "Container X",
    }
)
RATIO_TRANSITIONS = (
    ("raw_to_grouped", "raw_diffraction", "grouped_diffraction"),
    ("grouped_to_normalized", "grouped_diffraction", "grouped_X_full"),
    ("normalized_to_container", "grouped_X_full", "container_X"),
)
SCALER_SPEC_REFERENCE = "specs/spec-ptycho-core.md \u00a7Normalization Invariants"

_SEED_3 = "**Spec Reference:** `specs/spec-ptycho-core.md \u00a7Normalization Invariants`"
_SEED_13 = _SEED_3
_SEED_15 = "Per the spec, two compliant intensity scale calculation modes are allowed:"
_SEED_16 = (
    "1. **Dataset-derived (preferred):** `s = sqrt(nphotons / E_batch[\u03a3_xy |\u03a8|\u00b2])`"
)
_SEED_17 = "2. **Closed-form fallback:** `s \u2248 sqrt(nphotons) / (N/2)`"
_SEED_19 = (  # "988.21" replaced by fix2(fallback_scale)
    "If the dataset-derived scale differs significantly from the fallback value ({fallback}),"
)
_SEED_20 = "this indicates the actual data statistics differ from the assumed model."
_SEED_32 = (  # "0.58463" replaced by fmt6(ratio); ends with one space (Markdown hard break)
    "\u26a0\ufe0f **Dataset vs fallback scale mismatch:** ratio={ratio} "
)
_SEED_33 = (  # "2995.97" replaced by fmt6(E); ends with one space
    "indicates that the actual mean intensity per sample ({E}) "
)
_SEED_34 = "differs from the assumed (N/2)\u00b2 = {energy}."  # "1024" replaced by int((N/2)**2)
_SEED_57 = "Per `specs/spec-ptycho-core.md \u00a7Normalization Invariants`, symmetry SHALL hold:"
_SEED_58 = "- Training inputs: `X_scaled = s \u00b7 X`"
_SEED_59 = "- Labels: `Y_amp_scaled = s \u00b7 X` (amplitude), `Y_int = (s \u00b7 X)^2` (intensity)"
_SEED_61 = "If the ratio deviates significantly from 1.0, investigate whether the normalization"
_SEED_62 = "pipeline preserves the intensity_scale symmetry mandated by the spec."
_SEED_66 = "**Spec Reference:** `specs/spec-ptycho-workflow.md \u00a7Loss and Optimization`"
_SEED_68 = (
    "Per the architecture, `IntensityScaler` and `IntensityScaler_inv` layers use a shared "
    "`log_scale` tf.Variable."
)
_SEED_69 = (
    "The effective scaling factor is `exp(log_scale)`. If this diverges from the recorded "
    "bundle/params.cfg value,"
)
_SEED_70 = (
    "it may indicate double-scaling or a training-time drift that contributes to amplitude bias."
)
_SEED_84 = "Statistics of the training container's X tensor after normalization."
_SEED_85 = (
    "Per `specs/spec-ptycho-core.md \u00a7Normalization Invariants`, this should reflect "
    "`X_scaled = s \u00b7 X`."
)

SEED_LINES = types.MappingProxyType(
    {
        3: _SEED_3,
        13: _SEED_13,
        15: _SEED_15,
        16: _SEED_16,
        17: _SEED_17,
        19: _SEED_19.format(fallback="988.21"),
        20: _SEED_20,
        32: _SEED_32.format(ratio="0.58463"),
        33: _SEED_33.format(E="2995.97"),
        34: _SEED_34.format(energy=1024),
        57: _SEED_57,
        58: _SEED_58,
        59: _SEED_59,
        61: _SEED_61,
        62: _SEED_62,
        66: _SEED_66,
        68: _SEED_68,
        69: _SEED_69,
        70: _SEED_70,
        84: _SEED_84,
        85: _SEED_85,
    }
)
"""The SEED boilerplate lines by SEED line number, as rendered for the seed's own numbers."""

SCALER_STATE_KEYS = (
    "log_scale_value",
    "exp_log_scale",
    "trainable",
    "params_cfg_intensity_scale",
    "params_cfg_trainable",
    "delta",
    "ratio",
    "spec_reference",
)
DATASET_SCALE_KEYS = (
    "dataset_scale",
    "fallback_scale",
    "batch_mean_sum_intensity",
    "nphotons",
    "N",
    "delta",
    "ratio",
)
MISMATCH_TOLERANCE = 0.01
"""The comparison section warns when |dataset/fallback - 1| exceeds this (§3.3)."""

MARKDOWN_NAME = "intensity_stats.md"
JSON_NAME = "intensity_stats.json"
FIGURE_NAME = "intensity_stats.png"

# ---------------------------------------------------------------------------------------------
# Number formatting (§4).

EM_DASH = "\u2014"


def fmt6(v: Any) -> str:
    """Six significant digits, `format(float(v), '.6g')`; an em dash for None and non-finite floats.

    As upstream, only a Python `float` (including `np.float64`) that is NaN or ±inf gives the
    dash; a `np.float32` NaN prints `nan`.
    """
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return EM_DASH
    return format(float(v), ".6g")


def _plain(v: Any) -> Any:
    """NumPy scalars to Python scalars (`.item()`); anything else unchanged."""
    if isinstance(v, np.generic):
        return v.item()
    return v


def raw(v: Any) -> str:
    """Python `str` of the value after NumPy-to-Python scalar conversion (§4 raw)."""
    return str(_plain(v))


def fix2(v: float) -> str:
    """Two decimals, `format(v, '.2f')` (the fallback value in the comparison prose)."""
    return format(v, ".2f")


# ---------------------------------------------------------------------------------------------
# Stage records (§2).


def _section(title: str, *paragraphs: list[str]) -> list[str]:
    """A `##` heading, then each paragraph's lines followed by a blank line."""
    lines = [f"## {title}", ""]
    for paragraph in paragraphs:
        lines += [*paragraph, ""]
    return lines


def _value_table(key_header: str, rows: list[tuple[str, str]], *, align: str = "---:") -> list[str]:
    """A two-column Markdown table in upstream's layout (value column aligned by `align`), then a blank line."""
    body = [f"| {key} | {value} |" for key, value in rows]
    return [f"| {key_header} | Value |", f"| --- | {align} |", *body, ""]


def _check_plain(value: Any, *, where: str) -> None:
    """Require a JSON-ready plain value: None, bool, int, float, str, list or str-keyed dict."""
    if isinstance(value, np.generic):
        raise PtychoInputError(
            f"{where}: expected a plain Python scalar, got {type(value).__name__} {value!r}; "
            "convert it with .item() or int()/float()"
        )
    if value is None or isinstance(value, (bool, int, float, str)):
        return
    if isinstance(value, list):
        for i, x in enumerate(value):
            _check_plain(x, where=f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for k, x in value.items():
            if not isinstance(k, str):
                raise PtychoInputError(f"{where}: expected str keys, got {type(k).__name__} {k!r}")
            _check_plain(x, where=f"{where}.{k}")
        return
    raise PtychoInputError(
        f"{where}: expected None, bool, int, float, str, list or dict, got "
        f"{type(value).__name__} {value!r}"
    )


@dataclasses.dataclass(frozen=True)
class StageHistogram:
    """Counts of a stage array's finite entries in equal-width bins (for the figure only)."""

    counts: np.ndarray
    edges: np.ndarray


def stage_histogram(a: Shaped[ArrayLike, "..."], *, bins: int = 64) -> StageHistogram | None:
    """Histogram of the finite entries of `a` over [min, max] (None when no entry is finite)."""
    arr = np.asarray(a)
    if np.issubdtype(arr.dtype, np.inexact):
        finite = arr[np.isfinite(arr)]
    else:  # integers and bools: all finite; histogram them as float64
        finite = arr.ravel().astype(np.float64)
    if finite.size == 0:
        return None
    lo, hi = float(np.min(finite)), float(np.max(finite))
    # bins need distinct float64 edges: widen a range narrower than a few ulps per bin (constant
    # data, and huge constant data such as 1e30 where ±0.5 is below one ulp; a fuzzer find)
    need = bins * 4 * float(np.spacing(max(abs(lo), abs(hi), 1.0)))
    if hi - lo < need:
        mid, half = (lo + hi) / 2, max(0.5, need)
        lo, hi = mid - half, mid + half
    counts, edges = np.histogram(finite.astype(np.float64, copy=False), bins=bins, range=(lo, hi))
    return StageHistogram(counts=counts, edges=edges)


@dataclasses.dataclass(frozen=True)
class StageRecord:
    """One recorded stage: its name, its nine statistics and its metadata (insertion order kept).

    Attributes:
        name: Stage name (`raw_diffraction`, `grouped_diffraction`, `grouped_X_full`,
            `container_X` are the ones the ratios and labels know).
        stats: The nine statistics of §2.2 (see `array_stats`), read-only.
        metadata: Plain JSON values, printed as `- key: value` lines in insertion order, read-only.
        histogram: Optional histogram for the figure; not part of the Markdown or JSON.
    """

    name: str
    stats: Mapping[str, Any]
    metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    histogram: StageHistogram | None = dataclasses.field(default=None, compare=False, repr=False)

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise PtychoInputError(f"StageRecord.name: expected a non-empty str, got {self.name!r}")
        stats = check_stats(self.stats, where=f"StageRecord({self.name}).stats")
        _check_plain(stats, where=f"StageRecord({self.name}).stats")
        if not hasattr(self.metadata, "items"):
            raise PtychoInputError(
                f"StageRecord({self.name}).metadata: expected a mapping, got "
                f"{type(self.metadata).__name__}"
            )
        metadata = dict(self.metadata.items())
        _check_plain(metadata, where=f"StageRecord({self.name}).metadata")
        object.__setattr__(self, "stats", types.MappingProxyType(stats))
        object.__setattr__(self, "metadata", types.MappingProxyType(metadata))

    def to_payload(self) -> dict[str, Any]:
        """`{"name", "stats", "metadata"?}` as in the JSON (`metadata` omitted when empty)."""
        out: dict[str, Any] = {"name": self.name, "stats": dict(self.stats)}
        if self.metadata:
            out["metadata"] = dict(self.metadata)
        return out

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> "StageRecord":
        """Rebuild a record from its JSON form (statistics only, no histogram)."""
        try:
            name, stats = payload["name"], payload["stats"]
        except (KeyError, TypeError) as e:
            raise PtychoInputError(
                f"StageRecord.from_payload: expected keys 'name' and 'stats', got {payload!r}"
            ) from e
        return cls(name, stats, dict(payload.get("metadata") or {}))


def record_stage(name: str, array: Shaped[ArrayLike, "..."], /, **metadata: Any) -> StageRecord:
    """Record one stage array: its statistics (host NumPy, upstream float32 order) and metadata.

    Args:
        name: Stage name, e.g. `"grouped_diffraction"`.
        array: The stage array (NumPy or JAX, real dtype); it is copied to the host and not kept.
        **metadata: Printed as `- key: value` in this order; plain Python values only
            (e.g. `source="RawData", count=512`).

    Returns:
        A `StageRecord` carrying the nine statistics and a 64-bin histogram for the figure.
    """
    host = np.asarray(array)
    return StageRecord(
        name,
        array_stats(host),
        metadata,
        histogram=stage_histogram(host),
    )


# ---------------------------------------------------------------------------------------------
# Derived quantities (§3).


def _ratio(num: Any, den: Any) -> float | None:
    if num is None or den is None or abs(den) <= 1e-12:
        return None
    return num / den


def intensity_scaler_state(
    log_scale_f32: Any,
    *,
    trainable: bool | None,
    params_cfg_intensity_scale: Any,
    params_cfg_trainable: Any,
) -> dict[str, Any]:
    """The IntensityScaler state block (§3.4) from the float32 `log_scale` and the config values.

    `exp_log_scale` is NumPy's float64 `exp` of the widened float32 value (the bundle scale, by
    contrast, is the float32 exp: `float(np.exp(np.float32(log_scale)))`).

    Args:
        log_scale_f32: The shared `log_scale` (float32 scalar: NumPy, JAX or Python float, which is
            rounded to float32 as the variable would), or None when it could not be read.
        trainable: Whether the variable is trainable (None when unreadable).
        params_cfg_intensity_scale: The configured `intensity_scale` (the training scale).
        params_cfg_trainable: The configured `intensity_scale.trainable`, stored as given.

    Returns:
        The eight keys of §3.4 as plain Python values.
    """
    if log_scale_f32 is None:
        log_value = exp_value = trainable_value = None
    else:
        log_value = float(np.float32(np.asarray(log_scale_f32)))
        exp_value = float(np.exp(log_value))
        trainable_value = None if trainable is None else bool(trainable)
    cfg = _plain(params_cfg_intensity_scale)
    if isinstance(cfg, np.ndarray):  # a 0-d array (e.g. a JAX scalar brought to the host)
        cfg = cfg.item()
    cfg_trainable = _plain(params_cfg_trainable)
    delta = ratio = None
    if exp_value is not None and cfg is not None:
        delta = exp_value - float(cfg)
        ratio = exp_value / float(cfg) if float(cfg) != 0 else None
    return {
        "log_scale_value": log_value,
        "exp_log_scale": exp_value,
        "trainable": trainable_value,
        "params_cfg_intensity_scale": cfg,
        "params_cfg_trainable": cfg_trainable,
        "delta": delta,
        "ratio": ratio,
        "spec_reference": SCALER_SPEC_REFERENCE,
    }


def dataset_scale_comparison(E: float, *, nphotons: float, N: int) -> dict[str, Any]:
    """The dataset-derived vs closed-form scale block (§3.3), in float64.

    Args:
        E: Mean over the raw frames of Σ_hw diff3d² (amplitudes squared), e.g. from
            `ptycho_jax.mean_frame_energy`; must be finite and > 0.
        nphotons: Photon budget of the run.
        N: Frame size.

    Returns:
        `{dataset_scale, fallback_scale, batch_mean_sum_intensity, nphotons, N, delta, ratio}`
        with `dataset_scale = sqrt(nphotons / E)`, `fallback_scale = sqrt(nphotons) / (N/2)`.
    """
    E, nphotons = float(_plain(E)), _plain(nphotons)
    N = _plain(N)
    if not (math.isfinite(E) and E > 0):
        raise PtychoInputError(f"dataset_scale_comparison: E: expected finite > 0, got {E!r}")
    if isinstance(N, bool) or not isinstance(N, int) or N < 1:
        raise PtychoInputError(f"dataset_scale_comparison: N: expected an int >= 1, got {N!r}")
    if not (isinstance(nphotons, (int, float)) and math.isfinite(nphotons) and nphotons > 0):
        raise PtychoInputError(
            f"dataset_scale_comparison: nphotons: expected finite > 0, got {nphotons!r}"
        )
    dataset = math.sqrt(nphotons / E)
    fallback = math.sqrt(nphotons) / (N / 2)
    return {
        "dataset_scale": dataset,
        "fallback_scale": fallback,
        "batch_mean_sum_intensity": E,
        "nphotons": nphotons,
        "N": N,
        "delta": dataset - fallback,
        "ratio": dataset / fallback,
    }


def _scale_value(v: Any, *, where: str) -> Any:
    """A header scale as passed (Python or NumPy scalar); 0-d arrays become NumPy scalars."""
    if v is None or isinstance(v, (int, float, np.generic)):
        return v
    arr = np.asarray(v)
    if arr.shape != () or not np.issubdtype(arr.dtype, np.number):
        raise PtychoInputError(
            f"build_intensity_report: {where}: expected a real scalar or None, got "
            f"{type(v).__name__} shape {arr.shape} dtype {arr.dtype}"
        )
    return arr[()]


# ---------------------------------------------------------------------------------------------
# The report.


@dataclasses.dataclass(frozen=True, eq=False)
class IntensityReport:
    """The inputs of one Intensity Statistics report; renders Markdown (§5) and JSON (§7).

    Build with `build_intensity_report` (or `chain_report`). All derived quantities (means,
    ratios, largest drop, gain, delta) are computed from these fields on demand.
    """

    stages: tuple[StageRecord, ...]
    bundle_intensity_scale: Any
    legacy_intensity_scale: Any
    intensity_scaler_state: Mapping[str, Any] | None = None
    training_container_stats: Mapping[str, Any] | None = None
    dataset_scale: Mapping[str, Any] | None = None
    provenance: Mapping[str, Any] | None = None

    # -- derived quantities (§3) --

    @property
    def scale_delta(self) -> Any:
        """`bundle − legacy` on the values as passed (float32 inputs subtract in float32)."""
        try:
            return _plain(self.bundle_intensity_scale - self.legacy_intensity_scale)
        except TypeError:
            return None

    @property
    def stage_means(self) -> dict[str, float]:
        """Stage name → mean, for every stage with a mean, in stage order."""
        means: dict[str, float] = {}
        for st in self.stages:
            if st.stats.get("mean") is not None:
                means[st.name] = float(st.stats["mean"])
        return means

    @property
    def ratios(self) -> dict[str, float | None]:
        """The three fixed transitions' mean ratios (None where a mean is missing or ~0)."""
        means = self.stage_means
        return {key: _ratio(means.get(dst), means.get(src)) for key, src, dst in RATIO_TRANSITIONS}

    @property
    def largest_drop(self) -> dict[str, Any] | None:
        """The transition with the smallest ratio below 1.0 (first on ties), or None."""
        means, best = self.stage_means, None
        for key, src, dst in RATIO_TRANSITIONS:
            r = _ratio(means.get(dst), means.get(src))
            if r is None or not r < 1.0:
                continue
            if best is None or r < best["ratio"]:
                best = {
                    "key": key,
                    "from_stage": src,
                    "to_stage": dst,
                    "from_mean": means[src],
                    "to_mean": means[dst],
                    "ratio": r,
                }
        return best

    @property
    def normalize_gain(self) -> float | None:
        """mean(grouped_X_full) / mean(grouped_diffraction), or None."""
        means = self.stage_means
        return _ratio(means.get("grouped_X_full"), means.get("grouped_diffraction"))

    # -- JSON (§7) --

    def to_payload(self, *, figure_name: str | None = None) -> dict[str, Any]:
        """The JSON payload as plain Python (schema in specs/report.md).

        Args:
            figure_name: When given and provenance is present, recorded as `provenance.figure`.
        """
        payload: dict[str, Any] = {
            "bundle_intensity_scale": _plain(self.bundle_intensity_scale),
            "legacy_params_intensity_scale": _plain(self.legacy_intensity_scale),
            "scale_delta": self.scale_delta,
            "stages": [st.to_payload() for st in self.stages],
            "stage_means": self.stage_means,
            "ratios": self.ratios,
            "largest_drop": self.largest_drop,
            "normalize_gain": self.normalize_gain,
        }
        if self.intensity_scaler_state is not None:
            payload["intensity_scaler_state"] = dict(self.intensity_scaler_state)
        if self.training_container_stats is not None:
            payload["training_container_stats"] = dict(self.training_container_stats)
        if self.dataset_scale is not None:
            payload["dataset_intensity_scale"] = dict(self.dataset_scale)
        if self.provenance is not None:
            prov = dict(self.provenance)
            if figure_name is not None:
                prov["figure"] = figure_name
            payload["provenance"] = prov
        return payload

    def to_json(self, *, figure_name: str | None = None) -> str:
        """`json.dumps(payload, indent=2, sort_keys=True)`, no trailing newline."""
        return json.dumps(self.to_payload(figure_name=figure_name), indent=2, sort_keys=True)

    # -- Markdown (§5) --

    def to_markdown(self, *, figure_name: str | None = None) -> str:
        """The Markdown report, line by line as §5; ends with exactly one newline.

        Args:
            figure_name: When given and provenance is present, the Provenance section links it.
        """
        lines: list[str] = []
        self._header(lines)
        if self.dataset_scale is not None:
            self._comparison(lines)
        self._means_and_ratios(lines)
        if self.largest_drop is not None:
            self._largest_drop(lines)
        if self.intensity_scaler_state:
            self._scaler_state(lines)
        if self.training_container_stats:
            self._container_stats(lines)
        self._per_stage(lines)
        if self.provenance is not None:
            self._provenance(lines, figure_name)
        return "\n".join(lines)

    def _header(self, lines: list[str]) -> None:
        lines += [
            "# Intensity Statistics",
            "",
            _SEED_3,
            "",
            f"- Bundle intensity_scale: {raw(self.bundle_intensity_scale)}",
            f"- Legacy params intensity_scale: {raw(self.legacy_intensity_scale)}",
            f"- bundle minus legacy delta: {raw(self.scale_delta)}",
            f"- normalize_data gain: {fmt6(self.normalize_gain)}",
            f"- Stage count: {len(self.stages)}",
            "",
        ]

    def _comparison(self, lines: list[str]) -> None:
        d = self.dataset_scale
        lines += _section("Intensity Scale Comparison", [_SEED_13], [_SEED_15, _SEED_16, _SEED_17])
        lines += [_SEED_19.format(fallback=fix2(d["fallback_scale"])), _SEED_20, ""]
        lines += _value_table(
            "Property",
            [
                ("Dataset-derived scale", fmt6(d["dataset_scale"])),
                ("Fallback scale", fmt6(d["fallback_scale"])),
                ("nphotons", fmt6(d["nphotons"])),
                ("N (patch size)", fmt6(d["N"])),
                ("E_batch[\u03a3|\u03a8|\u00b2]", fmt6(d["batch_mean_sum_intensity"])),
                ("Delta (dataset - fallback)", fmt6(d["delta"])),
                ("Ratio (dataset / fallback)", fmt6(d["ratio"])),
            ],
        )
        ratio = d["ratio"]
        if ratio is not None and abs(ratio - 1.0) > MISMATCH_TOLERANCE:
            lines += [
                _SEED_32.format(ratio=fmt6(ratio)),
                _SEED_33.format(E=fmt6(d["batch_mean_sum_intensity"])),
                _SEED_34.format(energy=int((d["N"] / 2) ** 2)),
                "",
            ]

    def _means_and_ratios(self, lines: list[str]) -> None:
        means, ratios = self.stage_means, self.ratios
        lines += ["## Stage Means", "", "| Stage | Mean |", "| --- | ---: |"]
        lines += [f"| {STAGE_LABELS[k]} | {fmt6(means.get(k))} |" for k in STAGE_ORDER]
        lines += ["", "## Stage Ratios", "", "| Transition | Ratio |", "| --- | ---: |"]
        lines += [
            f"| {STAGE_LABELS[src]} \u2192 {STAGE_LABELS[dst]} | {fmt6(ratios[key])} |"
            for key, src, dst in RATIO_TRANSITIONS
        ]
        lines.append("")

    def _largest_drop(self, lines: list[str]) -> None:
        drop = self.largest_drop
        src, dst = STAGE_LABELS[drop["from_stage"]], STAGE_LABELS[drop["to_stage"]]
        headline = f"**{src} \u2192 {dst}** (ratio={fmt6(drop['ratio'])})"
        lines += _section(
            "Largest Drop", [headline], [_SEED_57, _SEED_58, _SEED_59], [_SEED_61, _SEED_62]
        )

    def _scaler_state(self, lines: list[str]) -> None:
        s = self.intensity_scaler_state
        lines += _section("IntensityScaler State", [_SEED_66], [_SEED_68, _SEED_69, _SEED_70])
        lines += _value_table(
            "Property",
            [
                ("log_scale (raw)", fmt6(s.get("log_scale_value"))),
                ("exp(log_scale)", fmt6(s.get("exp_log_scale"))),
                ("trainable", raw(s.get("trainable"))),
                ("params.cfg intensity_scale", fmt6(s.get("params_cfg_intensity_scale"))),
                ("params.cfg trainable", raw(s.get("params_cfg_trainable"))),
                ("delta (exp - cfg)", fmt6(s.get("delta"))),
                ("ratio (exp / cfg)", fmt6(s.get("ratio"))),
            ],
        )

    def _container_stats(self, lines: list[str]) -> None:
        s = self.training_container_stats
        lines += _section("Training Container X Stats", [_SEED_84, _SEED_85])
        rows = [("shape", raw(s.get("shape"))), ("dtype", raw(s.get("dtype")))]
        rows += [(k, fmt6(s.get(k))) for k in ("min", "max", "mean", "std")]
        rows.append(("nan_count", raw(s.get("nan_count", 0))))
        lines += _value_table("Metric", rows)

    def _per_stage(self, lines: list[str]) -> None:
        lines += ["## Per-Stage Statistics", ""]
        for st in self.stages:
            s = st.stats
            lines += [f"### {st.name}", ""]
            if st.metadata:
                lines += [f"- {k}: {raw(v)}" for k, v in st.metadata.items()]
                lines.append("")
            rows = [("shape", raw(s["shape"])), ("dtype", raw(s["dtype"]))]
            rows += [(k, fmt6(s[k])) for k in ("min", "max", "mean", "std")]
            rows += [(k, raw(s[k])) for k in ("finite_count", "total_count", "nan_count")]
            lines += _value_table("Metric", rows, align="---")

    def _provenance(self, lines: list[str], figure_name: str | None) -> None:
        # ptycho_jax addition, after every upstream section (specs/report.md §Provenance).
        lines += ["## Provenance", ""]
        for key, value in self.provenance.items():
            if isinstance(value, dict) and value:
                lines.append(f"- {key}:")
                lines += [f"  - {k}: {raw(v)}" for k, v in value.items()]
            else:
                lines.append(f"- {key}: {raw(value)}")
        if figure_name is not None:
            lines += [f"- figure: {figure_name}", "", f"![Intensity statistics]({figure_name})"]
        lines.append("")


def build_intensity_report(
    stages: Iterable[StageRecord],
    *,
    bundle_intensity_scale: Any,
    legacy_intensity_scale: Any,
    intensity_scaler_state: Mapping[str, Any] | None = None,
    training_container_stats: Mapping[str, Any] | None = None,
    dataset_scale: Mapping[str, Any] | None = None,
    provenance: Mapping[str, Any] | None = None,
) -> IntensityReport:
    """Assemble an Intensity Statistics report from recorded stages and scalars.

    Args:
        stages: `StageRecord`s in recording order (see `record_stage`).
        bundle_intensity_scale: The bundle's `intensity_scale`, printed in full: pass a Python
            float or NumPy scalar (a float32 prints its widened repr, e.g. `494.1046142578125`);
            for the upstream value use `float(np.exp(np.float32(log_scale)))`, not `jnp.exp`.
        legacy_intensity_scale: `params.cfg['intensity_scale']` after loading (usually = bundle).
        intensity_scaler_state: The §3.4 dict (see `intensity_scaler_state`); None omits it.
        training_container_stats: Nine-key stats for the "Training Container X Stats" section
            (upstream passes the `container_X` stage's stats); None omits it.
        dataset_scale: The §3.3 block (see `dataset_scale_comparison`); when given, the
            "Intensity Scale Comparison" section is rendered (the goldens have none).
        provenance: Plain JSON mapping (see `make_provenance`); when given, a "Provenance"
            section and a `provenance` JSON key are added after everything upstream prints.

    Returns:
        The frozen `IntensityReport`.
    """
    recs = tuple(stages)
    for i, st in enumerate(recs):
        if not isinstance(st, StageRecord):
            raise PtychoInputError(
                f"build_intensity_report: stages[{i}]: expected a StageRecord, got "
                f"{type(st).__name__}"
            )
    state = None
    if intensity_scaler_state is not None:
        state = dict(intensity_scaler_state)
        _check_plain(state, where="build_intensity_report: intensity_scaler_state")
    container = None
    if training_container_stats is not None:
        container = dict(training_container_stats)
        if container:
            where = "build_intensity_report: training_container_stats"
            container = check_stats(container, where=where)
            _check_plain(container, where=where)
    comparison = None
    if dataset_scale is not None:
        comparison = dict(dataset_scale)
        missing = [k for k in DATASET_SCALE_KEYS if k not in comparison]
        if missing:
            raise PtychoInputError(
                f"build_intensity_report: dataset_scale: expected keys {list(DATASET_SCALE_KEYS)}, "
                f"missing {missing}; build it with dataset_scale_comparison(E, nphotons=, N=)"
            )
        _check_plain(comparison, where="build_intensity_report: dataset_scale")
    prov = None
    if provenance is not None:
        prov = dict(provenance)
        _check_plain(prov, where="build_intensity_report: provenance")
    return IntensityReport(
        stages=recs,
        bundle_intensity_scale=_scale_value(bundle_intensity_scale, where="bundle_intensity_scale"),
        legacy_intensity_scale=_scale_value(legacy_intensity_scale, where="legacy_intensity_scale"),
        intensity_scaler_state=state,
        training_container_stats=container,
        dataset_scale=comparison,
        provenance=prov,
    )


def chain_report(
    result: "ChainResult",
    *,
    raw: "RawData",
    provenance: Mapping[str, Any] | None = None,
    dataset_comparison: bool = True,
    group_limit: int | None = None,
) -> IntensityReport:
    """The Intensity Statistics report of one `run_chain` result, fed as upstream's runner does.

    Stages (§2.1): `raw_diffraction` = `raw.diff3d` (source RawData, count M);
    `grouped_diffraction` (source RawData.generate_grouped_data, count B, gridsize);
    `grouped_X_full` (source normalize_data, count B); `container_X` (source
    PtychoDataContainer, group_limit). Bundle and legacy scale are both NumPy's float32 exp of
    the scaler's float32 `log_scale`, widened (`float(np.exp(np.float32(log_scale)))`); the
    scaler state uses that `log_scale` with `params.cfg intensity_scale` = the variant's
    training scale; the training-container stats are `container_X`'s.

    Args:
        result: The chain run.
        raw: The RawData the chain started from.
        provenance: Optional provenance block (see `make_provenance`).
        dataset_comparison: Render the "Intensity Scale Comparison" section from the raw frames'
            mean energy E (the seed has it; the goldens were rendered without it).
        group_limit: The `group_limit` metadata of `container_X`; None uses `params.n_groups`.

    Returns:
        The report.
    """
    params = result.params
    B = int(np.asarray(result.grouped.nn_indices).shape[0])
    stages = [
        record_stage(
            "raw_diffraction", raw.diff3d, source="RawData", count=int(raw.diff3d.shape[0])
        ),
        record_stage(
            "grouped_diffraction",
            result.grouped.diffraction,
            source="RawData.generate_grouped_data",
            count=B,
            gridsize=int(params.gridsize),
        ),
        record_stage("grouped_X_full", result.grouped.X_full, source="normalize_data", count=B),
        record_stage(
            "container_X",
            result.container.X,
            source="PtychoDataContainer",
            group_limit=int(params.n_groups if group_limit is None else group_limit),
        ),
    ]
    log_scale = np.float32(np.asarray(result.scaler.log_scale))
    bundle = float(np.exp(log_scale))  # NumPy's float32 exp on the host, not jnp.exp (§1)
    state = intensity_scaler_state(
        log_scale,
        trainable=result.scaler.trainable,
        params_cfg_intensity_scale=float(result.training_scale),
        params_cfg_trainable=bool(params.trainable),
    )
    comparison = None
    if dataset_comparison:
        N = int(params.N if params.N is not None else raw.N)
        comparison = dataset_scale_comparison(
            float(result.intensity_scales["raw_E_batch_sum_psi2"]),
            nphotons=float(params.nphotons),
            N=N,
        )
    return build_intensity_report(
        stages,
        bundle_intensity_scale=bundle,
        legacy_intensity_scale=bundle,
        intensity_scaler_state=state,
        training_container_stats=stages[-1].stats,
        dataset_scale=comparison,
        provenance=provenance,
    )


# ---------------------------------------------------------------------------------------------
# Provenance and files.


def _git_sha() -> str | None:
    """HEAD of the git checkout this package is imported from, or None (not a checkout, no git)."""
    pkg = pathlib.Path(__file__).resolve().parent

    def git(*args: str) -> str:
        cmd = ["git", "-C", str(pkg), *args]
        return subprocess.run(
            cmd, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()

    try:
        top = git("rev-parse", "--show-toplevel")
        if (pathlib.Path(top) / "src" / "ptycho_jax").resolve() != pkg:
            return None  # an unrelated enclosing repository
        return git("rev-parse", "HEAD") or None
    except (OSError, subprocess.SubprocessError):
        return None


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def make_provenance(
    *,
    input_path: str | os.PathLike | None = None,
    parameters: Mapping[str, Any] | None = None,
    variant: VariantName | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The provenance block: package version, git SHA, input file and its SHA-256, parameters.

    Args:
        input_path: The RawData file the run started from (hashed with SHA-256), or None.
        parameters: Run parameters (plain JSON values), e.g. `ChainParams.to_dict()`.
        variant: The pipeline variant (`"main"` or `"seed"`).
        **extra: More plain JSON entries, appended in order.

    Returns:
        `{package, version, git_sha, input_path, input_sha256, variant, parameters, ...extra}`.
    """
    prov: dict[str, Any] = {
        "package": "ptycho_jax",
        "version": __version__,
        "git_sha": _git_sha(),
        "input_path": None if input_path is None else str(input_path),
        "input_sha256": None if input_path is None else file_sha256(input_path),
        "variant": variant,
        "parameters": dict(parameters) if parameters is not None else {},
        # the report's layout is upstream's byte for byte, its citations included
        "spec_references": "specs/spec-ptycho-core.md and specs/spec-ptycho-workflow.md, cited "
        "above, are upstream PtychoPINN's specifications (its repository's specs/), kept as "
        "upstream prints them; ptycho-jax's own specification is specs/report.md in ptycho-jax",
    }
    prov.update(extra)
    _check_plain(prov, where="make_provenance")
    return prov
