"""Run a port and a reference stage by stage and write the verdict (specs/crosscheck.md §5, §7).

The reference's `nn_indices` are injected into every stage after `grouping` on both sides, so
grouping randomness drops out of everything downstream.
"""

import dataclasses
import io
import logging
import os
import pathlib
import platform
import sys
import traceback
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ptycho_jax import BackendUnavailableError
from ptycho_jax._atomic import write_files_atomically

from . import grouping as _grouping
from .backends import REQUIRED, STAGES, StageUnsupported, resolve_backend
from .compare import (
    ArrayDelta,
    CrosscheckResult,
    StageResult,
    Tolerance,
    ToleranceTable,
    compare_arrays,
    missing_delta,
)
from .diagnose import DiagnosisContext, diagnose

logger = logging.getLogger(__name__)

SCALER_CASES = (
    ("seed_era", "seed_era_dataset_derived_scale_normalized_X"),
    ("main_head", "main_head_train_pinn_calculate_intensity_scale"),
)
"""Scaler runs: (label, intensity scale it is built from); input = reference container X[:4]."""

MAX_MAPS = 6


@dataclasses.dataclass
class _Call:
    value: Any = None
    skipped: str | None = None
    error: str | None = None
    notes: list[str] = dataclasses.field(default_factory=list)


def _call(side: str, backend: Any, stage: str, *args, **kwargs) -> _Call:
    fn = getattr(backend, stage, None)
    if not callable(fn):
        return _Call(
            skipped=f"{side} backend {getattr(backend, 'name', backend)!r} has no stage {stage!r}"
        )
    out = _Call()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            out.value = fn(*args, **kwargs)
        except StageUnsupported as e:
            out.skipped = f"{side}: {e}"
        except BackendUnavailableError:
            raise
        except Exception as e:  # noqa: BLE001 - a port bug is a failed stage, not a crashed harness
            logger.debug("%s %s raised:\n%s", side, stage, traceback.format_exc())
            out.error = f"{side} raised {type(e).__name__}: {e}"
    seen = set()
    for w in caught:
        msg = f"{side} warned ({w.category.__name__}): {w.message}"
        if msg not in seen:
            seen.add(msg)
            out.notes.append(msg)
    return out


def _as_array(v: Any) -> np.ndarray:
    return np.asarray(v)


def _resolve_table(tolerances: Any) -> ToleranceTable:
    if tolerances is None:
        return ToleranceTable.default()
    if isinstance(tolerances, ToleranceTable):
        return tolerances
    if isinstance(tolerances, Mapping):
        return ToleranceTable.default().merged(tolerances)
    return ToleranceTable.load(tolerances)


def _difference_map(
    name: str, p: np.ndarray, r: np.ndarray, delta: ArrayDelta
) -> np.ndarray | None:
    """|port − reference| of the (b, :, :, c) frame holding the worst element, for image arrays."""
    if p.shape != r.shape or p.ndim != 4 or p.shape[1] < 4 or p.shape[1] != p.shape[2]:
        return None
    if not (np.issubdtype(p.dtype, np.number) and np.issubdtype(r.dtype, np.number)):
        return None
    b, _, _, c = delta.worst_index or (0, 0, 0, 0)
    with np.errstate(invalid="ignore"):
        return np.abs(p[b, :, :, c].astype(np.complex128) - r[b, :, :, c].astype(np.complex128))


class _Harness:
    def __init__(self, raw, params, table: ToleranceTable):
        self.raw = raw
        self.params = params
        self.table = table
        self.maps: list[tuple[tuple, str, np.ndarray]] = []
        self.outputs: dict[str, dict[str, Mapping[str, Any]]] = {"port": {}, "reference": {}}
        self.seen: set[str] = set()

    # -- context for the classifier
    def context(
        self, stage: str, ref_out: Mapping[str, Any], delta: ArrayDelta
    ) -> DiagnosisContext:
        ref_all = self.outputs["reference"]
        scales = dict(ref_all.get("intensity_scales") or {})
        ratios = {}
        cf = scales.get("main_head_train_pinn_calculate_intensity_scale")
        for key, label in (
            ("seed_era_dataset_derived_scale_normalized_X", "closed-form/dataset training scale"),
            ("raw_dataset_scale", "closed-form/raw-dataset scale"),
        ):
            if cf and scales.get(key):
                ratios[label] = float(cf) / float(scales[key])
        counterparts = {}
        patches = ref_all.get("patches") or {}
        if stage == "patches" and "Y" in ref_out and "Y_member" in ref_out:
            counterparts = {
                "Y": ("per-member patches (`Y_member`)", ref_out["Y_member"]),
                "Y_member": ("upstream mirrored patches (`Y`)", ref_out["Y"]),
            }
        elif stage == "container" and "Y_member" in patches and "Y" in patches:
            alt = patches["Y_member"] if self.params.patch_positions == "upstream" else patches["Y"]
            label = (
                "per-member patches"
                if self.params.patch_positions == "upstream"
                else "upstream mirrored patches"
            )
            counterparts = {
                "Y_I": (f"|{label}|", np.abs(alt).astype(np.float32)),
                "Y_complex": (label, alt),
            }
        C = self.params.gridsize**2
        N = self.params.N if self.params.N is not None else int(np.shape(self.raw.diff3d)[-1])
        return DiagnosisContext(
            N=N,
            C=C,
            scale_ratios=ratios,
            counterparts=counterparts,
            max_ulp=delta.max_ulp,
            max_rel=delta.max_rel,
            n_beyond=delta.n_beyond,
            n_total=delta.n_total,
        )

    # -- compare one stage's two outputs
    def fresh(self, notes: list[str]) -> list[str]:
        """Notes not reported by an earlier stage (a backend warns once per chain, not per stage)."""
        out = [n for n in notes if n not in self.seen]
        self.seen.update(out)
        return out

    def compare(self, stage: str, p_call: _Call, r_call: _Call, *, prefix: str = "") -> StageResult:
        notes = self.fresh(p_call.notes + r_call.notes)
        if p_call.error or r_call.error:
            return StageResult(
                name=stage,
                passed=False,
                notes=tuple(notes + [e for e in (p_call.error, r_call.error) if e]),
                skipped=None,
            )
        if p_call.skipped or r_call.skipped:
            return StageResult(
                name=stage,
                passed=True,
                skipped="; ".join(s for s in (p_call.skipped, r_call.skipped) if s),
                notes=tuple(notes),
            )
        return StageResult(
            name=stage,
            passed=True,
            arrays=tuple(self.compare_arrays(stage, p_call.value, r_call.value, prefix=prefix)),
            notes=tuple(notes),
        )

    def compare_arrays(
        self,
        stage: str,
        port: Mapping[str, Any],
        ref: Mapping[str, Any],
        *,
        prefix: str = "",
        required: tuple[str, ...] | None = None,
    ) -> list[ArrayDelta]:
        required = REQUIRED.get(stage, ()) if required is None else required
        names = [k for k in required if k in port or k in ref]
        names += sorted(k for k in set(port) | set(ref) if k not in names)
        deltas = []
        for k in names:
            full = prefix + k
            if k in port and port[k] is None:
                port = {kk: vv for kk, vv in port.items() if kk != k}
            if k in ref and ref[k] is None:
                ref = {kk: vv for kk, vv in ref.items() if kk != k}
            if k not in port and k not in ref:
                continue
            if k not in port:
                a = _as_array(ref[k])
                rule = self.table.rule(stage, k, a.dtype)
                if k in required:
                    deltas.append(missing_delta(full, side="port", rule=rule, present=a))
                else:
                    deltas.append(
                        dataclasses.replace(
                            missing_delta(full, side="port", rule=rule, present=a), passed=True
                        )
                    )
                continue
            if k not in ref:
                a = _as_array(port[k])
                deltas.append(
                    missing_delta(
                        full, side="reference", rule=self.table.rule(stage, k, a.dtype), present=a
                    )
                )
                continue
            p, r = _as_array(port[k]), _as_array(ref[k])
            rule: Tolerance = self.table.rule(stage, k, r.dtype)
            d = compare_arrays(full, p, r, rule)
            if not d.passed:
                dg = diagnose(k, p, r, context=self.context(stage, ref, d))
                d = dataclasses.replace(d, diagnosis=dg.message, diagnosis_class=dg.kind)
            m = _difference_map(full, p, r, d)
            if m is not None:
                b, _, _, c = d.worst_index or (0, 0, 0, 0)
                self.maps.append(
                    ((not d.passed, d.max_ulp or 0.0), f"{stage}/{full} [b={b}, c={c}]", m)
                )
            deltas.append(d)
        return deltas

    # -- grouping (exact when seeded, invariants otherwise)
    def grouping(self, p_call: _Call, r_call: _Call) -> StageResult:
        params = self.params
        notes = self.fresh(p_call.notes + r_call.notes)
        if p_call.error or r_call.error:
            return StageResult(
                name="grouping",
                passed=False,
                notes=tuple(notes + [e for e in (p_call.error, r_call.error) if e]),
            )
        seeded = (params.seed is not None or params.sequential) and getattr(
            params, "engine", "scipy"
        ) == "scipy"
        pos = np.stack([np.asarray(self.raw.xcoords), np.asarray(self.raw.ycoords)], axis=1)
        K = (
            params.neighbor_pool_size
            if (params.oversample and params.neighbor_pool_size)
            else params.K
        )
        deltas = []
        if p_call.value is None:
            return StageResult(
                name="grouping", passed=True, skipped=p_call.skipped, notes=tuple(notes)
            )
        pnn = np.asarray(p_call.value["nn_indices"])
        if seeded and r_call.value is not None:
            deltas += self.compare_arrays(
                "grouping", {"nn_indices": pnn}, {"nn_indices": r_call.value["nn_indices"]}
            )
        else:
            why = "unseeded" if not seeded else "reference grouping unavailable"
            notes.append(f"groups compared by the validity invariants ({why}; K={K})")
            for side, nn in (
                ("port", pnn),
                ("reference", None if r_call.value is None else r_call.value["nn_indices"]),
            ):
                if nn is None:
                    continue
                v = _grouping.group_violations(pos, np.asarray(nn), gridsize=params.gridsize, K=K)
                expected_b = (
                    params.n_groups if params.oversample else min(params.n_groups, len(pos))
                )
                if np.ndim(nn) == 2 and np.shape(nn)[0] != expected_b:
                    v.insert(0, f"expected {expected_b} groups, got {np.shape(nn)[0]}")
                deltas.append(
                    ArrayDelta(
                        name=f"nn_indices[{side}]",
                        passed=not v,
                        status="invariants",
                        tolerance="group validity",
                        shape_port=tuple(np.shape(nn)),
                        dtype_port=str(np.asarray(nn).dtype),
                        n_total=int(np.size(nn)),
                        n_beyond=len(v),
                        diagnosis="; ".join(v) if v else None,
                        diagnosis_class="invalid_groups" if v else None,
                    )
                )
            if r_call.skipped:
                notes.append(r_call.skipped)
        return StageResult(
            name="grouping",
            passed=all(d.passed for d in deltas),
            arrays=tuple(deltas),
            notes=tuple(notes),
        )


def _finish(stage: StageResult) -> StageResult:
    if stage.skipped is not None or not stage.arrays:
        return stage
    return dataclasses.replace(stage, passed=stage.passed and all(a.passed for a in stage.arrays))


def _environment(params: Any) -> dict[str, Any]:
    env: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
    }
    for mod in ("numpy", "scipy", "jax", "tensorflow", "ptycho_jax"):
        m = sys.modules.get(mod)
        if m is not None:
            env[mod] = getattr(m, "__version__", "?")
    try:
        import jax

        env["jax_devices"] = [str(d) for d in jax.devices()]
    except Exception as e:  # noqa: BLE001 - environment info is best effort
        logger.debug("no JAX device list: %s", e)
    env["variant"] = getattr(params, "variant", None)
    return env


def _params_dict(params: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(params):
        return dataclasses.asdict(params)
    return dict(vars(params))


def _intensity_report_md(raw, outs: Mapping[str, Any], params, *, N: int) -> str | None:
    """The side's Intensity Statistics report (ptycho_jax's renderer) from its stage outputs."""
    import ptycho_jax as pj

    grouped, norm, cont = outs.get("grouped"), outs.get("normalize"), outs.get("container")
    scales, scal = outs.get("intensity_scales") or {}, outs.get("scaler") or {}
    if not grouped or not norm:
        return None
    B = int(np.shape(grouped["diffraction"])[0])
    stages = [
        pj.record_stage(
            "raw_diffraction",
            np.asarray(raw.diff3d),
            source="RawData",
            count=int(np.shape(raw.diff3d)[0]),
        ),
        pj.record_stage(
            "grouped_diffraction",
            np.asarray(grouped["diffraction"]),
            source="RawData.generate_grouped_data",
            count=B,
            gridsize=int(params.gridsize),
        ),
        pj.record_stage(
            "grouped_X_full", np.asarray(norm["X_full"]), source="normalize_data", count=B
        ),
    ]
    if cont and "X" in cont:
        stages.append(
            pj.record_stage(
                "container_X",
                np.asarray(cont["X"]),
                source="PtychoDataContainer",
                group_limit=int(params.n_groups),
            )
        )
    label = "main_head" if params.variant == "main" else "seed_era"
    log_scale = scal.get(f"{label}.log_scale")
    training = scales.get(dict(SCALER_CASES)[label])
    bundle = float(np.exp(np.float32(log_scale))) if log_scale is not None else None
    state = pj.intensity_scaler_state(
        log_scale,
        trainable=None if log_scale is None else bool(params.trainable),
        params_cfg_intensity_scale=training,
        params_cfg_trainable=bool(params.trainable),
    )
    comparison = None
    if scales.get("raw_E_batch_sum_psi2"):
        comparison = pj.dataset_scale_comparison(
            float(scales["raw_E_batch_sum_psi2"]), nphotons=float(params.nphotons), N=N
        )
    report = pj.build_intensity_report(
        stages,
        bundle_intensity_scale=bundle,
        legacy_intensity_scale=bundle,
        intensity_scaler_state=state,
        training_container_stats=stages[-1].stats if stages[-1].name == "container_X" else None,
        dataset_scale=comparison,
    )
    return report.to_markdown()


def run_crosscheck(
    raw: Any,
    *,
    port: Any,
    reference: Any,
    params: Any,
    tolerances: Any = None,
    progress: Callable[[str], None] | None = None,
) -> CrosscheckResult:
    """Run `port` and `reference` on `raw` stage by stage and compare every array.

    Args:
        raw: the input (`ptycho_jax.RawData`).
        port: backend or spec (`"jax"`, `"tf"`, `"upstream"`, `"golden:DIR"`, `"module:attr"`).
        reference: backend or spec; its `nn_indices` are injected into both sides.
        params: `ptycho_jax.ChainParams` (N, gridsize, K, n_groups, seed, variant, ...).
        tolerances: None (the shipped table), a `ToleranceTable`, a mapping merged over the
            shipped table, or a path to a TOML override file.
        progress: called with each stage name as it starts.

    Returns:
        The frozen `CrosscheckResult` (`passed` when every compared stage is within tolerance).

    Raises:
        BackendUnavailableError: a backend cannot be constructed.
        ToleranceError: a bad tolerance file.
    """
    tick = progress or (lambda name: None)
    table = _resolve_table(tolerances)
    pb, rb = resolve_backend(port), resolve_backend(reference)
    h = _Harness(raw, params, table)
    N = params.N if params.N is not None else int(np.shape(raw.diff3d)[-1])
    results: dict[str, StageResult] = {}

    tick("grouping")
    r_g, p_g = (
        _call("reference", rb, "grouping", raw, params),
        _call("port", pb, "grouping", raw, params),
    )
    results["grouping"] = _finish(h.grouping(p_g, r_g))
    if r_g.value is not None:
        nn = np.asarray(r_g.value["nn_indices"])
    elif p_g.value is not None:
        nn = np.asarray(p_g.value["nn_indices"])
        results["grouping"] = dataclasses.replace(
            results["grouping"],
            notes=results["grouping"].notes
            + ("reference has no grouping: the port's groups are injected",),
        )
    else:
        raise BackendUnavailableError(
            f"neither backend produced groups ({r_g.skipped or r_g.error}; {p_g.skipped or p_g.error})"
        )
    for side, call in (("reference", r_g), ("port", p_g)):
        if call.value is not None:
            h.outputs[side]["grouping"] = call.value

    for stage in ("grouped", "normalize", "patches", "container", "intensity_scales"):
        tick(stage)
        r = _call("reference", rb, stage, raw, params, nn_indices=nn)
        p = _call("port", pb, stage, raw, params, nn_indices=nn)
        for side, call in (("reference", r), ("port", p)):
            if call.value is not None:
                h.outputs[side][stage] = dict(call.value)
        results[stage] = _finish(h.compare(stage, p, r))

    tick("scaler")
    results["scaler"] = _finish(_scaler_stage(h, pb, rb))

    reports = {}
    for side, b in (("port", pb), ("reference", rb)):
        try:
            md = _intensity_report_md(raw, h.outputs[side], params, N=N)
        except Exception as e:  # noqa: BLE001 - the report is an appendix; never fail the check on it
            logger.warning("intensity report of the %s side failed: %s", side, e)
            md = None
        if md:
            reports[f"{side} ({getattr(b, 'name', b)})"] = md

    stages = tuple(results[s] for s in STAGES if s in results)
    compared = [s for s in stages if s.skipped is None]
    passed = bool(compared) and all(s.passed for s in compared)
    h.maps.sort(key=lambda t: t[0], reverse=True)
    maps = {name: m for _, name, m in h.maps[:MAX_MAPS]}
    return CrosscheckResult(
        passed=passed,
        port=str(getattr(pb, "name", port)),
        reference=str(getattr(rb, "name", reference)),
        params=_params_dict(params),
        stages=stages,
        environment=_environment(params),
        reports=reports,
        difference_maps=maps,
    )


def _scaler_stage(h: _Harness, pb, rb) -> StageResult:
    ref_out, port_out = h.outputs["reference"], h.outputs["port"]
    src = ref_out.get("container", {}).get("X")
    if src is None:
        src = (ref_out.get("normalize") or port_out.get("normalize") or {}).get("X_full")
    scales = ref_out.get("intensity_scales") or port_out.get("intensity_scales") or {}
    if src is None or not scales:
        return StageResult(
            name="scaler",
            passed=True,
            skipped="no scaler input (container X and scales unavailable)",
        )
    x = np.asarray(src)[:4]
    deltas, notes, skips = [], [], []
    for label, key in SCALER_CASES:
        if key not in scales:
            skips.append(f"{label}: scale {key} unavailable")
            continue
        scale = float(scales[key])
        r = _call("reference", rb, "scaler", x, scale=scale, trainable=bool(h.params.trainable))
        p = _call("port", pb, "scaler", x, scale=scale, trainable=bool(h.params.trainable))
        notes += h.fresh(p.notes + r.notes)
        if p.error or r.error:
            notes += [e for e in (p.error, r.error) if e]
            deltas.append(
                ArrayDelta(name=f"{label}.*", passed=False, status="error", tolerance="-")
            )
            continue
        if p.skipped or r.skipped:
            skips.append(f"{label}: " + "; ".join(s for s in (p.skipped, r.skipped) if s))
            continue
        for side, call in (("reference", r), ("port", p)):
            h.outputs[side].setdefault("scaler", {}).update(
                {f"{label}.{k}": v for k, v in call.value.items()}
            )
        deltas += h.compare_arrays("scaler", p.value, r.value, prefix=f"{label}.")
    if not deltas:
        return StageResult(
            name="scaler",
            passed=True,
            skipped="; ".join(skips) or "no scaler runs",
            notes=tuple(notes),
        )
    return StageResult(
        name="scaler",
        passed=all(d.passed for d in deltas),
        arrays=tuple(deltas),
        notes=tuple(notes + skips),
    )


# ---------------------------------------------------------------------------------------------
# outputs


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, complex):
        return f"{v.real:.9g}{v.imag:+.9g}j"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


def _cell(text: Any) -> str:
    """Escape a Markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _verdict(s: StageResult) -> str:
    if s.skipped is not None:
        return "skipped"
    return "PASS" if s.passed else "FAIL"


def verdict_table(result: CrosscheckResult) -> str:
    """The per-stage verdict table (Markdown) that opens `crosscheck.md`."""
    lines = [
        "| stage | verdict | arrays | worst array | max ulp | diagnosis |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for s in result.stages:
        compared = [a for a in s.arrays if a.max_ulp is not None or a.status != "compared"]
        worst = None
        fails = s.failures
        pool = fails or [a for a in s.arrays if a.max_ulp is not None]
        if pool:
            worst = max(
                pool,
                key=lambda a: (not a.passed, a.max_ulp if a.max_ulp is not None else float("inf")),
            )
        diag = (
            "; ".join(f"`{a.name}`: {a.diagnosis or a.status}" for a in fails)
            if fails
            else (s.skipped or "")
        )
        if not fails and not s.passed:
            diag = "; ".join(s.notes) or "failed"
        lines.append(
            f"| {s.name} | {_verdict(s)} | {len(s.arrays)} | {worst.name if worst else '—'} | "
            f"{_fmt(worst.max_ulp if worst else None)} | {_cell(diag)} |"
        )
    del compared
    return "\n".join(lines)


def format_failure(result: CrosscheckResult) -> str:
    """Readable failure text: the verdict table, then one line per failing array."""
    lines = [
        f"crosscheck {result.port} vs {result.reference}: {'PASS' if result.passed else 'FAIL'}",
        "",
        verdict_table(result),
        "",
    ]
    for s in result.stages:
        for a in s.failures:
            lines.append(
                f"- {s.name}/{a.name}: {a.diagnosis or a.status} "
                f"(max abs {_fmt(a.max_abs)}, max ulp {_fmt(a.max_ulp)}, "
                f"{a.n_beyond} of {a.n_total} beyond {a.tolerance}, worst at {a.worst_index}: "
                f"port {_fmt(a.worst_port, 9)} vs reference {_fmt(a.worst_ref, 9)})"
            )
        if not s.passed and not s.failures:
            lines += [f"- {s.name}: {n}" for n in s.notes]
    return "\n".join(lines)


def _demote(md: str, levels: int = 2) -> str:
    out = []
    for line in md.splitlines():
        out.append("#" * levels + line if line.startswith("#") else line)
    return "\n".join(out)


def render_markdown(result: CrosscheckResult) -> str:
    """`crosscheck.md`: verdict table, per-array deltas, diagnoses, each side's intensity report."""
    p = result.params
    lines = [
        f"# Cross-check: `{result.port}` (port) vs `{result.reference}` (reference)",
        "",
        (
            f"**Verdict: {'PASS' if result.passed else 'FAIL'}** — "
            f"{sum(1 for s in result.stages if s.skipped is None and s.passed)} of "
            f"{sum(1 for s in result.stages if s.skipped is None)} compared stages within "
            f"tolerance (variant `{p.get('variant')}`, N={p.get('N')}, "
            f"gridsize={p.get('gridsize')}, K={p.get('K')}, n_groups={p.get('n_groups')}, "
            f"seed={p.get('seed')})."
        ),
        "",
        verdict_table(result),
        "",
        "## Per-array deltas",
        "",
    ]
    for s in result.stages:
        lines.append(f"### {s.name} — {_verdict(s)}")
        lines.append("")
        if s.skipped:
            lines += [f"Skipped: {s.skipped}", ""]
        if s.arrays:
            lines += [
                (
                    "| array | verdict | shape | dtype port / ref | tolerance | max abs | max rel "
                    "| max ulp | p99 ulp | beyond | worst index | port | reference | NaN/Inf port "
                    "| NaN/Inf ref |"
                ),
                "| --- " * 15 + "|",
            ]
            for a in s.arrays:
                verdict = "PASS" if a.passed else "FAIL"
                if a.status not in ("compared",):
                    verdict += f" ({a.status})"
                shape = a.shape_ref if a.shape_ref is not None else a.shape_port
                lines.append(
                    f"| `{a.name}` | {verdict} | {list(shape) if shape is not None else '—'} | "
                    f"{a.dtype_port or '—'} / {a.dtype_ref or '—'} | {_cell(a.tolerance)} | {_fmt(a.max_abs)} | "
                    f"{_fmt(a.max_rel)} | {_fmt(a.max_ulp)} | {_fmt(a.p99_ulp)} | {a.n_beyond}/{a.n_total} | "
                    f"{list(a.worst_index) if a.worst_index is not None else '—'} | {_fmt(a.worst_port, 9)} | "
                    f"{_fmt(a.worst_ref, 9)} | {a.nan_port}/{a.inf_port} | {a.nan_ref}/{a.inf_ref} |"
                )
            lines.append("")
        for n in s.notes:
            lines.append(f"- note: {n}")
        if s.notes:
            lines.append("")
    lines += ["## Diagnoses", ""]
    diags = [(s.name, a) for s in result.stages for a in s.arrays if not a.passed]
    if diags:
        lines += [
            f"- `{st}/{a.name}` — **{a.diagnosis_class or a.status}**: {a.diagnosis or a.status}"
            for st, a in diags
        ]
    else:
        lines.append("No array out of tolerance.")
    lines.append("")
    if result.difference_maps:
        lines += ["Difference maps of the worst arrays: `crosscheck.png`.", ""]
    for side, md in result.reports.items():
        lines += [f"## Intensity Statistics — {side}", "", _demote(md).rstrip("\n"), ""]
    if not result.reports:
        lines += [
            "## Intensity Statistics",
            "",
            "Not available (a side lacks the grouped/normalize stages).",
            "",
        ]
    lines += ["## Parameters and environment", "", "```"]
    lines += [f"{k}: {v}" for k, v in result.params.items()]
    lines += [f"{k}: {v}" for k, v in result.environment.items()]
    lines += ["```", ""]
    return "\n".join(lines)


def render_png(result: CrosscheckResult) -> bytes:
    """PNG of |port − reference| for the frames holding the worst elements of the worst arrays."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    maps = [(k, m) for k, m in result.difference_maps.items() if m.size and float(np.max(m)) > 0]
    n = max(1, len(maps))
    cols = min(3, n)
    rows = (n + cols - 1) // cols
    fig = Figure(figsize=(4.2 * cols, 3.8 * rows), dpi=90)
    FigureCanvasAgg(fig)
    if not maps:
        ax = fig.add_subplot(1, 1, 1)
        ax.text(
            0.5,
            0.5,
            "every compared image array is identical"
            if result.difference_maps
            else "no image-shaped arrays compared",
            ha="center",
            va="center",
        )
        ax.set_axis_off()
    for i, (name, m) in enumerate(maps):
        ax = fig.add_subplot(rows, cols, i + 1)
        im = ax.imshow(m, cmap="magma", interpolation="nearest")
        ax.set_title(f"{name}\n|port − ref|, max {float(np.max(m)):.3g}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.suptitle(
        f"{result.port} vs {result.reference}: {'PASS' if result.passed else 'FAIL'}", fontsize=10
    )
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def write_outputs(result: CrosscheckResult, out_dir: str | os.PathLike) -> dict[str, pathlib.Path]:
    """Write `crosscheck.md`, `crosscheck.json` and `crosscheck.png` into `out_dir` (atomically).

    Everything is rendered in memory first; each file is written under a temporary name and
    renamed into place.

    Returns:
        `{"markdown": path, "json": path, "png": path}`.
    """
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "markdown": out / "crosscheck.md",
        "json": out / "crosscheck.json",
        "png": out / "crosscheck.png",
    }
    payload = [
        (files["markdown"], render_markdown(result).encode("utf-8")),
        (files["json"], (result.to_json_str() + "\n").encode("utf-8")),
        (files["png"], render_png(result)),
    ]
    write_files_atomically(payload)
    logger.info("crosscheck outputs written to %s", out)
    return files
