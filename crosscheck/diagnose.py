"""One-line classification of why an array differs (specs/crosscheck.md §6).

`diagnose` tries, in order: NaN/Inf introduction, shape and dtype changes, float32↔float64
truncation, x↔y swap of coordinates, sign flip, mirrored patch positions, channel permutation,
integer-pixel shift of patches, a constant scale factor (flagging the double-scaling /
wrong-scale family), and otherwise says "unclassified" with the ULP distance. A transform
"explains" the difference when, after applying it, the port is within `close_rtol · max|ref|`
of the reference and at most a quarter of the untransformed difference.
"""

import dataclasses
import math
from collections.abc import Mapping

import numpy as np

KINDS = (
    "shape_mismatch",
    "nan_introduced",
    "inf_introduced",
    "float_truncation",
    "xy_swap",
    "sign_flip",
    "channel_permutation",
    "mirrored_patches",
    "pixel_shift",
    "scale_factor",
    "integer_mismatch",
    "unclassified",
)
"""Every `Diagnosis.kind`."""


@dataclasses.dataclass(frozen=True)
class Diagnosis:
    """A class name from `KINDS` and the one-line message shown in reports."""

    kind: str
    message: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class DiagnosisContext:
    """What the classifier may use besides the two arrays.

    Attributes:
        N: frame size (flags factors near N/2).
        C: channels per group (flags factors near C and √C).
        scale_ratios: label → ratio of two intensity scales of the reference (e.g. closed-form /
            dataset-derived); a factor near one of them or its inverse is the wrong-scale family.
        counterparts: array name → (label, alternative reference array) — e.g. for `Y` the
            reference's per-member patches — a port matching one is "mirrored patch positions".
        close_rtol: match threshold relative to max|reference|.
        max_ulp, max_rel, n_beyond, n_total: the array's metrics, quoted when unclassified.
    """

    N: int | None = None
    C: int | None = None
    scale_ratios: Mapping[str, float] = dataclasses.field(default_factory=dict)
    counterparts: Mapping[str, tuple[str, np.ndarray]] = dataclasses.field(default_factory=dict)
    close_rtol: float = 1e-5
    max_ulp: float | None = None
    max_rel: float | None = None
    n_beyond: int | None = None
    n_total: int | None = None


def _is_coord(name: str, a: np.ndarray) -> bool:
    n = name.lower()
    return a.ndim >= 2 and a.shape[-2] == 2 and ("coord" in n or "offset" in n)


def _maxabs(x: np.ndarray) -> float:
    return float(np.max(np.abs(x))) if x.size else 0.0


class _Matcher:
    """Closeness of transformed port arrays to the reference, relative to the plain difference."""

    def __init__(self, port: np.ndarray, ref: np.ndarray, close_rtol: float):
        cplx = np.iscomplexobj(port) or np.iscomplexobj(ref)
        wt = np.complex128 if cplx else np.float64
        self.p = port.astype(wt)
        self.r = ref.astype(wt)
        self.scale = _maxabs(self.r[np.isfinite(self.r)]) if self.r.size else 0.0
        self.thr = close_rtol * self.scale
        self.d0 = self.dist(self.p, self.r)

    @staticmethod
    def dist(a: np.ndarray, b: np.ndarray) -> float:
        if a.shape != b.shape:
            return math.inf
        with np.errstate(invalid="ignore"):
            d = np.abs(a - b)
        return float(np.max(d)) if d.size else 0.0

    def explains(self, transformed: np.ndarray, ref: np.ndarray | None = None) -> bool:
        r = self.r if ref is None else ref
        d = self.dist(transformed, r)
        return d <= self.thr and d <= 0.25 * self.d0


def _float32_representable(x: np.ndarray) -> bool:
    with np.errstate(over="ignore", invalid="ignore"):
        return bool(np.all(x.astype(np.float32).astype(np.float64) == x))


def _first_index(mask: np.ndarray) -> tuple[int, ...]:
    return tuple(int(i) for i in np.unravel_index(int(np.argmax(mask)), mask.shape))


def _channel_permutations(m: _Matcher) -> np.ndarray | None:
    """(B, C) permutation per group (port channel i = reference channel perm[b, i]), or None."""
    p, r = m.p, m.r
    if p.ndim < 2 or p.shape[-1] < 2:
        return None
    B, C = p.shape[0], p.shape[-1]
    pf = p.reshape(B, -1, C)
    rf = r.reshape(B, -1, C)
    perms = np.empty((B, C), dtype=np.int64)
    step = max(1, int(4e6 // max(1, pf.shape[1] * C * C)))
    for s in range(0, B, step):
        d = np.max(np.abs(pf[s : s + step, :, :, None] - rf[s : s + step, :, None, :]), axis=1)
        best = np.argmin(d, axis=-1)
        if np.any(np.take_along_axis(d, best[..., None], -1)[..., 0] > m.thr):
            return None
        perms[s : s + step] = best
    if np.any(np.sort(perms, axis=1) != np.arange(C)):
        return None
    return perms


def _pixel_shift(m: _Matcher, max_shift: int = 2) -> tuple[int, int] | None:
    """(dy, dx) with port[:, r+dy, q+dx] ≈ reference[:, r, q] on the interior, or None."""
    p, r = m.p, m.r
    if p.ndim != 4 or p.shape[1] != p.shape[2] or p.shape[1] < 4 * max_shift + 2:
        return None
    H = p.shape[1]
    k = max_shift
    core = r[:, k : H - k, k : H - k]
    d0 = m.dist(p[:, k : H - k, k : H - k], core)
    shifts = sorted(
        ((dy, dx) for dy in range(-k, k + 1) for dx in range(-k, k + 1) if (dy, dx) != (0, 0)),
        key=lambda s: (abs(s[0]) + abs(s[1]), s),
    )
    for dy, dx in shifts:
        d = m.dist(p[:, k + dy : H - k + dy, k + dx : H - k + dx], core)
        if d <= m.thr and d <= 0.25 * d0:
            return dy, dx
    return None


def _inverse_label(label: str) -> str:
    """ "a/b rest" → "b/a rest" (the label of the inverse ratio)."""
    head, _, rest = label.partition(" ")
    num, slash, den = head.partition("/")
    return f"{den}/{num}{' ' + rest if rest else ''}" if slash else f"1/({label})"


def _scale_explains(m: _Matcher, f: float, dtype: np.dtype) -> bool:
    """Whether `port ≈ f · reference`: within the match threshold and either much closer than the
    plain difference or, for a factor at least a quarter ulp from 1, within float rounding."""
    resid = m.dist(m.p, f * m.r)
    if not resid <= m.thr:
        return False
    if resid <= 0.25 * m.d0:
        return True
    if not np.issubdtype(dtype, np.inexact):
        return False
    real = np.finfo(dtype).dtype
    rounding = 2 * float(np.spacing(real.type(m.scale)))
    return abs(f - 1) >= 0.25 * float(np.finfo(real).eps) and resid <= rounding


def _scale_family(f: float, ctx: DiagnosisContext) -> list[str]:
    cands: list[tuple[str, float]] = [
        ("2", 2.0),
        ("1/2", 0.5),
        ("√2", math.sqrt(2)),
        ("1/√2", 1 / math.sqrt(2)),
    ]
    if ctx.C and ctx.C > 1:
        cands += [
            ("C", ctx.C),
            ("1/C", 1 / ctx.C),
            ("√C", math.sqrt(ctx.C)),
            ("1/√C", 1 / math.sqrt(ctx.C)),
        ]
    if ctx.N:
        cands += [("N/2", ctx.N / 2), ("2/N", 2 / ctx.N)]
    for label, ratio in ctx.scale_ratios.items():
        if ratio and math.isfinite(ratio) and ratio > 0:
            cands += [(label, ratio), (_inverse_label(label), 1 / ratio)]
    return [label for label, c in cands if abs(f / c - 1) <= 1e-3]


def _fmt_factor(f: float) -> str:
    if abs(f - 1) < 1e-3:
        return f"1{f - 1:+.3g}"
    return f"{f:.6g}"


def _unclassified(ctx: DiagnosisContext, extra: str = "") -> Diagnosis:
    parts = []
    if ctx.max_ulp is not None:
        parts.append(f"max ulp {ctx.max_ulp:.4g}")
    if ctx.max_rel is not None:
        parts.append(f"max rel {ctx.max_rel:.3g}")
    if ctx.n_beyond is not None and ctx.n_total is not None:
        parts.append(f"{ctx.n_beyond} of {ctx.n_total} beyond tolerance")
    return Diagnosis("unclassified", f"unclassified ({', '.join(parts)}){extra}")


def diagnose(name: str, port, ref, *, context: DiagnosisContext | None = None) -> Diagnosis:
    """Classify the difference between `port` and `ref` in one line (they are assumed to differ)."""
    ctx = context or DiagnosisContext()
    p, r = np.asarray(port), np.asarray(ref)
    if p.shape != r.shape:
        swapped = p.ndim == r.ndim and sorted(p.shape) == sorted(r.shape)
        hint = " (same axes, different order: transposed layout?)" if swapped else ""
        return Diagnosis(
            "shape_mismatch", f"shape mismatch: port {p.shape} vs reference {r.shape}{hint}"
        )
    p_inexact = np.issubdtype(p.dtype, np.inexact)
    r_inexact = np.issubdtype(r.dtype, np.inexact)

    # NaN / Inf introduction
    for kind, test, label in (
        ("nan_introduced", np.isnan, "NaN"),
        ("inf_introduced", np.isinf, "Inf"),
    ):
        if p_inexact:
            bad = test(p) & (~test(r) if r_inexact else True)
            if np.any(bad):
                return Diagnosis(
                    kind,
                    f"{label} introduction: {int(bad.sum())} {label} in the port where "
                    f"the reference is finite (first at {_first_index(bad)})",
                )
        if r_inexact:
            lost = test(r) & (~test(p) if p_inexact else True)
            if np.any(lost):
                return Diagnosis(
                    kind,
                    f"{label} removed: the reference has {int(lost.sum())} {label} where "
                    f"the port is finite (first at {_first_index(lost)})",
                )

    # dtype changes between float widths
    if p.dtype != r.dtype and p_inexact and r_inexact:
        pw, rw = np.finfo(p.dtype).bits, np.finfo(r.dtype).bits
        narrow = p.dtype if pw < rw else r.dtype
        agree = np.allclose(
            p.astype(np.complex128 if np.iscomplexobj(p) else np.float64),
            r.astype(np.complex128 if np.iscomplexobj(r) else np.float64),
            rtol=4 * float(np.finfo(narrow).eps),
            atol=0,
        )
        note = f"values agree to {narrow} precision" if agree else "values also differ"
        return Diagnosis(
            "float_truncation",
            f"float32↔float64 truncation: port is {p.dtype}, reference is {r.dtype} ({note})",
        )
    if p.dtype != r.dtype and (p_inexact != r_inexact):
        return Diagnosis(
            "float_truncation" if p_inexact else "integer_mismatch",
            f"dtype change: port {p.dtype} vs reference {r.dtype}",
        )

    m = _Matcher(p, r, ctx.close_rtol)

    # integer arrays (indices)
    if not p_inexact and not r_inexact:
        perms = _channel_permutations(m) if p.ndim >= 2 else None
        if perms is not None:
            return _perm_diagnosis(perms, name)
        n = int(np.sum(p != r))
        return Diagnosis(
            "integer_mismatch",
            f"{n} of {r.size} integer values differ (first at "
            f"{_first_index(p != r)}: port {p[_first_index(p != r)]}, "
            f"reference {r[_first_index(p != r)]})",
        )

    # float32 <-> float64 truncation inside float64 arrays
    if p.dtype == r.dtype == np.float64 and r.size:
        p32, r32 = _float32_representable(p), _float32_representable(r)
        with np.errstate(over="ignore", invalid="ignore"):
            ulp32 = np.spacing(np.abs(r).astype(np.float32)).astype(np.float64)
            near = bool(np.all(np.abs(p - r) <= ulp32))
        if p32 and not r32 and near:
            rel = ctx.max_rel if ctx.max_rel is not None else float("nan")
            return Diagnosis(
                "float_truncation",
                "float32↔float64 truncation: port values are the "
                f"float64 reference rounded through float32 (max rel {rel:.3g})",
            )
        if r32 and not p32 and np.array_equal(p.astype(np.float32).astype(np.float64), r):
            return Diagnosis(
                "float_truncation",
                "float32↔float64 truncation: the reference is "
                "float32-rounded where the port keeps float64",
            )

    # x <-> y swap of coordinates
    if _is_coord(name, p) and m.explains(p[..., ::-1, :]):
        return Diagnosis(
            "xy_swap", f"x↔y swap of coordinates: port [x, y] = reference [y, x] in `{name}`"
        )

    # sign flip
    if m.explains(-m.p):
        what = "relative offsets" if ("relative" in name or "local" in name) else f"`{name}`"
        return Diagnosis("sign_flip", f"sign flip of {what}: port = −reference")

    # mirrored patch positions
    if name in ctx.counterparts:
        label, alt = ctx.counterparts[name]
        alt = np.asarray(alt).astype(m.r.dtype)
        if alt.shape == p.shape and m.explains(m.p, alt):
            return Diagnosis(
                "mirrored_patches",
                f"mirrored patch positions: port `{name}` matches the reference's {label}",
            )

    # channel permutation
    perms = _channel_permutations(m)
    if perms is not None and np.any(perms != np.arange(p.shape[-1])):
        return _perm_diagnosis(perms, name)

    # integer-pixel shift
    shift = _pixel_shift(m)
    if shift is not None:
        dy, dx = shift
        return Diagnosis(
            "pixel_shift",
            f"integer-pixel shift of patches: port[r{dy:+d}, q{dx:+d}] = "
            f"reference[r, q] (content moved by {dy:+d} rows, {dx:+d} cols)",
        )

    # constant scale factor
    fin = np.isfinite(m.r) & np.isfinite(m.p)
    den = np.sum(np.abs(m.r[fin]) ** 2)
    if den > 0:
        f = np.sum(m.p[fin] * np.conj(m.r[fin])) / den
        if abs(np.imag(f)) <= 1e-6 * abs(f):
            f = float(np.real(f))
            if (
                f != 0
                and _scale_explains(m, f, r.dtype)
                and not (r.size == 1 and abs(f - 1) < 1e-4)
            ):
                fam = _scale_family(f, ctx)
                if fam:
                    tail = f" (≈ {' = '.join(fam)}: double-scaling / wrong-scale family)"
                elif abs(f - 1) < 1e-4:
                    tail = " (near 1: summation order or precision — float32 vs float64 reduction, variant mismatch?)"
                else:
                    tail = ""
                return Diagnosis("scale_factor", f"constant scale factor {_fmt_factor(f)}{tail}")
    return _unclassified(ctx)


def _perm_diagnosis(perms: np.ndarray, name: str) -> Diagnosis:
    C = perms.shape[1]
    moved = np.any(perms != np.arange(C), axis=1)
    uniq = np.unique(perms[moved], axis=0)
    if len(uniq) == 1 and moved.all():
        return Diagnosis(
            "channel_permutation",
            f"permutation of channels in `{name}`: port channel i = "
            f"reference channel {uniq[0].tolist()}[i] in all "
            f"{len(perms)} groups",
        )
    b = int(np.argmax(moved))
    return Diagnosis(
        "channel_permutation",
        f"permutation of channels in `{name}` in {int(moved.sum())} of "
        f"{len(perms)} groups (e.g. group {b}: {perms[b].tolist()})",
    )
