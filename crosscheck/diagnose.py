"""One-line classification of why an array differs (specs/crosscheck.md §6).

`diagnose` tries, in order: NaN/Inf introduction; shape changes (axis order, dropped or added
channels); dtype-only changes (equal values in another integer width, float values equal within
the narrower float's precision); float32↔float64 truncation; x↔y swap of coordinates; sign flip;
mirrored patch positions; frame layout (transposed or flipped frames); channel permutation or
duplication; integer-pixel shift of patches; a constant scale factor of any magnitude, matched
against the chain's quantities (training scale s, C, N, nphotons, normalisation gain, raw and
grouped frame energies) as the simplest expression that equals it; a sub-pixel shift of image
frames, estimated by least squares on the bilinear-interpolation model. When nothing fits it
reports what it measured: the best-fit scale factor and its relative residual, and for image
arrays the best-fit shift and its residual.

A transform "explains" the difference when, after applying it, the port is within
`close_rtol · max|ref|` of the reference and at most a quarter of the untransformed difference.
Large arrays are classified on an evenly spaced sample of their leading axis (at most
`SAMPLE_ELEMENTS` elements); every check is plain NumPy. `diagnose` never raises: odd input
(NaN, empty, object arrays, shape mismatch) gives a diagnosis that says what was seen.
"""

import dataclasses
import itertools
import math
import warnings
from collections.abc import Mapping

import numpy as np

from ptycho_jax import mean_frame_energy as mean_frame_energy_of_rows

KINDS = (
    "shape_mismatch",
    "layout",
    "channels_dropped",
    "channels_duplicated",
    "nan_introduced",
    "inf_introduced",
    "dtype_only",
    "float_truncation",
    "xy_swap",
    "sign_flip",
    "channel_permutation",
    "mirrored_patches",
    "pixel_shift",
    "subpixel_shift",
    "scale_factor",
    "integer_mismatch",
    "zero_filled",
    "rounding",
    "unclassified",
)
"""Every `Diagnosis.kind`."""

SAMPLE_ELEMENTS = 1 << 20
"""Arrays larger than this are classified on an evenly spaced sample of their leading axis."""

ROUNDING_ULP = 16
"""Differences of at most this many ulp that no other class explains are named "rounding"."""

SUBPIXEL_RESIDUAL = 0.5
"""A fitted sub-pixel shift names the difference when it leaves at most this fraction of the
unshifted RMS difference (on low-passed frames)."""


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
        quantities: symbol → value of the chain's positive quantities a factor is matched
            against (see `chain_quantities`: `s`, `nphotons`, `gain`, `E_raw`, `E_grouped`);
            N and C are added from the fields above.
        counterparts: array name → (label, alternative reference array) — e.g. for `Y` the
            reference's per-member patches — a port matching one is "mirrored patch positions".
        close_rtol: match threshold relative to max|reference|.
        max_ulp, max_rel, n_beyond, n_total: the array's metrics, quoted when unclassified.
    """

    N: int | None = None
    C: int | None = None
    scale_ratios: Mapping[str, float] = dataclasses.field(default_factory=dict)
    quantities: Mapping[str, float] = dataclasses.field(default_factory=dict)
    counterparts: Mapping[str, tuple[str, np.ndarray]] = dataclasses.field(default_factory=dict)
    close_rtol: float = 1e-5
    max_ulp: float | None = None
    max_rel: float | None = None
    n_beyond: int | None = None
    n_total: int | None = None


QUANTITY_MEANING = {
    "s": "training intensity scale",
    "nphotons": "photon budget",
    "gain": "normalize_data gain",
    "E_raw": "mean energy Σ|ψ|² of a raw frame",
    "E_grouped": "mean energy Σ|ψ|² of a grouped frame",
    "N": "frame size",
    "C": "channels per group",
}
"""What each symbol of `DiagnosisContext.quantities` stands for (quoted in messages)."""


def mean_frame_energy(frames, *, frame_axes: tuple[int, ...]) -> float | None:
    """Mean over frames of Σ x² over `frame_axes` (float64, `ptycho_jax.mean_frame_energy`, the
    core's one sum of squares), or None.

    Raw frames (M, N, N) use `frame_axes=(1, 2)`; grouped (B, N, N, C) use `(1, 2)` too (the mean
    then runs over groups and channels: the mean energy of one grouped frame).
    """
    try:
        a = np.asarray(frames)
        if a.ndim < 3 or a.size == 0 or not np.issubdtype(a.dtype, np.number):
            return None
        frames_per_row = a[0].size // math.prod(a.shape[i] for i in frame_axes)
        v = mean_frame_energy_of_rows(np.abs(a)) / frames_per_row
        return v if math.isfinite(v) and v > 0 else None
    except Exception:  # noqa: BLE001 - a context quantity is optional
        return None


def chain_quantities(
    *,
    scale: float | None = None,
    nphotons: float | None = None,
    gain: float | None = None,
    raw_frames=None,
    grouped_frames=None,
    E_raw: float | None = None,
    E_grouped: float | None = None,
) -> dict[str, float]:
    """The `DiagnosisContext.quantities` of a reference run (missing or non-positive ones left out).

    Args:
        scale: training intensity scale s of the array's run.
        nphotons: photon budget.
        gain: the reference's normalize_data gain.
        raw_frames: (M, N, N) raw amplitudes, for `E_raw` when not given.
        grouped_frames: (B, N, N, C) grouped amplitudes, for `E_grouped` when not given.
        E_raw, E_grouped: mean energy of one raw / one grouped frame.
    """
    if E_raw is None and raw_frames is not None:
        E_raw = mean_frame_energy(raw_frames, frame_axes=(1, 2))
    if E_grouped is None and grouped_frames is not None:
        E_grouped = mean_frame_energy(grouped_frames, frame_axes=(1, 2))
    out = {}
    for k, v in (
        ("s", scale),
        ("nphotons", nphotons),
        ("gain", gain),
        ("E_raw", E_raw),
        ("E_grouped", E_grouped),
    ):
        try:
            f = float(v) if v is not None else None
        except (TypeError, ValueError):
            f = None
        if f is not None and math.isfinite(f) and f > 0:
            out[k] = f
    return out


_SCALER_SCALE_KEYS = {
    "seed_era": "seed_era_dataset_derived_scale_normalized_X",
    "main_head": "main_head_train_pinn_calculate_intensity_scale",
}
_TRAINING_SCALE_KEYS = {
    "seed": _SCALER_SCALE_KEYS["seed_era"],
    "main": _SCALER_SCALE_KEYS["main_head"],
}


def harness_quantities(
    *, raw, params, reference_outputs: Mapping, stage: str, array_name: str, cache: dict
) -> dict[str, float]:
    """`chain_quantities` of a cross-check run, from the reference's outputs so far.

    `s` is the scale of the array's scaler run (`seed_era.*`, `main_head.*`) in the scaler
    stage, else the training scale of `params.variant` (the float32 closed form for "main" when
    the reference's scales are not computed yet). Frame energies are computed once per run and
    kept in `cache`. Never raises (a quantity it cannot get is left out).
    """
    try:
        scales = dict(reference_outputs.get("intensity_scales") or {})
        label = array_name.split(".", 1)[0] if stage == "scaler" else None
        variant = getattr(params, "variant", "main")
        key = _SCALER_SCALE_KEYS.get(label) or _TRAINING_SCALE_KEYS.get(variant)
        s = scales.get(key)
        N = getattr(params, "N", None) or int(np.shape(raw.diff3d)[-1])
        nphotons = getattr(params, "nphotons", None)
        if s is None and key == _SCALER_SCALE_KEYS["main_head"] and nphotons:
            s = float(np.sqrt(np.float32(nphotons)) / np.float32(N / 2))
        if "E_raw" not in cache:
            cache["E_raw"] = mean_frame_energy(raw.diff3d, frame_axes=(1, 2))
        grouped = (reference_outputs.get("grouped") or {}).get("diffraction")
        if cache.get("E_grouped") is None and grouped is not None:
            cache["E_grouped"] = mean_frame_energy(grouped, frame_axes=(1, 2))
        return chain_quantities(
            scale=s,
            nphotons=nphotons,
            gain=(reference_outputs.get("normalize") or {}).get("normalize_gain"),
            E_raw=cache.get("E_raw"),
            E_grouped=cache.get("E_grouped"),
        )
    except Exception:  # noqa: BLE001 - context quantities are optional
        return {}


# ---------------------------------------------------------------------------------------------
# helpers


def _is_coord(name: str, a: np.ndarray) -> bool:
    n = name.lower()
    return a.ndim >= 2 and a.shape[-2] == 2 and ("coord" in n or "offset" in n)


def _is_image(a: np.ndarray) -> bool:
    """(B, H, W, C) with square frames of at least 8 pixels, or (P, H, W)."""
    return a.ndim in (3, 4) and a.shape[1] == a.shape[2] and a.shape[1] >= 8


def _maxabs(x: np.ndarray) -> float:
    return float(np.max(np.abs(x))) if x.size else 0.0


def _sample(a: np.ndarray, rows: np.ndarray | None) -> np.ndarray:
    return a if rows is None else a[rows]


def _sample_rows(a: np.ndarray) -> np.ndarray | None:
    """Evenly spaced leading-axis indices keeping at most `SAMPLE_ELEMENTS` elements, or None."""
    if a.ndim < 1 or a.size <= SAMPLE_ELEMENTS or a.shape[0] < 2:
        return None
    per_row = max(1, a.size // a.shape[0])
    k = max(1, min(a.shape[0], SAMPLE_ELEMENTS // per_row))
    return np.unique(np.linspace(0, a.shape[0] - 1, k).round().astype(np.int64))


def _chunked_all(pred, p: np.ndarray, r: np.ndarray, chunk: int = SAMPLE_ELEMENTS) -> bool:
    """`pred(p[i:j], r[i:j])` for every leading-axis chunk of about `chunk` elements (bounded
    temporaries on large arrays); 0-d arrays in one call."""
    if p.ndim == 0:
        return bool(pred(p, r))
    step = max(1, chunk // max(1, p.size // max(1, p.shape[0])))
    return all(bool(pred(p[i : i + step], r[i : i + step])) for i in range(0, p.shape[0], step))


class _Matcher:
    """Closeness of transformed port arrays to the reference, relative to the plain difference.

    Positions where either side is not finite are left out (NaN/Inf changes are classified
    before the matcher is built, so there both sides agree).
    """

    def __init__(self, port: np.ndarray, ref: np.ndarray, close_rtol: float):
        cplx = np.iscomplexobj(port) or np.iscomplexobj(ref)
        wt = np.complex128 if cplx else np.float64
        self.p = port.astype(wt)
        self.r = ref.astype(wt)
        fin = np.isfinite(self.r)
        self.scale = _maxabs(self.r[fin]) if self.r.size else 0.0
        self.thr = close_rtol * self.scale
        self.d0 = self.dist(self.p, self.r)

    @staticmethod
    def dist(a: np.ndarray, b: np.ndarray) -> float:
        if a.shape != b.shape:
            return math.inf
        with np.errstate(invalid="ignore", over="ignore"):
            d = np.abs(a - b)
        d = d[np.isfinite(a) & np.isfinite(b)]
        return float(np.max(d)) if d.size else 0.0

    def close(self, transformed: np.ndarray, ref: np.ndarray | None = None) -> bool:
        return self.dist(transformed, self.r if ref is None else ref) <= self.thr

    def explains(self, transformed: np.ndarray, ref: np.ndarray | None = None) -> bool:
        if not self.d0 > 0:  # nothing differs where both are finite: no transform explains it
            return False
        d = self.dist(transformed, self.r if ref is None else ref)
        return d <= self.thr and d <= 0.25 * self.d0


def _float32_representable(x: np.ndarray) -> bool:
    with np.errstate(over="ignore", invalid="ignore"):
        return bool(np.all(x.astype(np.float32).astype(np.float64) == x))


def _first_index(mask: np.ndarray) -> tuple[int, ...]:
    return tuple(int(i) for i in np.unravel_index(int(np.argmax(mask)), mask.shape))


def _rms(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    return float(np.sqrt(np.mean(np.abs(x) ** 2))) if x.size else 0.0


# ---------------------------------------------------------------------------------------------
# channels


def _channel_map(p: np.ndarray, r: np.ndarray, thr: float) -> np.ndarray | None:
    """(B, Cp) map: port channel i of group b equals reference channel map[b, i], or None.

    None when some port channel matches no reference channel, or matches several (an
    ambiguous map, e.g. constant data, says nothing about which channel went where).
    """
    if p.ndim < 2 or r.ndim != p.ndim or p.shape[:-1] != r.shape[:-1]:
        return None
    B, Cp, Cr = p.shape[0], p.shape[-1], r.shape[-1]
    if Cp * Cr < 2:
        return None
    pf = p.reshape(B, -1, Cp)
    rf = r.reshape(B, -1, Cr)
    out = np.empty((B, Cp), dtype=np.int64)
    step = max(1, int(4e6 // max(1, pf.shape[1] * Cp * Cr)))
    for s in range(0, B, step):
        with np.errstate(invalid="ignore", over="ignore"):
            d = np.max(np.abs(pf[s : s + step, :, :, None] - rf[s : s + step, :, None, :]), axis=1)
        d = np.where(np.isnan(d), np.inf, d)
        hits = d <= thr
        if not np.all(np.sum(hits, axis=-1) == 1):
            return None
        out[s : s + step] = np.argmax(hits, axis=-1)
    return out


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


def _channel_diagnosis(cmap: np.ndarray, Cr: int, name: str) -> Diagnosis | None:
    """Permutation, duplication or dropping of channels from a port→reference channel map."""
    B, Cp = cmap.shape
    is_perm = Cp == Cr and np.all(np.sort(cmap, axis=1) == np.arange(Cr))
    if is_perm:
        if np.any(cmap != np.arange(Cr)):
            return _perm_diagnosis(cmap, name)
        return None
    uniq = np.unique(cmap, axis=0)
    common = uniq[0].tolist() if len(uniq) == 1 else None
    where = f"in all {B} groups" if common is not None else f"in group 0 of {B} (maps differ)"
    m = common if common is not None else cmap[0].tolist()
    missing = [c for c in range(Cr) if c not in m]
    dups = sorted({c for c in m if m.count(c) > 1})
    if dups:
        reps = ", ".join(
            f"reference channel {c} appears as port channels {[i for i, x in enumerate(m) if x == c]}"
            for c in dups
        )
        return Diagnosis(
            "channels_duplicated",
            f"duplicated channels in `{name}`: {reps}; reference channel(s) {missing} missing "
            f"(port channel i = reference channel {m}[i] {where})",
        )
    return Diagnosis(
        "channels_dropped",
        f"dropped channels in `{name}`: port has {Cp} of the reference's {Cr} channels, "
        f"reference channel(s) {missing} missing (port channel i = reference channel {m}[i] {where})",
    )


# ---------------------------------------------------------------------------------------------
# layout


def _axis_names(shape: tuple[int, ...]) -> list[str]:
    if len(shape) == 4 and shape[1] == shape[2]:
        return ["B", "N", "N'", "C"]
    if len(shape) == 4 and shape[1] == 1 and shape[2] == 2:
        return ["B", "1", "xy", "C"]
    if len(shape) == 3 and shape[1] == shape[2]:
        return ["P", "N", "N'"]
    return [f"axis{i}" for i in range(len(shape))]


def _layout_mismatch(p: np.ndarray, r: np.ndarray, close_rtol: float) -> Diagnosis | None:
    """Port = reference with its axes reordered (a unique permutation), for different shapes."""
    if p.ndim != r.ndim or p.ndim > 6 or sorted(p.shape) != sorted(r.shape) or not r.size:
        return None
    rows = _sample_rows(r)
    hits = []
    for perm in itertools.permutations(range(r.ndim)):
        if tuple(r.shape[i] for i in perm) != p.shape:
            continue
        rt = np.transpose(r, perm)
        # compare a sample: the same reference rows, wherever they went
        if rows is not None and perm[0] == 0:
            a, b = p[rows], rt[rows]
        elif rows is not None:
            continue  # a large array with its leading axis moved: not checked (cost)
        else:
            a, b = p, rt
        m = _Matcher(a, b, close_rtol)
        if m.dist(m.p, m.r) <= m.thr:
            hits.append(perm)
            if len(hits) > 1:
                return None
    if len(hits) != 1:
        return None
    perm = hits[0]
    names = _axis_names(r.shape)
    port_axes = [names[i] for i in perm]
    what = ""
    if r.ndim == 4 and names[3] == "C" and port_axes == ["B", "C", "N", "N'"]:
        what = " — channel-first (B, C, N, N) where the reference is channel-last (B, N, N, C)"
    return Diagnosis(
        "layout",
        f"layout / axis order (transposed layout): port axes ({', '.join(port_axes)}) = "
        f"reference axes ({', '.join(names)}) reordered by {list(perm)}, values equal{what}; "
        f"port shape {p.shape} vs reference {r.shape}",
    )


def _frame_layout(m: _Matcher, name: str) -> Diagnosis | None:
    """Transposed, mirrored (flipped) or rotated frames of equal shape."""
    p = m.p
    if not _is_image(p):
        return None
    cands = (
        ("transposed frames (rows ↔ columns)", lambda a: np.swapaxes(a, 1, 2)),
        ("frames flipped vertically (rows reversed)", lambda a: a[:, ::-1]),
        ("frames flipped horizontally (columns reversed)", lambda a: a[:, :, ::-1]),
        ("frames rotated by 180°", lambda a: a[:, ::-1, ::-1]),
        (
            "frames transposed across the anti-diagonal",
            lambda a: np.swapaxes(a[:, ::-1, ::-1], 1, 2),
        ),
    )
    for label, f in cands:
        if m.explains(p, f(m.r)):
            return Diagnosis(
                "layout",
                f"layout: {label} in `{name}` (each port frame is the reference frame so "
                "transformed; values equal)",
            )
    return None


# ---------------------------------------------------------------------------------------------
# shifts


def _pixel_shift(m: _Matcher, max_shift: int = 2) -> tuple[int, int] | None:
    """(dy, dx) with port[:, r+dy, q+dx] ≈ reference[:, r, q] on the interior, or None."""
    p, r = m.p, m.r
    if not _is_image(p) or p.shape[1] < 4 * max_shift + 2:
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


def _frames(a: np.ndarray, max_frames: int = 64) -> np.ndarray:
    """(F, H, W) frames of an image array (channels folded into the frame axis), sampled."""
    f = np.moveaxis(a, -1, 1).reshape(-1, a.shape[1], a.shape[2]) if a.ndim == 4 else a
    if f.shape[0] > max_frames:
        f = f[np.unique(np.linspace(0, f.shape[0] - 1, max_frames).round().astype(np.int64))]
    return f


def _lowpass(f: np.ndarray, passes: int = 3) -> np.ndarray:
    """Binomial [1, 2, 1]/4 blur along rows and columns (valid part: 2 pixels less per pass).

    Two resamplings of the same content at different sub-pixel offsets differ in their highest
    frequencies (each is the content blurred by a different bilinear kernel); the low frequencies
    are the same content shifted, so the shift is fitted on low-passed frames.
    """
    for _ in range(passes):
        if f.shape[1] < 3 or f.shape[2] < 3:
            break
        f = (f[:, :-2] + 2 * f[:, 1:-1] + f[:, 2:]) / 4
        f = (f[:, :, :-2] + 2 * f[:, :, 1:-1] + f[:, :, 2:]) / 4
    return f


def _warp(r: np.ndarray, dy: float, dx: float, k: int) -> tuple[np.ndarray, ...]:
    """Bilinear samples of `r` at (row + dy, col + dx) on the interior [k, H−k), and d/ddy, d/ddx."""
    H, W = r.shape[1], r.shape[2]
    iy, ix = math.floor(dy), math.floor(dx)
    fy, fx = dy - iy, dx - ix
    rows = slice(k + iy, H - k + iy)
    cols = slice(k + ix, W - k + ix)
    rows1 = slice(k + iy + 1, H - k + iy + 1)
    cols1 = slice(k + ix + 1, W - k + ix + 1)
    a, b = r[:, rows, cols], r[:, rows, cols1]
    c, d = r[:, rows1, cols], r[:, rows1, cols1]
    val = (1 - fy) * ((1 - fx) * a + fx * b) + fy * ((1 - fx) * c + fx * d)
    gy = (1 - fx) * (c - a) + fx * (d - b)
    gx = (1 - fy) * (b - a) + fy * (d - c)
    return val, gy, gx


def estimate_shift(port: np.ndarray, ref: np.ndarray, *, max_shift: float = 2.0):
    """Least-squares shift (dy, dx) with port[r, q] ≈ bilinear(reference)(r − dy, q − dx).

    I.e. the port's content is the reference's moved by dy rows and dx columns. Integer start
    from the best integer shift in [−2, 2]², then Gauss–Newton on the bilinear-interpolation
    model over the frames' interior (one shift shared by all frames; at most 64 frames used).

    Returns:
        `(dy, dx, residual)` with `residual = rms(port − shifted ref) / rms(port − ref)` on the
        interior, or None for arrays that are not (B, N, N, C) / (P, N, N) image stacks.
    """
    p = np.asarray(port)
    r = np.asarray(ref)
    if p.shape != r.shape or not _is_image(p):
        return None
    wt = np.complex128 if (np.iscomplexobj(p) or np.iscomplexobj(r)) else np.float64
    pf, rf = _frames(p).astype(wt), _frames(r).astype(wt)
    ok = np.all(np.isfinite(pf), axis=(1, 2)) & np.all(np.isfinite(rf), axis=(1, 2))
    pf, rf = _lowpass(pf[ok]), _lowpass(rf[ok])
    H = pf.shape[1] if pf.size else 0
    k = math.ceil(max_shift) + 1
    if not pf.size or H < 2 * k + 4:
        return None
    core = pf[:, k : H - k, k : H - k]
    base = _rms(core - rf[:, k : H - k, k : H - k])
    if base == 0:
        return 0.0, 0.0, 0.0

    def resid(dy, dx):
        v, _, _ = _warp(rf, -dy, -dx, k)
        return _rms(core - v)

    ints = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)]
    dy, dx = min(ints, key=lambda s: (resid(*s), abs(s[0]) + abs(s[1])))
    dy, dx = float(dy), float(dx)
    for _ in range(30):
        v, gy, gx = _warp(rf, -dy, -dx, k)
        e = (core - v).ravel()
        J = np.stack([-gy.ravel(), -gx.ravel()], axis=1)  # d v / d(dy, dx)
        A = np.real(J.conj().T @ J)
        g = np.real(J.conj().T @ e)
        try:
            step = np.linalg.solve(A + 1e-12 * np.trace(A) * np.eye(2), g)
        except np.linalg.LinAlgError:
            break
        step = np.clip(step, -0.5, 0.5)
        ny, nx = (
            float(np.clip(dy + step[0], -max_shift, max_shift)),
            float(np.clip(dx + step[1], -max_shift, max_shift)),
        )
        if resid(ny, nx) > resid(dy, dx):
            step = step / 4
            ny, nx = dy + float(step[0]), dx + float(step[1])
            if resid(ny, nx) > resid(dy, dx):
                break
        dy, dx = ny, nx
        if abs(step[0]) < 1e-5 and abs(step[1]) < 1e-5:
            break
    return dy, dx, resid(dy, dx) / base


# ---------------------------------------------------------------------------------------------
# scale factors


def _inverse_label(label: str) -> str:
    """ "a/b rest" → "b/a rest" (the label of the inverse ratio)."""
    head, _, rest = label.partition(" ")
    num, slash, den = head.partition("/")
    return f"{den}/{num}{' ' + rest if rest else ''}" if slash else f"1/({label})"


def best_scale(p: np.ndarray, r: np.ndarray) -> tuple[complex | float, float] | None:
    """Least-squares factor f with port ≈ f·reference and its relative residual
    ‖p − f·r‖ / ‖f·r‖ over the finite elements (f is complex when the arrays are and the best
    factor has a phase), or None when the reference is all zero."""
    fin = np.isfinite(p) & np.isfinite(r)
    pp, rr = p[fin], r[fin]
    den = float(np.sum(np.abs(rr) ** 2))
    if not den > 0:
        return None
    f = np.sum(pp * np.conj(rr)) / den
    if abs(np.imag(f)) <= 1e-6 * abs(f):
        f = float(np.real(f))
    else:
        f = complex(f)
    if f == 0:
        return 0.0, 1.0
    res = float(np.sqrt(np.sum(np.abs(pp - f * rr) ** 2) / den) / abs(f))
    return f, res


def _scale_explains(m: _Matcher, f: float, dtype: np.dtype) -> bool:
    """Whether `port ≈ f · reference`: within the match threshold (scaled by |f| when |f| > 1)
    and either much closer than the plain difference or, for a factor at least a quarter ulp
    from 1, within float rounding."""
    grow = max(1.0, abs(f))
    resid = m.dist(m.p, f * m.r)
    if not resid <= m.thr * grow:
        return False
    if resid <= 0.25 * m.d0:
        return True
    if not np.issubdtype(dtype, np.inexact):
        return False
    real = np.finfo(dtype).dtype
    rounding = 2 * float(np.spacing(real.type(m.scale * grow)))
    return abs(f - 1) >= 0.25 * float(np.finfo(real).eps) and resid <= rounding


_SUP = {2: "²"}


def _render(terms: list[tuple[str, float]], const: float) -> str:
    """`const · Π name^exp` as text: "2·√(E_grouped/E_raw)", "s²", "1/√C", "√nphotons"."""
    num = [(n, e) for n, e in terms if e > 0]
    den = [(n, -e) for n, e in terms if e < 0]

    def atom(n):
        return n if n.isidentifier() else f"({n})"

    def power(group):
        return "·".join(atom(n) + _SUP.get(e, "") if e != 0.5 else f"√{atom(n)}" for n, e in group)

    if terms and all(e == 0.5 for _, e in num + den) and num and den:
        body = f"√({'·'.join(n for n, _ in num)}/{'·'.join(n for n, _ in den)})"
    else:
        top = power(num) if num else ""
        if den:
            bottom = power(den)
            if len(den) > 1:
                bottom = f"({bottom})"
            body = f"{top or '1'}/{bottom}"
        else:
            body = top
    if const == 1:
        return body or "1"
    c = {2.0: "2", 0.5: "1/2", 4.0: "4", 0.25: "1/4"}.get(const, f"{const:g}")
    if not body:
        return c
    if const in (0.5, 0.25) and "/" not in body:
        return f"{body}/{int(1 / const)}"
    return f"{c}·{body}"


def _meaning(terms: list[tuple[str, float]], const: float) -> str:
    names = {n for n, _ in terms}
    exps = {n: e for n, e in terms}
    if names == {"s"} and abs(exps["s"]) == 2:
        return (
            "inverted scaler: the port multiplies by s where the reference divides by s "
            "(or the reverse)"
        )
    if names == {"s"} and abs(exps["s"]) == 1:
        return "intensity scale s applied once too often or missing"
    if names == {"s"}:
        return "intensity scale s"
    if names == {"E_raw", "E_grouped"}:
        txt = (
            "raw vs grouped energy: normalised to the mean energy of the raw frames where the "
            "reference uses the grouped frames (a different energy target over different frames)"
        )
        if const in (2.0, 0.5):
            txt += ", with target N² where the reference has (N/2)²"
        return txt
    if names and names <= {"C"}:
        return "sum vs mean over the C channels of a group"
    if "nphotons" in names:
        return "photon-budget (nphotons) factor: un-rooted, squared, applied twice or missing"
    if names == {"gain"}:
        return "normalize_data gain applied twice, inverted or missing"
    if names and names <= {"N"}:
        return "frame-size factor (N vs N/2 normalisation target)"
    return "product of chain quantities"


def _scale_candidates(ctx: DiagnosisContext):
    """(label, value, rel tolerance, complexity, meaning) for every candidate factor."""
    out: list[tuple[str, float, float, float, str]] = []
    simple = "double-scaling / wrong-scale family"
    target = f"{simple}, or an N² vs (N/2)² normalisation target"
    channels = f"sum vs mean over the C channels of a group ({simple})"
    fixed: list[tuple[str, float, str]] = [
        ("2", 2.0, target),
        ("1/2", 0.5, target),
        ("√2", math.sqrt(2), simple),
        ("1/√2", 1 / math.sqrt(2), simple),
        ("4 = N²/(N/2)²", 4.0, target),
        ("1/4 = (N/2)²/N²", 0.25, target),
    ]
    if ctx.C and ctx.C > 1:
        fixed += [
            ("C", ctx.C, channels),
            ("1/C", 1 / ctx.C, channels),
            ("√C", math.sqrt(ctx.C), channels),
            ("1/√C", 1 / math.sqrt(ctx.C), channels),
        ]
    if ctx.N:
        fixed += [("N/2", ctx.N / 2, simple), ("2/N", 2 / ctx.N, simple)]
    for label, v, meaning in fixed:
        out.append((label, float(v), 1e-3, 1.0, meaning))
    for label, ratio in ctx.scale_ratios.items():
        if ratio and math.isfinite(ratio) and ratio > 0:
            out.append((label, ratio, 1e-3, 1.0, simple))
            out.append((_inverse_label(label), 1 / ratio, 1e-3, 1.0, simple))

    atoms: dict[str, float] = {}
    for k, v in dict(ctx.quantities).items():
        try:
            v = float(v)
        except (TypeError, ValueError):
            continue
        if math.isfinite(v) and v > 0 and v != 1:
            atoms[str(k)] = v
    if ctx.C and ctx.C > 1:
        atoms.setdefault("C", float(ctx.C))
    if ctx.N:
        atoms.setdefault("N", float(ctx.N))
    exps = (1.0, -1.0, 2.0, -2.0, 0.5, -0.5)
    consts = (1.0, 2.0, 0.5, 4.0, 0.25)

    def cost(terms, c):
        return (
            len(terms)
            + {1.0: 0, 2.0: 0.5, 0.5: 0.5}.get(c, 0.75)
            + 0.25 * sum(abs(e) != 1 for _, e in terms)
        )

    names = sorted(atoms)
    for n in names:
        for e in exps:
            for c in consts:
                terms = [(n, e)]
                v = c * atoms[n] ** e
                tol = 1e-3 if (c == 1 and n in ("s", "C", "nphotons")) else 3e-5
                out.append((_render(terms, c), v, tol, 1 + cost(terms, c), _meaning(terms, c)))
    for n1, n2 in itertools.combinations(names, 2):
        if {n1, n2} == {"gain", "E_grouped"}:  # gain = (N/2)/√E_grouped by definition
            continue
        for e1 in exps:
            for e2 in exps:
                for c in consts:
                    terms = [(n1, e1), (n2, e2)]
                    v = c * atoms[n1] ** e1 * atoms[n2] ** e2
                    out.append((_render(terms, c), v, 3e-5, 1 + cost(terms, c), _meaning(terms, c)))
    return out


def _scale_matches(f: float, ctx: DiagnosisContext) -> list[tuple[str, str]]:
    """Labels (and meanings) of the candidates equal to `f`, simplest first."""
    hits = []
    for label, v, tol, cplx, meaning in _scale_candidates(ctx):
        if cplx > 1 and abs(v - 1) < 1e-3:  # "C/4" with C = 4 says nothing
            continue
        if v > 0 and f > 0 and abs(f / v - 1) <= tol:
            hits.append((cplx, abs(f / v - 1), label, meaning, v))
    hits.sort(key=lambda t: (t[0], t[1]))
    seen, values, out = set(), [], []
    for cplx, _, label, meaning, v in hits:
        # one compound label per value: "√C·s²/2" is s² again when C = 4
        if label in seen or (cplx > 1 and any(abs(v / w - 1) <= 1e-12 for w in values)):
            continue
        seen.add(label)
        values.append(v)
        out.append((label, meaning))
    return out


def _fmt_factor(f: float) -> str:
    if abs(f - 1) < 1e-3:
        return f"1{f - 1:+.3g}"
    return f"{f:.6g}"


def _scale_diagnosis(f: float, ctx: DiagnosisContext) -> Diagnosis:
    fam = _scale_matches(abs(f), ctx) if f != 0 else []
    sign = "−" if f < 0 else ""
    if fam:
        labels = [lab for lab, _ in fam[:4]]
        meaning = fam[0][1]
        tail = f" (≈ {sign}{' = '.join(labels)}: {meaning})"
        quoted = {
            k: v
            for k, v in ctx.quantities.items()
            if any(k in lab for lab in labels) and k in QUANTITY_MEANING
        }
        if quoted:
            tail += "; " + ", ".join(
                f"{k} = {v:.6g} ({QUANTITY_MEANING[k]})" for k, v in sorted(quoted.items())
            )
    elif abs(f - 1) < 1e-4:
        tail = " (near 1: summation order or precision — float32 vs float64 reduction, variant mismatch?)"
    else:
        tail = " (matches no expression in the chain's quantities"
        if ctx.quantities:
            tail += ": " + ", ".join(f"{k} = {v:.6g}" for k, v in sorted(ctx.quantities.items()))
        tail += ")"
    return Diagnosis("scale_factor", f"constant scale factor {_fmt_factor(f)}{tail}")


# ---------------------------------------------------------------------------------------------
# the classifier


def _metrics(ctx: DiagnosisContext) -> str:
    parts = []
    if ctx.max_ulp is not None:
        parts.append(f"max ulp {ctx.max_ulp:.4g}")
    if ctx.max_rel is not None:
        parts.append(f"max rel {ctx.max_rel:.3g}")
    if ctx.n_beyond is not None and ctx.n_total is not None:
        parts.append(f"{ctx.n_beyond} of {ctx.n_total} beyond tolerance")
    return ", ".join(parts)


def _unclassified(ctx: DiagnosisContext, m: "_Matcher | None" = None, extra: str = "") -> Diagnosis:
    """No class fits: say what was measured (best-fit factor and shift with their residuals)."""
    measured = []
    if m is not None and m.p.size == 1:
        # one value: any factor "fits" it exactly, so the ratio is a measurement, not a class
        pv, rv = complex(m.p.reshape(-1)[0]), complex(m.r.reshape(-1)[0])
        if rv != 0 and pv.imag == 0 and rv.imag == 0:
            measured.append(f"port / reference = {_fmt_factor(pv.real / rv.real)} (one value)")
        msg = (
            f"a single value differs ({_metrics(ctx)})"
            if _metrics(ctx)
            else "a single value differs"
        )
        return Diagnosis("unclassified", msg + (": " + measured[0] if measured else "") + extra)
    if m is not None and m.p.size:
        bs = best_scale(m.p, m.r)
        if bs is None:
            measured.append("no scale factor fits (the reference is all zero)")
        else:
            f, res = bs
            if isinstance(f, complex):
                txt = f"{abs(f):.6g}·exp({np.angle(f):+.4g}i)"
            else:
                txt = _fmt_factor(f)
            measured.append(
                f"best-fit scale factor {txt} leaves a relative residual {res:.3g} "
                "(‖port − f·ref‖/‖f·ref‖)"
            )
        sh = estimate_shift(m.p, m.r)
        if sh is not None:
            dy, dx, res = sh
            measured.append(
                f"best-fit shift {dy:+.3f} rows, {dx:+.3f} cols leaves {res:.3g} of the "
                "unshifted RMS difference (low-passed frames)"
            )
    msg = f"unclassified ({_metrics(ctx)})" if _metrics(ctx) else "unclassified"
    if measured:
        msg += ": no class fits; " + "; ".join(measured)
    return Diagnosis("unclassified", msg + extra)


def diagnose(name: str, port, ref, *, context: DiagnosisContext | None = None) -> Diagnosis:
    """Classify the difference between `port` and `ref` in one line (they are assumed to differ).

    Never raises: an input it cannot analyse gives an "unclassified" diagnosis saying why.
    """
    ctx = context or DiagnosisContext()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return _diagnose(str(name), port, ref, ctx)
    except Exception as e:  # noqa: BLE001 - a diagnosis must never crash the report
        return Diagnosis(
            "unclassified",
            f"unclassified ({_metrics(ctx) or 'no metrics'}); the classifier could not analyse "
            f"the arrays ({type(e).__name__}: {e})",
        )


def _diagnose(name: str, port, ref, ctx: DiagnosisContext) -> Diagnosis:
    """The classes in the module docstring's order: whole-array checks first (shape, NaN/Inf,
    empty, zero-filled, dtype), then the value checks of `_classify_values` on a sample."""
    p, r = np.asarray(port), np.asarray(ref)
    numeric = all(np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_ for x in (p, r))
    if not numeric:
        return Diagnosis(
            "unclassified",
            f"unclassified: non-numeric arrays (port {p.dtype} {p.shape}, reference {r.dtype} "
            f"{r.shape}) differ",
        )
    if p.dtype == np.bool_:
        p = p.astype(np.int8)
    if r.dtype == np.bool_:
        r = r.astype(np.int8)
    dtype_note = (
        f" (also dtype: port {p.dtype} vs reference {r.dtype})" if p.dtype != r.dtype else ""
    )
    if p.shape != r.shape:
        return _shape_mismatch_diagnosis(name, p, r, ctx, dtype_note)
    dg = _nonfinite_diagnosis(p, r)
    if dg is not None:
        return dg
    if p.size == 0:
        return Diagnosis(
            "dtype_only" if p.dtype != r.dtype else "unclassified",
            f"empty arrays {p.shape}"
            + (
                f": dtype only, port {p.dtype} vs reference {r.dtype}" if p.dtype != r.dtype else ""
            ),
        )
    dg = _zero_filled_diagnosis(name, p, r, dtype_note)
    if dg is not None:
        return dg
    if p.dtype != r.dtype:
        dg, truncation_note = _dtype_only_diagnosis(p, r)
        if dg is not None:
            return dg
        if truncation_note is not None:
            dtype_note = truncation_note
    return _classify_values(name, p, r, ctx, dtype_note)


def _inexact(a: np.ndarray) -> bool:
    return bool(np.issubdtype(a.dtype, np.inexact))


def _channels_diagnosis(m: _Matcher, r: np.ndarray, name: str) -> Diagnosis | None:
    """Channel permutation / duplication / dropping, from the matcher's port→reference map
    (`r` is the whole reference: its last axis counts the channels; read only once a map is
    found, so 0-d arrays never index their shape)."""
    cmap = _channel_map(m.p, m.r, m.thr)
    if cmap is None:
        return None
    return _channel_diagnosis(cmap, r.shape[-1], name)


def _shape_mismatch_diagnosis(
    name: str, p: np.ndarray, r: np.ndarray, ctx: DiagnosisContext, dtype_note: str
) -> Diagnosis:
    """Different shapes: reordered axes (layout), dropped or duplicated channels (same leading
    axes), else a plain shape mismatch with a hint at what differs."""
    base = f"shape mismatch: port {p.shape} vs reference {r.shape}"
    lay = _layout_mismatch(p, r, ctx.close_rtol)
    if lay is not None:
        return Diagnosis(lay.kind, lay.message + dtype_note)
    if p.ndim == r.ndim and p.ndim >= 2 and p.shape[:-1] == r.shape[:-1] and p.size and r.size:
        rows = _sample_rows(r)
        m = _Matcher(_sample(p, rows), _sample(r, rows), ctx.close_rtol)
        dg = _channels_diagnosis(m, r, name)
        if dg is not None:
            return Diagnosis(dg.kind, f"{dg.message}; {base}{dtype_note}")
    swapped = p.ndim == r.ndim and sorted(p.shape) == sorted(r.shape)
    hint = " (same axes, different order: transposed layout?)" if swapped else ""
    if p.ndim == r.ndim and p.ndim >= 1 and p.shape[1:] == r.shape[1:] and not swapped:
        hint = (
            f" (different number of rows — groups/frames: port {p.shape[0]} vs reference "
            f"{r.shape[0]}; other axes equal)"
        )
    if p.size == 0 or r.size == 0:
        hint += " (one side is empty)"
    return Diagnosis("shape_mismatch", f"{base}{hint}{dtype_note}")


def _only_in(a: np.ndarray, b: np.ndarray, test, a_inexact: bool, b_inexact: bool):
    """Where `test` (np.isnan, np.isinf) holds in `a` and not in `b`, or None where nowhere."""
    if not a_inexact:
        return None
    where = test(a) & (~test(b) if b_inexact else True)
    return where if np.any(where) else None


def _nonfinite_diagnosis(p: np.ndarray, r: np.ndarray) -> Diagnosis | None:
    """NaN / Inf introduced or removed, or Inf of the opposite sign (whole arrays: counts
    matter, so this runs before sampling)."""
    p_inexact, r_inexact = _inexact(p), _inexact(r)
    for kind, test, label in (
        ("nan_introduced", np.isnan, "NaN"),
        ("inf_introduced", np.isinf, "Inf"),
    ):
        bad = _only_in(p, r, test, p_inexact, r_inexact)
        if bad is not None:
            return Diagnosis(
                kind,
                f"{label} introduction: {int(bad.sum())} {label} in the port where "
                f"the reference is finite (first at {_first_index(bad)})",
            )
        lost = _only_in(r, p, test, r_inexact, p_inexact)
        if lost is not None:
            return Diagnosis(
                kind,
                f"{label} removed: the reference has {int(lost.sum())} {label} where "
                f"the port is finite (first at {_first_index(lost)})",
            )
    if p_inexact and r_inexact:
        with np.errstate(invalid="ignore"):
            flipped = np.isinf(p) & np.isinf(r) & (np.real(p) != np.real(r))
        if np.any(flipped):
            return Diagnosis(
                "inf_introduced",
                f"Inf of the opposite sign: {int(flipped.sum())} places where port and reference "
                f"are ±Inf with different signs (first at {_first_index(flipped)})",
            )
    return None


def _zero_filled_diagnosis(
    name: str, p: np.ndarray, r: np.ndarray, dtype_note: str
) -> Diagnosis | None:
    """One side all zeros where the other is not: an array not computed, left at zero."""
    for side, a, b in (("port", p, r), ("reference", r, p)):
        if _chunked_all(lambda x, y: not np.any(x), a, b) and not _chunked_all(
            lambda x, y: not np.any(y), a, b
        ):
            other = "reference" if side == "port" else "port"
            n = int(np.count_nonzero(b))
            return Diagnosis(
                "zero_filled",
                f"zero-filled: the {side}'s `{name}` is all zeros where the {other} has {n} of "
                f"{b.size} non-zero values (not computed and left at zero?){dtype_note}",
            )
    return None


def _dtype_only_diagnosis(p: np.ndarray, r: np.ndarray) -> tuple[Diagnosis | None, str | None]:
    """Arrays of different dtypes whose values are equal (checked on every element, in chunks).

    Returns (diagnosis, None) for a dtype-only change; else (None, note) where `note` replaces
    the dtype note of later messages (float widths whose values also differ: truncation), or
    (None, None) to keep it.
    """
    p_inexact, r_inexact = _inexact(p), _inexact(r)
    if not p_inexact and not r_inexact:
        if _chunked_all(lambda a, b: np.array_equal(a, b), p, r):
            return Diagnosis(
                "dtype_only",
                f"dtype only: port {p.dtype} vs reference {r.dtype}, values equal (all {r.size})",
            ), None
    elif p_inexact and r_inexact:
        return _float_width_diagnosis(p, r)
    elif _chunked_all(
        lambda a, b: np.array_equal(a.astype(np.float64), b.astype(np.float64)), p, r
    ):
        return Diagnosis(
            "dtype_only",
            f"dtype only: port {p.dtype} vs reference {r.dtype}, values equal",
        ), None
    return None, None


def _float_width_diagnosis(p: np.ndarray, r: np.ndarray) -> tuple[Diagnosis | None, str | None]:
    """Two float dtypes: equal within the narrower one's precision is a width change (dtype
    only); values that also differ get the truncation note. Equal widths (e.g. float32 vs
    complex64) are left to the value checks."""
    pw, rw = np.finfo(p.dtype).bits, np.finfo(r.dtype).bits
    narrow = p.dtype if pw < rw else r.dtype
    wide = np.complex128 if (np.iscomplexobj(p) or np.iscomplexobj(r)) else np.float64
    eps = 4 * float(np.finfo(narrow).eps)
    with np.errstate(invalid="ignore", over="ignore"):
        equal_narrow = _chunked_all(
            lambda a, b: np.array_equal(a.astype(narrow), b.astype(narrow), equal_nan=True),
            p,
            r,
        )
        agree = equal_narrow or _chunked_all(
            lambda a, b: np.allclose(
                a.astype(wide), b.astype(wide), rtol=eps, atol=0, equal_nan=True
            ),
            p,
            r,
        )
    if pw == rw:
        return None, None  # e.g. float32 vs complex64: classified on values below
    if agree:
        how = (
            "values equal after rounding to " + str(np.dtype(narrow))
            if equal_narrow
            else f"values agree within {np.dtype(narrow)} precision (4 eps)"
        )
        return Diagnosis(
            "dtype_only",
            f"dtype only: port {p.dtype} vs reference {r.dtype}, {how} "
            f"(a width change; {np.dtype(narrow)} precision kept)",
        ), None
    return None, (
        f" (also float32↔float64 truncation: port {p.dtype} vs reference "
        f"{r.dtype}, values also differ)"
    )


def _classify_values(
    name: str, p: np.ndarray, r: np.ndarray, ctx: DiagnosisContext, dtype_note: str
) -> Diagnosis:
    """Equal-shape arrays that differ in value: the value checks in order on a sample of rows,
    the first that explains the difference named; else what was measured (`_unclassified`).
    Every message gets the dtype note and, when sampled, how many rows were classified."""
    rows = _sample_rows(r)
    ps, rs = _sample(p, rows), _sample(r, rows)
    m = _Matcher(ps, rs, ctx.close_rtol)
    sampled = "" if rows is None else f" [classified on {len(rows)} of {r.shape[0]} rows]"
    checks = (
        lambda: _equal_values_diagnosis(p, r, m, ctx),
        lambda: _integer_diagnosis(name, p, r, m),
        lambda: _float_truncation_diagnosis(p, r, ps, rs, ctx),
        lambda: _xy_swap_diagnosis(name, ps, m),
        lambda: _sign_flip_diagnosis(name, m),
        lambda: _mirrored_patches_diagnosis(name, p, m, rows, ctx),
        lambda: _frame_layout(m, name),  # transposed / flipped frames
        lambda: _channels_diagnosis(m, r, name),  # channel permutation / duplication
        lambda: _pixel_shift_diagnosis(m),
        lambda: _scale_factor_diagnosis(m, r, ctx),
        lambda: _rounding_diagnosis(ctx),
        lambda: _subpixel_shift_diagnosis(name, m),
    )
    for check in checks:
        dg = check()
        if dg is not None:
            break
    else:
        dg = _unclassified(ctx, m)
    return Diagnosis(dg.kind, dg.message + dtype_note + sampled)


def _equal_values_diagnosis(
    p: np.ndarray, r: np.ndarray, m: _Matcher, ctx: DiagnosisContext
) -> Diagnosis | None:
    """Same dtype and equal wherever both are finite: only the tolerance rule tells them apart."""
    if m.d0 > 0 or p.dtype != r.dtype:
        return None
    return Diagnosis(
        "unclassified",
        "unclassified: the values are equal wherever both are finite, and NaN/Inf sit at "
        f"the same places ({_metrics(ctx) or 'no metrics'}); the tolerance rule or a "
        "non-numeric detail (e.g. signed zeros) makes them differ",
    )


def _integer_diagnosis(name: str, p: np.ndarray, r: np.ndarray, m: _Matcher) -> Diagnosis | None:
    """Integer arrays (indices): moved channels, else how many values differ and the first."""
    if _inexact(p) or _inexact(r):
        return None
    if p.ndim >= 2:
        dg = _channels_diagnosis(m, r, name)
        if dg is not None:
            return dg
    diff = p != r
    i = _first_index(diff)
    return Diagnosis(
        "integer_mismatch",
        f"{int(diff.sum())} of {r.size} integer values differ (first at "
        f"{i}: port {p[i]}, reference {r[i]})",
    )


def _float_truncation_diagnosis(
    p: np.ndarray, r: np.ndarray, ps: np.ndarray, rs: np.ndarray, ctx: DiagnosisContext
) -> Diagnosis | None:
    """float32 ↔ float64 truncation inside float64 arrays: one side's values are all float32
    numbers and within a float32 ulp of the other's."""
    if not (p.dtype == r.dtype == np.float64 and r.size):
        return None
    p32, r32 = _float32_representable(ps), _float32_representable(rs)
    with np.errstate(over="ignore", invalid="ignore"):
        ulp32 = np.spacing(np.abs(rs).astype(np.float32)).astype(np.float64)
        near = bool(np.all(np.abs(ps - rs)[np.isfinite(rs)] <= ulp32[np.isfinite(rs)]))
    if p32 and not r32 and near:
        rel = ctx.max_rel if ctx.max_rel is not None else float("nan")
        return Diagnosis(
            "float_truncation",
            "float32↔float64 truncation: port values are the "
            f"float64 reference rounded through float32 (max rel {rel:.3g})",
        )
    if r32 and not p32 and np.array_equal(ps.astype(np.float32).astype(np.float64), rs):
        return Diagnosis(
            "float_truncation",
            "float32↔float64 truncation: the reference is "
            "float32-rounded where the port keeps float64",
        )
    return None


def _xy_swap_diagnosis(name: str, ps: np.ndarray, m: _Matcher) -> Diagnosis | None:
    """x ↔ y swap of coordinates: the port's (…, 2, n) coordinate pairs in reverse order."""
    if _is_coord(name, ps) and m.explains(m.p[..., ::-1, :]):
        return Diagnosis(
            "xy_swap", f"x↔y swap of coordinates: port [x, y] = reference [y, x] in `{name}`"
        )
    return None


def _sign_flip_diagnosis(name: str, m: _Matcher) -> Diagnosis | None:
    """Sign flip: port = −reference."""
    if m.explains(-m.p):
        what = "relative offsets" if ("relative" in name or "local" in name) else f"`{name}`"
        return Diagnosis("sign_flip", f"sign flip of {what}: port = −reference")
    return None


def _mirrored_patches_diagnosis(
    name: str, p: np.ndarray, m: _Matcher, rows: np.ndarray | None, ctx: DiagnosisContext
) -> Diagnosis | None:
    """Mirrored patch positions: the port matches the reference's counterpart array (e.g. its
    per-member patches), exactly or moved by a sub-pixel shift that fits it better."""
    if name not in ctx.counterparts:
        return None
    label, alt = ctx.counterparts[name]
    alt = np.asarray(alt)
    if alt.shape != p.shape:
        return None
    alt = _sample(alt, rows).astype(m.r.dtype)
    if m.explains(m.p, alt):
        return Diagnosis(
            "mirrored_patches",
            f"mirrored patch positions: port `{name}` matches the reference's {label}",
        )
    sh_alt, sh_ref = estimate_shift(m.p, alt), estimate_shift(m.p, m.r)
    if (
        sh_alt is not None
        and sh_alt[2] <= SUBPIXEL_RESIDUAL
        and (sh_ref is None or sh_alt[2] < 0.5 * sh_ref[2])
    ):
        dy, dx, res = sh_alt
        return Diagnosis(
            "mirrored_patches",
            f"mirrored patch positions: port `{name}` matches the reference's {label} "
            f"moved by {dy:+.2f} rows, {dx:+.2f} cols (sub-pixel fit, residual "
            f"{res:.2g} of the unshifted RMS difference)",
        )
    return None


def _pixel_shift_diagnosis(m: _Matcher) -> Diagnosis | None:
    """Integer-pixel shift of patches (at most 2 pixels each way)."""
    shift = _pixel_shift(m)
    if shift is None:
        return None
    dy, dx = shift
    return Diagnosis(
        "pixel_shift",
        f"integer-pixel shift of patches: port[r{dy:+d}, q{dx:+d}] = "
        f"reference[r, q] (content moved by {dy:+d} rows, {dx:+d} cols)",
    )


def _scale_factor_diagnosis(m: _Matcher, r: np.ndarray, ctx: DiagnosisContext) -> Diagnosis | None:
    """A constant factor of any magnitude: real (matched against the chain's quantities) or
    complex (a phase: conjugation / phase convention). A factor ≈ 1 of a single value says
    nothing and is left to `_unclassified`."""
    bs = best_scale(m.p, m.r)
    if bs is not None and isinstance(bs[0], float):
        f = bs[0]
        if f != 0 and _scale_explains(m, f, r.dtype) and not (r.size == 1 and abs(f - 1) < 1e-4):
            return _scale_diagnosis(f, ctx)
    if bs is not None and isinstance(bs[0], complex) and _scale_explains(m, bs[0], r.dtype):
        f = bs[0]
        return Diagnosis(
            "scale_factor",
            f"constant complex factor {abs(f):.6g}·exp({np.angle(f):+.4g}i) (a phase of "
            f"{math.degrees(np.angle(f)):+.4g}°: conjugation/phase convention, or a complex "
            "scale)",
        )
    return None


def _rounding_diagnosis(ctx: DiagnosisContext) -> Diagnosis | None:
    """Rounding: every difference within `ROUNDING_ULP` ulp (from the array's metrics)."""
    if not (ctx.max_ulp is not None and 0 < ctx.max_ulp <= ROUNDING_ULP):
        return None
    beyond = (
        f"{ctx.n_beyond} of {ctx.n_total} elements"
        if ctx.n_beyond is not None and ctx.n_total is not None
        else "some elements"
    )
    rel = f", max rel {ctx.max_rel:.3g}" if ctx.max_rel is not None else ""
    return Diagnosis(
        "rounding",
        f"rounding: {beyond} differ by at most {ctx.max_ulp:.3g} ulp{rel} — summation "
        "order, fused multiply-add or float32 vs float64 intermediates (an upstream "
        "stage's reordering changes it too)",
    )


def _subpixel_shift_diagnosis(name: str, m: _Matcher) -> Diagnosis | None:
    """Sub-pixel shift of image frames: a fractional least-squares shift that leaves at most
    `SUBPIXEL_RESIDUAL` of the difference; a half pixel is named as a sampling convention."""
    sh = estimate_shift(m.p, m.r)
    if sh is None:
        return None
    dy, dx, res = sh
    frac = abs(dy - round(dy)) > 0.05 or abs(dx - round(dx)) > 0.05
    if not (frac and res <= SUBPIXEL_RESIDUAL):
        return None
    half = ""
    if abs(abs(dy) - 0.5) < 0.15 and abs(abs(dx) - 0.5) < 0.15:
        half = " — a half-pixel sampling convention (pixel centre vs corner)?"
    elif abs(abs(dy) - 0.5) < 0.15 or abs(abs(dx) - 0.5) < 0.15:
        half = " — a half-pixel offset along one axis?"
    return Diagnosis(
        "subpixel_shift",
        f"sub-pixel shift of `{name}`: port content ≈ reference moved by "
        f"{dy:+.2f} rows, {dx:+.2f} cols (least squares on the bilinear model; "
        f"residual {res:.2g} of the unshifted RMS difference){half}",
    )
