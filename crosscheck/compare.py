"""Per-array deltas between a port and a reference, the tolerance table, and the result types.

specs/crosscheck.md §3–§5. Every metric is computed on the host in NumPy; ULP distances in the
array's own float dtype (or the rule's `ulp_dtype`).
"""

import copy
import dataclasses
import enum
import importlib.resources
import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ptycho_jax import ExitCode

try:
    import tomllib as _toml
except ModuleNotFoundError:  # Python 3.10
    import tomli as _toml  # type: ignore[no-redef]

_RULE_KEYS = {"exact", "ulp", "ulp_dtype", "rtol", "atol", "atol_max_rel", "check_dtype"}


class ToleranceError(ValueError):
    """A tolerance file is unreadable or has an unknown key or a value of the wrong type."""


# ---------------------------------------------------------------------------------------------
# tolerances


@dataclasses.dataclass(frozen=True, kw_only=True)
class Tolerance:
    """One tolerance rule (see `tolerances.toml` for the meaning of each field)."""

    exact: bool = False
    ulp: float | None = None
    ulp_dtype: str | None = None
    rtol: float = 0.0
    atol: float = 0.0
    atol_max_rel: float = 0.0
    check_dtype: bool = True

    def __post_init__(self):
        for name in ("rtol", "atol", "atol_max_rel"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ToleranceError(f"tolerance {name}: expected a finite number >= 0, got {v!r}")
        if self.ulp is not None and not (isinstance(self.ulp, (int, float)) and self.ulp >= 0):
            raise ToleranceError(f"tolerance ulp: expected a number >= 0, got {self.ulp!r}")
        if self.ulp_dtype is not None:
            try:
                dt = np.dtype(self.ulp_dtype)
            except TypeError as e:
                raise ToleranceError(
                    f"tolerance ulp_dtype: unknown dtype {self.ulp_dtype!r}"
                ) from e
            if not np.issubdtype(dt, np.floating):
                raise ToleranceError(f"tolerance ulp_dtype: expected a float dtype, got {dt}")

    def describe(self) -> str:
        """Short human form, e.g. `exact`, `≤1 ulp`, `≤1 ulp(float32)`, `atol 1e-06·max|ref|`."""
        if self.exact:
            return "exact"
        parts = []
        if self.ulp is not None:
            parts.append(f"≤{self.ulp:g} ulp" + (f"({self.ulp_dtype})" if self.ulp_dtype else ""))
        if self.atol:
            parts.append(f"atol {self.atol:g}")
        if self.atol_max_rel:
            parts.append(f"atol {self.atol_max_rel:g}·max|ref|")
        if self.rtol:
            parts.append(f"rtol {self.rtol:g}")
        return " or ".join(parts) if parts else "exact"

    def to_json(self) -> dict[str, Any]:
        return {
            k: v
            for k, v in dataclasses.asdict(self).items()
            if v not in (None, 0.0, False) or k == "exact"
        }


def _kind_key(dtype: np.dtype) -> str:
    if np.issubdtype(dtype, np.integer) or dtype == np.bool_:
        return "int"
    if np.issubdtype(dtype, np.complexfloating):
        return "complex"
    return "float"


def _merge(base: dict, over: Mapping) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = (
            _merge(out.get(k, {}), v)
            if isinstance(v, Mapping) and isinstance(out.get(k), dict)
            else v
        )
    return out


def _check_table(table: Mapping, where: str) -> None:
    """Validate the layout `{default: {D: rule}, stages: {S: {D: rule, arrays: {A: rule}}}}`."""
    unknown = set(table) - {"default", "stages"}
    if unknown:
        raise ToleranceError(
            f"{where}: unknown top-level keys {sorted(unknown)}; expected 'default' and 'stages'"
        )

    def check_rule(rule, path):
        if not isinstance(rule, Mapping):
            raise ToleranceError(f"{where}: {path} must be a table, got {type(rule).__name__}")
        bad = set(rule) - _RULE_KEYS
        if bad:
            raise ToleranceError(
                f"{where}: {path} has unknown keys {sorted(bad)}; allowed {sorted(_RULE_KEYS)}"
            )
        Tolerance(**rule)

    for d, rule in table.get("default", {}).items():
        check_rule(rule, f"default.{d}")
    for s, stage in table.get("stages", {}).items():
        if not isinstance(stage, Mapping):
            raise ToleranceError(f"{where}: stages.{s} must be a table")
        for key, rule in stage.items():
            if key == "arrays":
                for a, r in rule.items():
                    check_rule(r, f"stages.{s}.arrays.{a}")
            else:
                check_rule(rule, f"stages.{s}.{key}")


@dataclasses.dataclass(frozen=True)
class ToleranceTable:
    """The merged tolerance table; `rule(stage, array, dtype)` looks a rule up."""

    table: Mapping[str, Any]
    sources: tuple[str, ...] = ()

    @classmethod
    def default(cls) -> "ToleranceTable":
        """The table shipped in the package (`crosscheck/tolerances.toml`)."""
        text = importlib.resources.files(__package__).joinpath("tolerances.toml").read_text("utf-8")
        table = _toml.loads(text)
        _check_table(table, "crosscheck/tolerances.toml")
        return cls(table, ("crosscheck/tolerances.toml",))

    @classmethod
    def load(cls, path: str | os.PathLike | None = None) -> "ToleranceTable":
        """The shipped table, overridden key by key by the TOML file at `path` (if given)."""
        base = cls.default()
        if path is None:
            return base
        try:
            with open(path, "rb") as f:
                user = _toml.load(f)
        except OSError as e:
            raise ToleranceError(f"--tolerances {path}: cannot read ({e.strerror})") from e
        except _toml.TOMLDecodeError as e:
            raise ToleranceError(f"--tolerances {path}: not valid TOML ({e})") from e
        return base.merged(user, source=str(path))

    def merged(
        self, override: Mapping[str, Any], *, source: str = "<override>"
    ) -> "ToleranceTable":
        """This table with `override` (same layout) merged over it."""
        _check_table(override, source)
        return ToleranceTable(
            _merge(copy.deepcopy(dict(self.table)), override), self.sources + (source,)
        )

    def rule(self, stage: str, array: str, dtype: np.dtype) -> Tolerance:
        dtype = np.dtype(dtype)
        st = self.table.get("stages", {}).get(stage, {})
        dflt = self.table.get("default", {})
        kind = _kind_key(dtype)
        if kind == "int":
            cands = [st.get("arrays", {}).get(array), st.get("int"), dflt.get("int")]
        else:
            cands = [
                st.get("arrays", {}).get(array),
                st.get(dtype.name),
                dflt.get(dtype.name),
                dflt.get(kind),
            ]
        for c in cands:
            if c is not None:
                rule = Tolerance(**c)
                return dataclasses.replace(rule, exact=True) if kind == "int" else rule
        return Tolerance(exact=True)


# ---------------------------------------------------------------------------------------------
# result types


def _py(v: Any) -> Any:
    """JSON-safe Python value (NaN/Inf as strings, complex as [re, im])."""
    if v is None or isinstance(v, (bool, str)):
        return v
    if isinstance(v, (np.integer, int)):
        return int(v)
    if isinstance(v, (complex, np.complexfloating)):
        return [_py(float(np.real(v))), _py(float(np.imag(v)))]
    if isinstance(v, (float, np.floating)):
        f = float(v)
        return f if math.isfinite(f) else str(f)
    if isinstance(v, (tuple, list)):
        return [_py(x) for x in v]
    if isinstance(v, Mapping):
        return {str(k): _py(x) for k, x in v.items()}
    return str(v)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ArrayDelta:
    """How one array of one stage differs between port and reference."""

    name: str
    passed: bool
    # "compared", "shape_mismatch", "invariants" (compared); "missing_in_port",
    # "missing_in_reference" (not compared: never passed); "error" (a backend raised or returned garbage)
    status: str
    tolerance: str
    shape_port: tuple[int, ...] | None = None
    shape_ref: tuple[int, ...] | None = None
    dtype_port: str | None = None
    dtype_ref: str | None = None
    n_total: int = 0
    n_beyond: int = 0
    max_abs: float | None = None
    max_rel: float | None = None
    max_ulp: float | None = None
    p99_ulp: float | None = None
    ulp_dtype: str | None = None
    worst_index: tuple[int, ...] | None = None
    worst_port: Any = None
    worst_ref: Any = None
    nan_port: int = 0
    nan_ref: int = 0
    inf_port: int = 0
    inf_ref: int = 0
    diagnosis: str | None = None
    diagnosis_class: str | None = None
    # the run's root cause this failure is explained by (its own diagnosis above stays as found)
    follows_from: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {f.name: _py(getattr(self, f.name)) for f in dataclasses.fields(self)}


class Verdict(enum.StrEnum):
    """The verdict of a run (and of a stage). `PASS` only when everything required was compared."""

    PASS = (
        "PASS"  # every required array compared and within tolerance (documented exceptions aside)
    )
    FAIL = "FAIL"  # something compared is out of tolerance, or a backend raised / returned garbage
    INCOMPLETE = "INCOMPLETE"  # something required was not compared (skipped stage, missing array)
    EXCEPTED = (
        "EXCEPTED"  # stage only: wholly a documented absence (`not_computed`, --allow-missing)
    )
    NOT_REQUIRED = "NOT_REQUIRED"  # stage only: outside `--stages`


EXIT_CODES = {
    Verdict.PASS: ExitCode.OK,
    Verdict.FAIL: ExitCode.MISMATCH,
    Verdict.INCOMPLETE: ExitCode.INCOMPLETE,
}
"""Process exit status per verdict (`ExitCode.USAGE`, 2, is bad input / usage)."""


# statuses of an ArrayDelta that mean "the two sides' values were set against each other"
COMPARED_STATUSES = frozenset({"compared", "shape_mismatch", "invariants"})


@dataclasses.dataclass(frozen=True, kw_only=True)
class StageResult:
    """The verdict of one stage: every array delta plus notes (warnings, skipped arrays).

    `required` names the arrays this stage had to compare; `uncompared` the required ones that
    were not (name, why) — they make the stage INCOMPLETE; `excepted` the documented absences
    (name, who declared it) — reported and counted, never blocking PASS.
    """

    name: str
    passed: bool
    arrays: tuple[ArrayDelta, ...] = ()
    skipped: str | None = None
    notes: tuple[str, ...] = ()
    verdict: Verdict = Verdict.PASS
    required: tuple[str, ...] = ()
    uncompared: tuple[tuple[str, str], ...] = ()
    excepted: tuple[tuple[str, str], ...] = ()
    errors: tuple[str, ...] = ()
    """What a backend raised for this stage, one line each (also among `notes`)."""

    @property
    def failures(self) -> tuple[ArrayDelta, ...]:
        """Compared arrays out of tolerance (and errors); never a missing array."""
        return tuple(
            a
            for a in self.arrays
            if not a.passed and (a.status in COMPARED_STATUSES or a.status == "error")
        )

    @property
    def compared(self) -> tuple[ArrayDelta, ...]:
        """Arrays whose two sides were set against each other (within tolerance or not)."""
        return tuple(a for a in self.arrays if a.status in COMPARED_STATUSES)

    @property
    def n_required_compared(self) -> int:
        """How many of `required` were compared."""
        req = set(self.required)
        names = {a.name for a in self.compared}
        if self.name == "grouping" and any(a.status == "invariants" for a in self.compared):
            sides = {a.name for a in self.compared if a.status == "invariants"}
            both = {"nn_indices[port]", "nn_indices[reference]"} <= sides
            return int(both and "nn_indices" in req)
        return len(req & names)

    def counts(self) -> dict[str, int]:
        """`required`, `compared` (of the required), `excepted`, `uncompared`, `failed`, `extra`."""
        n_req = len(self.required)
        extra = len({a.name for a in self.compared} - set(self.required))
        if self.name == "grouping":
            extra = 0
        return {
            "required": n_req,
            "compared": self.n_required_compared,
            "excepted": len(self.excepted),
            "uncompared": len(self.uncompared),
            "failed": len(self.failures),
            "extra": extra,
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "verdict": str(self.verdict),
            "passed": self.passed,
            "skipped": self.skipped,
            "counts": self.counts(),
            "required": list(self.required),
            "uncompared": [{"name": n, "why": w} for n, w in self.uncompared],
            "excepted": [{"name": n, "why": w} for n, w in self.excepted],
            "notes": list(self.notes),
            "errors": list(self.errors),
            "arrays": [a.to_json() for a in self.arrays],
        }


def overall_verdict(stages: Sequence[StageResult]) -> Verdict:
    """FAIL if any stage failed; else INCOMPLETE if any required stage is incomplete or nothing
    at all was compared; else PASS."""
    verdicts = [s.verdict for s in stages]
    if Verdict.FAIL in verdicts:
        return Verdict.FAIL
    if Verdict.INCOMPLETE in verdicts:
        return Verdict.INCOMPLETE
    if not any(s.compared for s in stages if s.verdict == Verdict.PASS):
        return Verdict.INCOMPLETE
    return Verdict.PASS


@dataclasses.dataclass(frozen=True, kw_only=True)
class CrosscheckResult:
    """All stages of one cross-check run; `passed` only when `verdict` is PASS."""

    passed: bool
    port: str
    reference: str
    params: Mapping[str, Any]
    stages: tuple[StageResult, ...]
    environment: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    provenance: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    root_cause: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    reports: Mapping[str, str] = dataclasses.field(default_factory=dict, compare=False)
    difference_maps: Mapping[str, np.ndarray] = dataclasses.field(
        default_factory=dict, compare=False, repr=False
    )
    verdict: Verdict = Verdict.PASS
    required_stages: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    def stage(self, name: str) -> StageResult:
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(f"no stage named {name!r}; stages: {[s.name for s in self.stages]}")

    def counts(self) -> dict[str, int]:
        """Totals over the required stages: arrays required/compared/excepted/uncompared/failed,
        and stages passed/failed/incomplete/excepted/required."""
        req = [s for s in self.stages if s.verdict != Verdict.NOT_REQUIRED]
        out = {k: 0 for k in ("required", "compared", "excepted", "uncompared", "failed", "extra")}
        for s in req:
            for k, v in s.counts().items():
                out[k] += v
        out["stages_required"] = len(req)
        for v in (Verdict.PASS, Verdict.FAIL, Verdict.INCOMPLETE, Verdict.EXCEPTED):
            out[f"stages_{v.value.lower()}"] = sum(1 for s in req if s.verdict == v)
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "verdict": str(self.verdict),
            "passed": self.passed,
            "exit_code": int(EXIT_CODES[self.verdict]),
            "counts": self.counts(),
            "required_stages": list(self.required_stages),
            "port": self.port,
            "reference": self.reference,
            "params": _py(dict(self.params)),
            "notes": list(self.notes),
            "environment": _py(dict(self.environment)),
            "provenance": _py(dict(self.provenance)),
            "root_cause": _py(dict(self.root_cause)),
            "stages": [s.to_json() for s in self.stages],
        }

    def to_json_str(self) -> str:
        return json.dumps(self.to_json(), indent=2, allow_nan=False)


# ---------------------------------------------------------------------------------------------
# metrics


def ordered_bits(a: np.ndarray) -> np.ndarray:
    """Map floats to int64 so that consecutive floats map to consecutive integers (±0 → 0)."""
    a = np.asarray(a)
    if a.dtype == np.float64:
        i = a.view(np.int64)
        return np.where(i < 0, np.int64(np.iinfo(np.int64).min) - i, i)
    if a.dtype == np.float32:
        i = a.view(np.int32).astype(np.int64)
        return np.where(i < 0, np.int64(np.iinfo(np.int32).min) - i, i)
    if a.dtype == np.float16:
        i = a.view(np.int16).astype(np.int64)
        return np.where(i < 0, np.int64(np.iinfo(np.int16).min) - i, i)
    raise TypeError(f"ordered_bits: unsupported dtype {a.dtype}")


def ulp_distance(a: np.ndarray, b: np.ndarray, *, dtype: Any = None) -> np.ndarray:
    """Element-wise ULP distance (float64 array). Real parts only; NaN where either is NaN.

    With `dtype` equal to the arrays' dtype (default) the distance counts representable values
    between `a` and `b`; otherwise it is `|a - b| / spacing(dtype(|b|))`.
    """
    a, b = np.asarray(a), np.asarray(b)
    dt = np.dtype(dtype) if dtype is not None else b.dtype
    nan = np.isnan(a) | np.isnan(b)
    if a.dtype == b.dtype == dt:
        ia, ib = ordered_bits(a), ordered_bits(b)
        same_sign = (ia >= 0) == (ib >= 0)  # exact int64 difference; opposite signs as a float sum
        with np.errstate(invalid="ignore", over="ignore"):
            d = np.where(
                same_sign,
                np.abs(ia - ib).astype(np.float64),
                np.abs(ia.astype(np.float64)) + np.abs(ib.astype(np.float64)),
            )
    else:
        bb = np.abs(b.astype(dt, copy=False))
        with np.errstate(invalid="ignore", over="ignore"):
            sp = np.spacing(np.where(np.isfinite(bb), bb, 0).astype(dt)).astype(np.float64)
            d = np.abs(a.astype(np.float64) - b.astype(np.float64)) / sp
    d = np.where(nan, np.nan, d)
    return d


def _as_float_parts(x: np.ndarray) -> np.ndarray:
    return np.stack([x.real, x.imag], axis=-1) if np.iscomplexobj(x) else x


def compare_arrays(name: str, port: Any, ref: Any, rule: Tolerance) -> ArrayDelta:
    """Metrics of `port` against `ref` under `rule`; `diagnosis` is left empty."""
    p, r = np.asarray(port), np.asarray(ref)
    base = {
        "name": name,
        "tolerance": rule.describe(),
        "shape_port": tuple(p.shape),
        "shape_ref": tuple(r.shape),
        "dtype_port": str(p.dtype),
        "dtype_ref": str(r.dtype),
        "n_total": int(r.size),
    }
    numeric = [np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_ for x in (p, r)]
    if not all(numeric):
        same = p.shape == r.shape and bool(np.all(p == r))
        return ArrayDelta(
            passed=same, status="compared", n_beyond=0 if same else int(r.size), **base
        )
    if p.shape != r.shape:
        return ArrayDelta(passed=False, status="shape_mismatch", n_beyond=int(r.size), **base)
    dtype_ok = p.dtype == r.dtype or not rule.check_dtype
    counts = _nonfinite_counts(p, r)
    if r.size == 0:
        return ArrayDelta(passed=dtype_ok, status="compared", **base, **counts)
    if not np.issubdtype(r.dtype, np.inexact) and not np.issubdtype(p.dtype, np.inexact):
        return _compare_integers(p, r, dtype_ok=dtype_ok, base=base, counts=counts)
    return _compare_floats(p, r, rule, dtype_ok=dtype_ok, base=base, counts=counts)


def _nonfinite_counts(p: np.ndarray, r: np.ndarray) -> dict[str, int]:
    """`nan_port`, `inf_port`, `nan_ref`, `inf_ref` of the float sides (integer sides have none,
    so their keys are left out and keep the `ArrayDelta` default 0)."""
    counts = {}
    for side, x in (("port", p), ("ref", r)):
        if np.issubdtype(x.dtype, np.inexact):
            counts[f"nan_{side}"] = int(np.isnan(x).sum())
            counts[f"inf_{side}"] = int(np.isinf(x).sum())
    return counts


def _compare_integers(
    p: np.ndarray, r: np.ndarray, *, dtype_ok: bool, base: dict, counts: dict
) -> ArrayDelta:
    """Integer (or bool) arrays on both sides: exact comparison, worst = largest |difference|."""
    diff = np.abs(p.astype(np.int64) - r.astype(np.int64)).astype(np.float64)
    beyond = diff != 0
    n_beyond = int(beyond.sum())
    flat = int(np.argmax(diff))
    worst = np.unravel_index(flat, r.shape)
    return ArrayDelta(
        passed=dtype_ok and n_beyond == 0,
        status="compared",
        n_beyond=n_beyond,
        max_abs=float(diff.max()),
        worst_index=tuple(int(i) for i in worst),
        worst_port=p[worst].item(),
        worst_ref=r[worst].item(),
        **base,
        **counts,
    )


def _float_differences(pw: np.ndarray, rw: np.ndarray) -> tuple[np.ndarray, ...]:
    """Element-wise (|p − r|, |r|, relative difference, both NaN, one NaN, same ±Inf).

    |p − r| and the relative difference are zeroed where both sides are NaN or the same Inf:
    those positions agree and must not set the maxima.
    """
    with np.errstate(invalid="ignore", over="ignore"):
        absd = np.abs(
            pw.astype(np.complex128 if np.iscomplexobj(pw) else np.float64)
            - rw.astype(np.complex128 if np.iscomplexobj(rw) else np.float64)
        )
        mag = np.abs(rw).astype(np.float64)
        rel = np.where(mag > 0, absd / np.where(mag > 0, mag, 1), np.where(absd > 0, np.inf, 0.0))
    nan_p = np.isnan(pw) if not np.iscomplexobj(pw) else np.isnan(pw.real) | np.isnan(pw.imag)
    nan_r = np.isnan(rw) if not np.iscomplexobj(rw) else np.isnan(rw.real) | np.isnan(rw.imag)
    both_nan = nan_p & nan_r
    one_nan = nan_p ^ nan_r
    with np.errstate(invalid="ignore"):
        same_inf = (pw == rw) & ~np.isfinite(absd)
    absd = np.where(both_nan | same_inf, 0.0, absd)
    rel = np.where(both_nan | same_inf, 0.0, rel)
    return absd, mag, rel, both_nan, one_nan, same_inf


def _within_tolerance(
    rule: Tolerance,
    absd: np.ndarray,
    mag: np.ndarray,
    ulps: np.ndarray,
    both_nan: np.ndarray,
    one_nan: np.ndarray,
    same_inf: np.ndarray,
) -> np.ndarray:
    """Per-element pass mask: exact equality, or any of the rule's atol / rtol / ulp bounds
    (a NaN on one side only never passes; NaN on both and the same Inf always do)."""
    if rule.exact:
        return (absd == 0) | both_nan | same_inf
    with np.errstate(invalid="ignore"):
        bound = rule.atol + rule.rtol * mag
    if rule.atol_max_rel:
        finite_mag = mag[np.isfinite(mag)]
        bound = bound + rule.atol_max_rel * (float(finite_mag.max()) if finite_mag.size else 0.0)
    within = absd <= bound
    if rule.ulp is not None:
        within = within | (ulps <= rule.ulp)
    return (within & ~one_nan) | both_nan | same_inf


def _compare_floats(
    p: np.ndarray, r: np.ndarray, rule: Tolerance, *, dtype_ok: bool, base: dict, counts: dict
) -> ArrayDelta:
    """Floating (or mixed) arrays: compared in the reference dtype's precision (wider if the
    port is wider); ULPs in the component dtype or the rule's `ulp_dtype`; worst = most ulp."""
    work = np.result_type(p.dtype, r.dtype)
    if not np.issubdtype(work, np.inexact):
        work = np.dtype(np.float64)
    pw, rw = p.astype(work, copy=False), r.astype(work, copy=False)
    absd, mag, rel, both_nan, one_nan, same_inf = _float_differences(pw, rw)

    comp = np.finfo(work).dtype  # component dtype: float32 for complex64
    ulp_dt = np.dtype(rule.ulp_dtype) if rule.ulp_dtype else comp
    ulps = ulp_distance(_as_float_parts(pw), _as_float_parts(rw), dtype=ulp_dt)
    if np.iscomplexobj(pw):
        ulps = np.fmax(ulps[..., 0], ulps[..., 1])
    ulps = np.where(both_nan | same_inf, 0.0, ulps)

    within = _within_tolerance(rule, absd, mag, ulps, both_nan, one_nan, same_inf)
    beyond = ~within
    n_beyond = int(beyond.sum())
    score = np.where(one_nan, np.inf, np.nan_to_num(ulps, nan=np.inf, posinf=np.inf))
    flat = int(np.argmax(np.where(beyond, score, -1.0) if n_beyond else score))
    worst = np.unravel_index(flat, r.shape)
    finite_ulps = ulps[np.isfinite(ulps)]
    finite_rel = rel[np.isfinite(rel) & ~one_nan]
    finite_abs = absd[np.isfinite(absd) & ~one_nan]
    return ArrayDelta(
        passed=bool(dtype_ok and n_beyond == 0),
        status="compared",
        n_beyond=n_beyond,
        max_abs=float(finite_abs.max()) if finite_abs.size else 0.0,
        max_rel=float(finite_rel.max()) if finite_rel.size else 0.0,
        max_ulp=float(finite_ulps.max()) if finite_ulps.size else 0.0,
        p99_ulp=float(np.percentile(finite_ulps, 99)) if finite_ulps.size else 0.0,
        ulp_dtype=str(ulp_dt),
        worst_index=tuple(int(i) for i in worst),
        worst_port=p[worst].item(),
        worst_ref=r[worst].item(),
        **base,
        **counts,
    )


def missing_delta(
    name: str, *, side: str, rule: Tolerance, present: Any = None, why: str | None = None
) -> ArrayDelta:
    """An array one side did not produce: listed, never passed (it was not compared).

    `side` is the side that lacks it; `present` the other side's value, if any.
    """
    a = None if present is None else np.asarray(present)
    shape = None if a is None else tuple(a.shape)
    dtype = None if a is None else str(a.dtype)
    return ArrayDelta(
        name=name,
        passed=False,
        status=f"missing_in_{side}",
        tolerance=rule.describe(),
        shape_port=shape if side == "reference" else None,
        shape_ref=shape if side == "port" else None,
        dtype_port=dtype if side == "reference" else None,
        dtype_ref=dtype if side == "port" else None,
        n_total=0 if a is None else int(a.size),
        diagnosis=why,
        diagnosis_class="missing",
    )
