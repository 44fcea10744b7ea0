"""Run a port and a reference stage by stage and write the verdict (specs/crosscheck.md §5, §7).

The reference's `nn_indices` are injected into every stage after `grouping` on both sides, so
grouping randomness drops out of everything downstream. The verdict is PASS only when every
required array of every required stage was compared and is within tolerance; FAIL when
something compared is out of tolerance (or a backend raised / returned garbage); INCOMPLETE when
something required was not compared. Documented absences (a backend's `not_computed`,
`allow_missing`) are reported and counted, never blocking PASS.
"""

import dataclasses
import logging
import platform
import sys
import traceback
import warnings
from collections.abc import Callable, Collection, Mapping
from typing import Any

import numpy as np

from ptycho_jax import BackendUnavailableError

from . import grouping as _grouping
from .adapt import IMAGE as _IMAGE
from .adapt import Declarations, check_names, excepted_by, from_ours, parse_stages
from .backends import REQUIRED, STAGES, StageUnsupported, resolve_backend
from .compare import (
    COMPARED_STATUSES,
    ArrayDelta,
    CrosscheckResult,
    StageResult,
    Tolerance,
    ToleranceTable,
    Verdict,
    compare_arrays,
    missing_delta,
    overall_verdict,
)
from .diagnose import DiagnosisContext, diagnose, harness_quantities
from .errors import HarnessInputError, OutputError

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


def _call(
    side: str, backend: Any, stage: str, *args, decl: Declarations | None = None, **kwargs
) -> _Call:
    """One stage of one backend: its output renamed/re-laid-out to ours, or why there is none."""
    fn = getattr(backend, stage, None)
    name = getattr(backend, "name", type(backend).__name__)
    if not callable(fn):
        return _Call(skipped=f"{side} backend {name!r} has no stage {stage!r}")
    out = _Call()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            if stage == "scaler" and decl is not None and decl.scaler_input_layout():
                args = (from_ours(np.asarray(args[0]), _IMAGE, decl.scaler_input_layout()),)
            value = fn(*args, **kwargs)
            if decl is not None:
                value, notes = decl.adapt(stage, value)
                out.notes += notes
            elif not isinstance(value, Mapping):
                raise OutputError(
                    f"{side} {stage}() returned {type(value).__name__}, expected a mapping"
                )
            out.value = value
        except StageUnsupported as e:
            out.skipped = f"{side}: {e}"
        except BackendUnavailableError:
            raise
        except OutputError as e:
            out.error = f"{side}: {e}"
        except Exception as e:  # noqa: BLE001 - a port bug is a failed stage, not a crashed harness
            logger.debug("%s %s raised:\n%s", side, stage, traceback.format_exc())
            out.error = f"{side} {name!r} {stage}() raised {type(e).__name__}: {e}"
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
    def __init__(
        self,
        raw,
        params,
        table: ToleranceTable,
        declared: Mapping[str, Collection[str]] | None = None,
    ):
        self.raw = raw
        self.params = params
        self.table = table
        self.declared: Mapping[str, Collection[str]] = declared or {}
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
        quantities = harness_quantities(  # diagnose.py: s, nphotons, gain, E_raw, E_grouped
            raw=self.raw,
            params=self.params,
            reference_outputs=ref_all,
            stage=stage,
            array_name=delta.name,
            cache=self.__dict__.setdefault("_quantity_cache", {}),
        )
        return DiagnosisContext(
            N=N,
            C=C,
            scale_ratios=ratios,
            quantities=quantities,
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

    def compare(
        self,
        stage: str,
        p_call: _Call,
        r_call: _Call,
        *,
        prefix: str = "",
        required: tuple[str, ...] | None = None,
    ) -> StageResult:
        notes = self.fresh(p_call.notes + r_call.notes)
        req = tuple(prefix + k for k in (REQUIRED.get(stage, ()) if required is None else required))
        errors = [e for e in (p_call.error, r_call.error) if e]
        if errors:
            return self.result(stage, notes=notes, errors=errors, required=req)
        skipped = [s for s in (p_call.skipped, r_call.skipped) if s]
        if skipped:
            return self.result(stage, notes=notes, skipped="; ".join(skipped), required=req)
        arrays, extra = self.compare_arrays(
            stage, p_call.value, r_call.value, prefix=prefix, required=required
        )
        return self.result(stage, arrays=arrays, notes=notes + extra, required=req)

    def result(
        self,
        stage: str,
        *,
        arrays: list[ArrayDelta] | tuple[ArrayDelta, ...] = (),
        notes: list[str] | tuple[str, ...] = (),
        errors: list[str] | tuple[str, ...] = (),
        skipped: str | None = None,
        required: tuple[str, ...] = (),
        compared_override: set[str] | None = None,
    ) -> StageResult:
        """The stage's verdict from what was compared, what was required and what is excepted."""
        return stage_result(
            stage,
            arrays=arrays,
            notes=notes,
            errors=errors,
            skipped=skipped,
            required=required,
            declared=self.declared,
            compared_override=compared_override,
        )

    def compare_arrays(
        self,
        stage: str,
        port: Mapping[str, Any],
        ref: Mapping[str, Any],
        *,
        prefix: str = "",
        required: tuple[str, ...] | None = None,
    ) -> tuple[list[ArrayDelta], list[str]]:
        """Deltas of the arrays both sides have, rows for missing required ones, notes on extras."""
        required = REQUIRED.get(stage, ()) if required is None else required
        port = {k: v for k, v in port.items() if v is not None}
        ref = {k: v for k, v in ref.items() if v is not None}
        names = [k for k in required if k in port or k in ref]
        names += sorted(k for k in set(port) | set(ref) if k not in names)
        deltas, notes = [], []
        for k in names:
            full = prefix + k
            if k not in port or k not in ref:
                side, other = ("port", ref) if k not in port else ("reference", port)
                a = _as_array(other[k])
                if k in required:
                    deltas.append(
                        missing_delta(
                            full,
                            side=side,
                            rule=self.table.rule(stage, k, a.dtype),
                            present=a,
                            why=f"{side} did not return {k!r}",
                        )
                    )
                else:
                    notes.append(
                        f"`{full}` only in the {'reference' if side == 'port' else 'port'} "
                        f"(not required; not compared)"
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
        return deltas, notes

    # -- grouping (exact when seeded, invariants otherwise)
    def grouping(self, p_call: _Call, r_call: _Call) -> StageResult:
        params = self.params
        notes = self.fresh(p_call.notes + r_call.notes)
        req = REQUIRED["grouping"]
        errors = [e for e in (p_call.error, r_call.error) if e]
        if errors:
            return self.result("grouping", notes=notes, errors=errors, required=req)
        seeded = (params.seed is not None or params.sequential) and getattr(
            params, "engine", "scipy"
        ) == "scipy"
        pos = np.stack([np.asarray(self.raw.xcoords), np.asarray(self.raw.ycoords)], axis=1)
        K = (
            params.neighbor_pool_size
            if (params.oversample and params.neighbor_pool_size)
            else params.K
        )
        p_nn = None if p_call.value is None else p_call.value.get("nn_indices")
        r_nn = None if r_call.value is None else r_call.value.get("nn_indices")
        if p_nn is None and r_nn is None:
            why = (
                "; ".join(x for x in (p_call.skipped, r_call.skipped) if x)
                or "neither side returned 'nn_indices'"
            )
            return self.result("grouping", notes=notes, skipped=why, required=req)
        deltas: list[ArrayDelta] = []
        if seeded and p_nn is not None and r_nn is not None:
            d, extra = self.compare_arrays("grouping", {"nn_indices": p_nn}, {"nn_indices": r_nn})
            return self.result("grouping", arrays=d, notes=notes + extra, required=req)
        if not seeded:
            notes.append(f"groups compared by the validity invariants (unseeded; K={K})")
        for side, nn in (("port", p_nn), ("reference", r_nn)):
            if nn is None:
                continue
            nn = np.asarray(nn)
            v = _grouping.group_violations(pos, nn, gridsize=params.gridsize, K=K)
            expected_b = params.n_groups if params.oversample else min(params.n_groups, len(pos))
            if nn.ndim == 2 and nn.shape[0] != expected_b:
                v.insert(0, f"expected {expected_b} groups, got {nn.shape[0]}")
            deltas.append(
                ArrayDelta(
                    name=f"nn_indices[{side}]",
                    passed=not v,
                    status="invariants",
                    tolerance="group validity",
                    shape_port=tuple(nn.shape),
                    dtype_port=str(nn.dtype),
                    n_total=int(nn.size),
                    n_beyond=len(v),
                    diagnosis="; ".join(v) if v else None,
                    diagnosis_class="invalid_groups" if v else None,
                )
            )
        missing = "port" if p_nn is None else ("reference" if r_nn is None else None)
        compared = {"nn_indices"} if missing is None and not seeded else set()
        if missing is not None:
            why = (p_call.skipped if missing == "port" else r_call.skipped) or (
                f"{missing} did not return 'nn_indices'"
            )
            notes.append(
                f"{missing} has no groups ({why}); the other side's were checked by the invariants"
            )
            deltas.append(
                missing_delta(
                    "nn_indices",
                    side=missing,
                    rule=Tolerance(exact=True),
                    present=p_nn if r_nn is None else r_nn,
                    why=why,
                )
            )
        return self.result(
            "grouping", arrays=deltas, notes=notes, required=req, compared_override=compared
        )


def stage_result(
    stage: str,
    *,
    arrays=(),
    notes=(),
    errors=(),
    skipped: str | None = None,
    required: tuple[str, ...] = (),
    declared: Mapping[str, Collection[str]] | None = None,
    compared_override: set[str] | None = None,
) -> StageResult:
    """Assemble one stage's result and its verdict (specs/crosscheck.md §5.2)."""
    declared = declared or {}
    arrays = list(arrays)
    notes = list(notes) + list(errors)
    compared = {a.name for a in arrays if a.status in COMPARED_STATUSES}
    if compared_override is not None:
        compared = compared_override | {
            a.name for a in arrays if a.status in COMPARED_STATUSES and "[" not in a.name
        }
    prefixless = stage != "scaler"
    uncompared, excepted = [], []
    rows = []
    stage_who = excepted_by(stage, None, declared)
    for a in arrays:
        if a.status.startswith("missing_in_") and a.name in required:
            who = excepted_by(stage, a.name, declared)
            if who:
                excepted.append((a.name, who))
                a = dataclasses.replace(
                    a, diagnosis=f"{a.diagnosis}; documented: {who}", diagnosis_class="excepted"
                )
            else:
                uncompared.append((a.name, a.diagnosis or a.status))
        rows.append(a)
    listed = {n for n, _ in uncompared + excepted}
    for name in required:
        if name in compared or name in listed:
            continue
        why = skipped or ("; ".join(errors) if errors else "not returned by either side")
        who = excepted_by(stage, name, declared)
        if errors:
            continue  # the stage failed; its arrays are not "missing"
        if who:
            excepted.append((name, who))
        else:
            uncompared.append((name, why))
    del prefixless
    failed = bool(errors) or any(not a.passed and a.status in COMPARED_STATUSES for a in rows)
    if failed:
        verdict = Verdict.FAIL
    elif uncompared:
        verdict = Verdict.INCOMPLETE
    elif not compared and (excepted or stage_who):
        verdict = Verdict.EXCEPTED
        if stage_who and not excepted:
            excepted = [(n, stage_who) for n in required] or [(stage, stage_who)]
    elif not compared:
        verdict = Verdict.INCOMPLETE
        uncompared = [(stage, skipped or "nothing compared")]
    else:
        verdict = Verdict.PASS
    return StageResult(
        name=stage,
        passed=verdict == Verdict.PASS,
        arrays=tuple(rows),
        skipped=skipped,
        notes=tuple(notes),
        verdict=verdict,
        required=tuple(required),
        uncompared=tuple(uncompared),
        excepted=tuple(excepted),
        errors=tuple(one_line(e) for e in errors),
    )


def one_line(text: str, limit: int = 300) -> str:
    """The first line of `text`, cut at `limit` characters (stdout and table cells)."""
    first = (str(text).strip().splitlines() or [""])[0]
    return first if len(first) <= limit else first[: limit - 1] + "…"


def not_required(stage: str, why: str = "not in --stages") -> StageResult:
    return StageResult(
        name=stage, passed=False, skipped=why, verdict=Verdict.NOT_REQUIRED, required=()
    )


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


def backend_provenance(backend: Any) -> dict[str, Any]:
    """Where a side's code came from: the backend's own `provenance()` (upstream trees: path,
    commit, dirty, interpreter, the worker's library versions), else its class, source file,
    the git state of that file's folder and this interpreter's versions."""
    fn = getattr(backend, "provenance", None)
    if callable(fn):
        try:
            return dict(fn())
        except Exception as e:  # noqa: BLE001 - provenance is reported, never fatal
            return {"backend": getattr(backend, "name", None), "error": f"{type(e).__name__}: {e}"}
    import inspect
    import pathlib

    from . import trees

    cls = type(backend)
    out: dict[str, Any] = {
        "backend": str(getattr(backend, "name", cls.__name__)),
        "class": f"{cls.__module__}.{cls.__qualname__}",
        "interpreter": sys.executable,
    }
    try:
        src = inspect.getsourcefile(cls)
    except TypeError:
        src = None
    if src:
        out["source"] = src
        commit, dirty = trees.git_state(pathlib.Path(src).parent)
        out["commit"], out["dirty"] = commit, dirty
    versions = {}
    for mod in ("numpy", "jax", "tensorflow", "ptycho_jax"):
        m = sys.modules.get(mod)
        if m is not None:
            versions[mod] = str(getattr(m, "__version__", "?"))
    out["versions"] = versions
    return out


def same_code(port: Any, reference: Any, port_spec: Any, reference_spec: Any) -> str | None:
    """Why the two sides run the same code (one line), or None.

    Same spec string, the same backend object, or equal `code_identity()` (an upstream tree's
    source digest and interpreter): comparing such sides can only pass."""
    if port is reference:
        return "port and reference are the same backend object"
    if isinstance(port_spec, str) and port_spec == reference_spec:
        return f"port and reference are both {port_spec!r}"
    pi, ri = getattr(port, "code_identity", None), getattr(reference, "code_identity", None)
    if callable(pi) and callable(ri):
        a, b = pi(), ri()
        if a == b:
            return (
                f"port {getattr(port, 'name', port_spec)!r} and reference "
                f"{getattr(reference, 'name', reference_spec)!r} run the same code (source "
                f"sha256 {a[1][:12]}, interpreter {a[2]})"
            )
    return None


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


RECORDED_FIELDS = (
    "N",
    "gridsize",
    "K",
    "n_groups",
    "seed",
    "sequential",
    "oversample",
    "neighbor_pool_size",
    "nphotons",
    "variant",
    "patch_positions",
)
"""ChainParams fields a reference's recording can fix (`recorded_params()`)."""


def recorded_params(backend: Any) -> dict[str, Any]:
    """The parameters `backend` recorded (`backend.recorded_params()`), restricted to ChainParams
    fields; empty when it records none."""
    fn = getattr(backend, "recorded_params", None)
    if not callable(fn):
        return {}
    rec = fn() or {}
    return {k: v for k, v in rec.items() if k in RECORDED_FIELDS and v is not None}


def same_value(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return bool(a) == bool(b)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return float(a) == float(b)
    return a == b


def params_conflicts(recorded: Mapping[str, Any], params: Any, raw: Any = None) -> list[str]:
    """`field: recorded X, asked for Y` for every recorded parameter `params` contradicts."""
    out = []
    for k, v in recorded.items():
        got = getattr(params, k, None)
        if k == "N" and got is None and raw is not None:
            got = int(np.shape(raw.diff3d)[-1])
        if (
            k == "neighbor_pool_size"
            and not recorded.get("oversample")
            and not getattr(params, "oversample", False)
        ):
            continue  # the pool size is read only when oversampling
        if k == "seed" and (recorded.get("sequential") or getattr(params, "sequential", False)):
            continue  # sequential sampling ignores the seed
        if not same_value(got, v):
            out.append(f"{k}: recorded {v!r}, asked for {got!r}")
    return out


def run_crosscheck(
    raw: Any,
    *,
    port: Any,
    reference: Any,
    params: Any,
    tolerances: Any = None,
    progress: Callable[[str], None] | None = None,
    stages: "str | Collection[str] | None" = None,
    allow_missing: Collection[str] = (),
    allow_same_code: bool = False,
) -> CrosscheckResult:
    """Run `port` and `reference` on `raw` stage by stage and compare every array.

    Args:
        raw: the input (`ptycho_jax.RawData`).
        port: backend or spec (`"jax"`, `"tf"`, `"upstream"`, `"golden:DIR"`,
            `"package.module:Attribute"`).
        reference: backend or spec; its `nn_indices` are injected into both sides.
        params: `ptycho_jax.ChainParams` (N, gridsize, K, n_groups, seed, variant, ...). A backend
            that records its parameters (`recorded_params()`, e.g. `golden:DIR`) must agree.
        tolerances: None (the shipped table), a `ToleranceTable`, a mapping merged over the
            shipped table, or a path to a TOML override file.
        progress: called with each stage name as it starts.
        stages: the stages required (names or "a,b"); default every stage.
        allow_missing: `stage` / `stage.array` names whose absence is a documented exception.
        allow_same_code: run even when both sides are the same code (`same_code`); the run's
            notes then say so. Without it such a pair is refused.

    Returns:
        The frozen `CrosscheckResult`; `verdict` is PASS, FAIL or INCOMPLETE and `passed` is
        True only for PASS.

    Raises:
        BackendUnavailableError: a backend cannot be constructed.
        HarnessInputError: unknown or empty stage names, unknown `allow_missing` names, a bad
            backend declaration, parameters or an input contradicting a backend's recording,
            port and reference running the same code (unless `allow_same_code`).
        ToleranceError: a bad tolerance file.
    """
    tick = progress or (lambda name: None)
    required_stages = parse_stages(stages)
    allowed = check_names(allow_missing, what="--allow-missing")
    table = _resolve_table(tolerances)
    pb, rb = resolve_backend(port), resolve_backend(reference)
    run_notes = _same_code_notes(pb, rb, port, reference, allow_same_code)
    provenance = {"port": backend_provenance(pb), "reference": backend_provenance(rb)}
    _check_recordings(pb, rb, params, raw)
    pd, rd = Declarations(pb, params, side="port"), Declarations(rb, params, side="reference")
    h = _Harness(raw, params, table, _declared_exceptions(pd, rd, allowed, run_notes))
    N = params.N if params.N is not None else int(np.shape(raw.diff3d)[-1])

    def call(side, stage, *args, **kw):
        b, d = (pb, pd) if side == "port" else (rb, rd)
        return _call(side, b, stage, *args, decl=d, **kw)

    results = _run_stages(h, call, required_stages, tick, run_notes)
    reports = _intensity_reports(h, N, {"port": pb, "reference": rb})
    ordered = tuple(results[s] for s in STAGES if s in results)
    cause = _root_cause(h, ordered, N)
    ordered = _mark_follows(ordered, cause)
    verdict = overall_verdict(ordered)
    return CrosscheckResult(
        passed=verdict == Verdict.PASS,
        verdict=verdict,
        required_stages=required_stages,
        notes=tuple(run_notes),
        port=str(getattr(pb, "name", port)),
        reference=str(getattr(rb, "name", reference)),
        params=_params_dict(params),
        stages=ordered,
        environment=_environment(params),
        provenance=provenance,
        root_cause=cause.to_json() if cause.causes else {},
        reports=reports,
        difference_maps=_worst_maps(h),
    )


def _same_code_notes(pb, rb, port, reference, allow_same_code: bool) -> list[str]:
    """The run's first notes: refuse two sides running the same code (the comparison could
    only pass), or, with `allow_same_code`, warn that a PASS says nothing."""
    run_notes: list[str] = []
    same = same_code(pb, rb, port, reference)
    if same and not allow_same_code:
        raise HarnessInputError(
            f"{same}: the comparison could only pass (name two different trees or commits, or "
            "pass --allow-same-code to run it anyway)"
        )
    if same:
        run_notes.append(f"warning: {same} (--allow-same-code): a PASS here says nothing")
    return run_notes


def _check_recordings(pb, rb, params, raw) -> None:
    """Refuse parameters contradicting what a side recorded, then let each side vet the input
    (`check_input`), the reference first."""
    for side, b in (("reference", rb), ("port", pb)):
        conflicts = params_conflicts(recorded_params(b), params, raw)
        if conflicts:
            raise HarnessInputError(
                f"the parameters contradict what {side} {getattr(b, 'name', b)!r} recorded: "
                + "; ".join(conflicts)
                + " (drop the contradicting flags: recorded parameters are used by default)"
            )
        check = getattr(b, "check_input", None)
        if callable(check):
            check(raw)


def _declared_exceptions(
    pd: Declarations, rd: Declarations, allowed, run_notes: list[str]
) -> dict[str, Any]:
    """Documented absences by who documents them: the port's `not_computed` and
    --allow-missing; the reference's own declarations only get a run note."""
    declared = {}
    if pd.not_computed:
        declared[f"declared not computed by {pd.label}"] = pd.not_computed
    if rd.not_computed:
        # A reference cannot vouch for what it does not hold: its own declared absences stay
        # required (INCOMPLETE), never a documented exception; only the port's declarations and
        # --allow-missing except (specs/crosscheck.md §5.2).
        run_notes.append(
            f"{rd.label} declares it does not compute {', '.join(sorted(rd.not_computed))}: "
            "those stay required (a reference's absence is not compared, so it cannot PASS)"
        )
    if allowed:
        declared["--allow-missing"] = allowed
    return declared


def _run_stages(h: _Harness, call, required_stages, tick, run_notes) -> dict[str, StageResult]:
    """Every stage's result, in run order: grouping, the stages on the injected groups, the
    scaler (on the reference's container input)."""
    results: dict[str, StageResult] = {}
    nn = _grouping_stage(h, call, required_stages, tick, results, run_notes)
    _injected_stages(h, call, nn, required_stages, tick, results)
    if "scaler" in required_stages:
        tick("scaler")
        results["scaler"] = _scaler_stage(h, call)
    else:
        results["scaler"] = not_required("scaler")
    return results


def _grouping_stage(
    h: _Harness, call, required_stages, tick, results: dict[str, StageResult], run_notes
) -> np.ndarray | None:
    """Run (and, when required, compare) grouping; the groups every later stage gets injected:
    the reference's, else the port's (with a run note), else None."""
    raw, params = h.raw, h.params
    tick("grouping")
    r_g = call("reference", "grouping", raw, params)
    want_port_groups = "grouping" in required_stages or r_g.value is None
    p_g = (
        call("port", "grouping", raw, params) if want_port_groups else _Call(skipped="not required")
    )
    if "grouping" in required_stages:
        results["grouping"] = h.grouping(p_g, r_g)
    else:
        results["grouping"] = not_required("grouping")
    nn = None
    for side, c in (("reference", r_g), ("port", p_g)):
        if c.value is not None and c.value.get("nn_indices") is not None:
            h.outputs[side]["grouping"] = c.value
            if nn is None:
                nn = np.asarray(c.value["nn_indices"])
                if side == "port":
                    run_notes.append(
                        "the reference has no grouping: the port's groups are injected"
                    )
    return nn


def _injected_stages(
    h: _Harness, call, nn, required_stages, tick, results: dict[str, StageResult]
) -> None:
    """The stages after grouping, each on the injected groups `nn`. A stage not required is
    still run on the reference when the scaler needs its output as input."""
    raw, params = h.raw, h.params
    needed_as_input = set()
    if "scaler" in required_stages:
        needed_as_input |= {"normalize", "container", "intensity_scales"}

    for stage in ("grouped", "normalize", "patches", "container", "intensity_scales"):
        if nn is None:
            results[stage] = (
                h.result(
                    stage,
                    skipped="no groups to inject (neither side grouped)",
                    required=REQUIRED[stage],
                )
                if stage in required_stages
                else not_required(stage)
            )
            continue
        if stage not in required_stages:
            if stage in needed_as_input:
                r = call("reference", stage, raw, params, nn_indices=nn)
                if r.value is not None:
                    h.outputs["reference"][stage] = dict(r.value)
            results[stage] = not_required(stage)
            continue
        tick(stage)
        r = call("reference", stage, raw, params, nn_indices=nn)
        p = call("port", stage, raw, params, nn_indices=nn)
        for side, c in (("reference", r), ("port", p)):
            if c.value is not None:
                h.outputs[side][stage] = dict(c.value)
        results[stage] = h.compare(stage, p, r)


def _intensity_reports(h: _Harness, N: int, backends: Mapping[str, Any]) -> dict[str, str]:
    """Each side's Intensity Statistics report by `side (backend name)`, port first; a side
    whose report fails is left out (the report is an appendix, never the check's verdict)."""
    reports = {}
    for side, b in backends.items():
        try:
            md = _intensity_report_md(h.raw, h.outputs[side], h.params, N=N)
        except Exception as e:  # noqa: BLE001 - the report is an appendix; never fail the check on it
            logger.warning("intensity report of the %s side failed: %s", side, e)
            md = None
        if md:
            reports[f"{side} ({getattr(b, 'name', b)})"] = md
    return reports


def _worst_maps(h: _Harness) -> dict[str, np.ndarray]:
    """The MAX_MAPS difference maps to draw: failing arrays first, then by max ulp."""
    h.maps.sort(key=lambda t: t[0], reverse=True)
    return {name: m for _, name, m in h.maps[:MAX_MAPS]}


def _known_variants(h: _Harness, N: int) -> dict[str, dict[str, np.ndarray]]:
    """Arrays of known variants to name a failing port array by (rootcause.analyse).

    The other variant of `normalize_data` (ptycho_jax on the reference's grouped frames), and
    the reference's extra arrays of each stage (e.g. a golden's `X_full_loader_normalize_data`).
    """
    import ptycho_jax as pj

    out: dict[str, dict[str, np.ndarray]] = {}
    ref = h.outputs["reference"]
    D = (ref.get("grouped") or {}).get("diffraction")
    if D is not None and np.asarray(D).dtype == np.float32:
        for variant in ("main", "seed"):
            if variant == h.params.variant:
                continue
            try:
                X, gain = pj.normalize_data(np.asarray(D), N, variant=variant)
            except Exception as e:  # noqa: BLE001 - a naming aid, never fatal
                logger.debug("no %s variant arrays: %s", variant, e)
                continue
            X = np.asarray(X)
            out[f"variant `{variant}` (ptycho_jax on the reference's grouped frames)"] = {
                "normalize.X_full": X,
                "normalize.normalize_gain": np.asarray(gain),
                "container.X": X,
            }
    extras = {}
    for stage, arrays in ref.items():
        req = set(REQUIRED.get(stage, ()))
        for k, v in (arrays or {}).items():
            if k not in req and v is not None:
                for target in (
                    (f"{stage}.X_full", f"{stage}.X") if stage in ("normalize", "container") else ()
                ):
                    extras.setdefault(f"the reference's `{k}`", {})[target] = np.asarray(v)
    out.update(extras)
    return out


def _root_cause(h: _Harness, stages: tuple[StageResult, ...], N: int):
    from . import rootcause

    try:
        variants = _known_variants(h, N)
    except Exception as e:  # noqa: BLE001 - a naming aid, never fatal
        logger.debug("known variants unavailable: %s", e)
        variants = {}
    return rootcause.analyse(
        stages,
        h.outputs["port"],
        h.outputs["reference"],
        rule=h.table.rule,
        variant=str(h.params.variant),
        variant_arrays=variants,
    )


def _mark_follows(stages: tuple[StageResult, ...], cause) -> tuple[StageResult, ...]:
    """Failing arrays explained by the root cause name it in `follows_from`; their own
    diagnosis and class stay as found, so a report can show both."""
    if not cause.follows:
        return stages
    out = []
    for s in stages:
        arrays = []
        for a in s.arrays:
            label = cause.follows.get(f"{s.name}.{a.name}")
            if label is not None:
                a = dataclasses.replace(a, follows_from=label)
            arrays.append(a)
        out.append(dataclasses.replace(s, arrays=tuple(arrays)))
    return tuple(out)


def _scaler_stage(h: _Harness, call) -> StageResult:
    ref_out, port_out = h.outputs["reference"], h.outputs["port"]
    required = tuple(f"{label}.{k}" for label, _ in SCALER_CASES for k in REQUIRED["scaler"])
    src = (ref_out.get("container") or {}).get("X")
    if src is None:
        src = (ref_out.get("normalize") or port_out.get("normalize") or {}).get("X_full")
    scales = ref_out.get("intensity_scales") or port_out.get("intensity_scales") or {}
    if src is None or not scales:
        return h.result(
            "scaler",
            skipped="no scaler input (the reference's container X / X_full and scales are unavailable)",
            required=required,
        )
    x = np.asarray(src)[:4]
    deltas, notes, errors, skips = [], [], [], []
    for label, key in SCALER_CASES:
        if key not in scales:
            skips.append(f"{label}: scale {key} unavailable")
            deltas += [
                missing_delta(
                    f"{label}.{k}",
                    side="port",
                    rule=Tolerance(),
                    why=f"not run: scale {key} unavailable",
                )
                for k in REQUIRED["scaler"]
            ]
            continue
        scale = float(scales[key])
        trainable = bool(h.params.trainable)
        r = call("reference", "scaler", x, scale=scale, trainable=trainable)
        p = call("port", "scaler", x, scale=scale, trainable=trainable)
        notes += h.fresh(p.notes + r.notes)
        if p.error or r.error:
            errors += [f"{label}: {e}" for e in (p.error, r.error) if e]
            continue
        if p.skipped or r.skipped:
            why = f"{label}: " + "; ".join(s for s in (p.skipped, r.skipped) if s)
            skips.append(why)
            deltas += [
                missing_delta(
                    f"{label}.{k}",
                    side="port" if p.skipped else "reference",
                    rule=Tolerance(),
                    why=why,
                )
                for k in REQUIRED["scaler"]
            ]
            continue
        for side, c in (("reference", r), ("port", p)):
            h.outputs[side].setdefault("scaler", {}).update(
                {f"{label}.{k}": v for k, v in c.value.items()}
            )
        d, extra = h.compare_arrays("scaler", p.value, r.value, prefix=f"{label}.")
        deltas += d
        notes += extra
    return h.result(
        "scaler",
        arrays=deltas,
        notes=notes + skips,
        errors=errors,
        skipped="; ".join(skips)
        if skips and not any(a.status in COMPARED_STATUSES for a in deltas)
        else None,
        required=required,
    )


# ---------------------------------------------------------------------------------------------
# outputs
