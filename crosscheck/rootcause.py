"""The fewest causes that explain every failing array (specs/crosscheck.md §6.3).

After the stages are compared, the failing arrays are walked in chain order. Each is either
explained by a cause already found — through the chain's own relations — or becomes a cause
itself. Two kinds of relation:

* **quantified**: the normalisation gain g enters later arrays as a power, `X_full ∝ g`,
  container `X ∝ g`, the mean energy of X `∝ g²`, the dataset-derived scale and `norm_Y_I`
  `∝ 1/g` (pipeline.md §6, §7, §8). When the port's gain is the reference's times r, an array
  "follows from" it if the reference's array times r^e matches the port's: within the array's
  own tolerance, or with at most 5 % of the discrepancy left.
* **structural**: an array computed from another failing array (container coordinates from the
  grouped coordinates, container `Y_I` from the patches, the scaler's outputs from its
  `log_scale`, the grouped energies from the grouped frames) follows from it; named, not sized.

Groups are injected after the grouping stage, so a grouping difference explains nothing
downstream. Where a failing port array equals, bit for bit, an array of a known variant (the
other variant of `normalize_data` computed by ptycho_jax on the reference's grouped frames, or
an extra array the reference recorded, e.g. a golden's `X_full_loader_normalize_data`), the
cause says so.
"""

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ptycho_jax import VariantName

from .compare import ArrayDelta, StageResult, Tolerance, compare_arrays

GAIN = "normalize.normalize_gain"

GAIN_POWERS: Mapping[str, float] = {
    "normalize.X_full": 1.0,
    "container.X": 1.0,
    "intensity_scales.normalized_X_mean_sum_sq_over_HWC": 2.0,
    "intensity_scales.seed_era_dataset_derived_scale_normalized_X": -1.0,
    "intensity_scales.container_norm_Y_I_diffsim_scale_nphotons": -1.0,
    "container.norm_Y_I": -1.0,
}
"""Arrays proportional to a power of the normalisation gain (both variants)."""

SEED_GAIN_POWERS: Mapping[str, float] = {
    "intensity_scales.main_head_train_pinn_calculate_intensity_scale": -1.0,
}
"""Variant `seed` only: its training scale is dataset-derived (pipeline.md §8.2)."""

DOWNSTREAM: Mapping[str, tuple[str, ...]] = {
    "grouped.diffraction": (
        GAIN,
        "normalize.X_full",
        "container.X",
        "intensity_scales.grouped_E_batch_sum_psi2_over_HWC",
        "intensity_scales.grouped_dataset_scale_over_HWC",
        *GAIN_POWERS,
        *SEED_GAIN_POWERS,
    ),
    "grouped.coords_offsets": (
        "container.coords_nominal",
        "container.global_offsets",
        "patches.Y",
        "patches.Y_member",
    ),
    "grouped.coords_relative": ("container.coords_nominal", "container.local_offsets", "patches.Y"),
    "grouped.coords_nn": ("patches.Y_member",),
    "grouped.coords_start_offsets": ("container.coords_true",),
    "grouped.coords_start_relative": ("container.coords_true",),
    "normalize.X_full": ("container.X", *GAIN_POWERS),
    "patches.Y": ("container.Y_I", "container.Y_phi", "container.Y_complex"),
    "patches.Y_member": ("container.Y_I", "container.Y_phi", "container.Y_complex"),
    "container.X": (
        "intensity_scales.normalized_X_mean_sum_sq_over_HWC",
        "intensity_scales.seed_era_dataset_derived_scale_normalized_X",
        "intensity_scales.container_norm_Y_I_diffsim_scale_nphotons",
        "container.norm_Y_I",
        *SEED_GAIN_POWERS,
    ),
    "container.norm_Y_I": ("intensity_scales.container_norm_Y_I_diffsim_scale_nphotons",),
    "intensity_scales.normalized_X_mean_sum_sq_over_HWC": (
        "intensity_scales.seed_era_dataset_derived_scale_normalized_X",
    ),
    "intensity_scales.raw_E_batch_sum_psi2": ("intensity_scales.raw_dataset_scale",),
    "intensity_scales.grouped_E_batch_sum_psi2_over_HWC": (
        "intensity_scales.grouped_dataset_scale_over_HWC",
    ),
}
"""Array → arrays computed from it (a failure of the first explains one of the others)."""

for _case in ("seed_era", "main_head"):
    DOWNSTREAM = {
        **DOWNSTREAM,
        f"scaler.{_case}.log_scale": (
            f"scaler.{_case}.scaler_out",
            f"scaler.{_case}.scaler_inv_out",
        ),
        f"scaler.{_case}.scaler_out": (f"scaler.{_case}.scaler_inv_out",),
    }

RESIDUAL_LEFT = 0.05
"""A quantified relation explains an array when at most this share of its discrepancy is left."""


@dataclasses.dataclass(frozen=True)
class Cause:
    """One independent cause: the first failing array it stands for and what was measured."""

    array: str
    summary: str
    explains: tuple[str, ...] = ()
    variant_match: str | None = None
    # the same array of the scaler's other cases, failing the same way: one layer, one cause
    same_in: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "array": self.array,
            "summary": self.summary,
            "explains": list(self.explains),
            "variant_match": self.variant_match,
            "same_in": list(self.same_in),
        }


@dataclasses.dataclass(frozen=True)
class RootCause:
    """The first diverging stage, the causes, and for every other failing array its cause."""

    first_stage: str | None
    causes: tuple[Cause, ...]
    follows: Mapping[str, str]

    def line(self) -> str:
        """One line: where it starts and what explains the rest."""
        if not self.causes:
            return "no array out of tolerance"
        n = sum(len(c.explains) for c in self.causes)
        heads = "; ".join(
            c.summary
            + (f" (the same in {', '.join(c.same_in)})" if c.same_in else "")
            + (f" [{c.variant_match}]" if c.variant_match else "")
            for c in self.causes
        )
        tail = f"; {n} further failing array{'s' if n != 1 else ''} follow from it" + (
            "" if len(self.causes) == 1 else " or them"
        )
        return (
            f"root cause ({len(self.causes)} independent, first diverging stage "
            f"{self.first_stage}): {heads}" + (tail if n else "")
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "first_diverging_stage": self.first_stage,
            "summary": self.line(),
            "causes": [c.to_json() for c in self.causes],
            "follows": dict(self.follows),
        }


def _full(stage: str, a: ArrayDelta) -> str:
    return f"{stage}.{a.name}"


def _value(outputs: Mapping[str, Mapping[str, Any]], full: str) -> np.ndarray | None:
    stage, _, name = full.partition(".")
    v = (outputs.get(stage) or {}).get(name)
    return None if v is None else np.asarray(v)


def _fmt_ratio(r: float) -> str:
    return f"1{r - 1:+.3g}" if abs(r - 1) < 1e-3 else f"{r:.6g}"


def _explained_by_gain(
    full: str, r: float, power: float, p: np.ndarray, ref: np.ndarray, rule: Tolerance
) -> bool:
    """Whether ref·r^power reproduces p (within the array's tolerance, or leaving ≤ 5 %)."""
    if p.shape != ref.shape or not np.issubdtype(p.dtype, np.number):
        return False
    f = r**power
    corrected = (ref.astype(np.float64) * f).astype(ref.dtype)
    if compare_arrays(full, p, corrected, rule).passed:
        return True
    before = float(np.max(np.abs(p.astype(np.float64) - ref.astype(np.float64))))
    after = float(np.max(np.abs(p.astype(np.float64) - ref.astype(np.float64) * f)))
    return before > 0 and after <= RESIDUAL_LEFT * before


def analyse(
    stages: tuple[StageResult, ...],
    port: Mapping[str, Mapping[str, Any]],
    reference: Mapping[str, Mapping[str, Any]],
    *,
    rule: Callable[[str, str, np.dtype], Tolerance],
    variant: VariantName,
    variant_arrays: Mapping[str, Mapping[str, np.ndarray]] | None = None,
) -> RootCause:
    """The fewest causes explaining every failing array of `stages` (see the module docstring).

    Args:
        stages: the compared stages, in chain order.
        port, reference: each side's stage outputs (`{stage: {array: value}}`).
        rule: the tolerance of (stage, array, dtype).
        variant: the run's variant (`seed` adds the dataset-derived training scale's relation).
        variant_arrays: known arrays to match failing port arrays against, bit for bit:
            `{description: {"stage.array": value}}`.
    """
    failing = [(s.name, a) for s in stages for a in s.failures if a.status == "compared"]
    if not failing:
        return RootCause(None, (), {})
    powers = dict(GAIN_POWERS) | (dict(SEED_GAIN_POWERS) if variant == "seed" else {})
    causes, follows = _walk_failures(failing, port, reference, rule, powers)
    # a structural relation also carries what a cause's explained arrays feed
    for c in causes:
        for e in list(c["explains"]):
            c["reach"] |= _reach(e)
    _set_variant_matches(causes, _variant_matches(port, variant_arrays or {}))
    first = failing[0][0] if causes else None
    return RootCause(
        first,
        tuple(
            Cause(
                c["array"],
                c["summary"],
                tuple(c["explains"]),
                c.get("variant_match"),
                tuple(c.get("same_in", ())),
            )
            for c in causes
        ),
        follows,
    )


def _gain_ratio(
    port: Mapping[str, Mapping[str, Any]], reference: Mapping[str, Mapping[str, Any]]
) -> float | None:
    """Port gain / reference gain, even where the gain itself is within its 1-ulp tolerance;
    None when either is missing or not a scalar, or the ratio is 1 or not finite."""
    gp, gr = _value(port, GAIN), _value(reference, GAIN)
    if gp is not None and gr is not None and gp.size == 1 and gr.size == 1 and float(gr) != 0:
        ratio = float(np.float64(gp)) / float(np.float64(gr))
        if ratio != 1.0 and math.isfinite(ratio):
            return ratio
    return None


def _gain_cause(r: float, powers: Mapping[str, float], *, note: str = "") -> dict[str, Any]:
    """The cause "gain × r": it reaches every gain-power array and everything downstream of
    the gain. `note` is appended to the summary only (the label stays the bare relation)."""
    return {
        "array": GAIN,
        "label": f"{GAIN} × ({_fmt_ratio(r)})",
        "summary": f"{GAIN} × ({_fmt_ratio(r)})" + note,
        "reach": set(powers) | set(DOWNSTREAM.get(GAIN, ())),
        "explains": [],
    }


def _new_cause(stage: str, a: ArrayDelta, full: str) -> dict[str, Any]:
    """A failing array no cause found so far explains: a cause of its own."""
    return {
        "array": full,
        "label": full,
        "summary": f"{full}: {a.diagnosis or a.status}",
        "reach": _reach(full),
        "explains": [],
        "same_in": [],
        "stage": stage,
        "class": a.diagnosis_class,
    }


def _cause_of(causes: list[dict[str, Any]], full: str) -> str | None:
    """The label of the first cause whose structural reach holds `full`, or None."""
    for c in causes:
        if full in c["reach"]:
            return c["label"]
    return None


def _merge_scaler_twin(
    twin: dict[str, Any], follows: dict[str, str], a: ArrayDelta, full: str
) -> None:
    """Fold `full` into `twin`, the same scaler array failing in another case: one cause
    relabelled "scaler.<array> (cases …)", and every array it explained follows the new label."""
    twin["same_in"].append(full)
    twin["reach"] |= _reach(full)
    cases = [x.split(".")[1] for x in (twin["array"], *twin["same_in"])]
    label = f"scaler.{a.name.split('.', 1)[1]} (cases {', '.join(cases)})"
    for k, v in follows.items():
        if v == twin["label"]:
            follows[k] = label
    twin["label"] = label


def _walk_failures(
    failing: list[tuple[str, ArrayDelta]],
    port: Mapping[str, Mapping[str, Any]],
    reference: Mapping[str, Mapping[str, Any]],
    rule: Callable[[str, str, np.dtype], Tolerance],
    powers: Mapping[str, float],
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Walk the failing arrays in chain order: each follows from the gain ratio (quantified),
    from a cause found so far (structural), joins its scaler twin, or becomes a cause.

    Returns the causes (as dicts, in the order found) and `follows`: array → cause label.
    """
    causes: list[dict[str, Any]] = []
    follows: dict[str, str] = {}
    r = _gain_ratio(port, reference)
    gain_cause: dict[str, Any] | None = None
    for stage, a in failing:
        full = _full(stage, a)
        p, ref = _value(port, full), _value(reference, full)
        if full in powers and r is not None and p is not None and ref is not None:
            if _explained_by_gain(full, r, powers[full], p, ref, rule(stage, a.name, ref.dtype)):
                if gain_cause is None:
                    within = not any(_full(s, x) == GAIN for s, x in failing)
                    note = " (the gain itself within its tolerance)" if within else ""
                    gain_cause = _gain_cause(r, powers, note=note)
                    causes.append(gain_cause)
                follows[full] = gain_cause["label"]
                gain_cause["explains"].append(full)
                continue
        if full == GAIN and r is not None and gain_cause is None:
            gain_cause = _gain_cause(r, powers)
            causes.append(gain_cause)
            continue
        if full == GAIN and gain_cause is not None:
            continue
        label = _cause_of(causes, full)
        if label is not None:
            follows[full] = label
            next(c for c in causes if c["label"] == label)["explains"].append(full)
            continue
        twin = _same_scaler_cause(causes, stage, a)
        if twin is not None:
            _merge_scaler_twin(twin, follows, a, full)
            continue
        causes.append(_new_cause(stage, a, full))
    return causes, follows


def _set_variant_matches(causes: list[dict[str, Any]], matches: Mapping[str, str]) -> None:
    """Set each cause's `variant_match`: a gain or `X_full` cause takes a match of either (the
    two are one normalisation), any other cause the match of its own array."""
    for c in causes:
        if c["array"] in (GAIN, "normalize.X_full") and (
            "normalize.X_full" in matches or GAIN in matches
        ):
            c["variant_match"] = matches.get("normalize.X_full") or matches.get(GAIN)
        else:
            c["variant_match"] = matches.get(c["array"])


def _same_scaler_cause(
    causes: list[dict[str, Any]], stage: str, a: ArrayDelta
) -> dict[str, Any] | None:
    """The cause already found for the same scaler array in another case (`seed_era`,
    `main_head`: one layer under two log-scales), failing with the same diagnosis class."""
    if stage != "scaler" or "." not in a.name or a.diagnosis_class is None:
        return None
    key = a.name.split(".", 1)[1]
    for c in causes:
        if (
            c.get("stage") == "scaler"
            and c["array"].rsplit(".", 1)[-1] == key
            and c.get("class") == a.diagnosis_class
        ):
            return c
    return None


def _reach(full: str) -> set[str]:
    """Every array computed, directly or not, from `full`."""
    seen: set[str] = set()
    todo = list(DOWNSTREAM.get(full, ()))
    while todo:
        x = todo.pop()
        if x not in seen:
            seen.add(x)
            todo += DOWNSTREAM.get(x, ())
    return seen


def _variant_matches(
    port: Mapping[str, Mapping[str, Any]], variant_arrays: Mapping[str, Mapping[str, np.ndarray]]
) -> dict[str, str]:
    """`stage.array` → "the port's X equals <description>'s bit for bit" for every exact match."""
    out: dict[str, str] = {}
    for description, arrays in variant_arrays.items():
        for full, v in arrays.items():
            p = _value(port, full)
            if full in out or p is None or v is None:
                continue
            v = np.asarray(v)
            if p.shape == v.shape and p.dtype == v.dtype and np.array_equal(p, v):
                out[full] = f"the port's {full} equals {description} bit for bit"
    return out
