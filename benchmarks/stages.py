"""Inputs of a case and the callables of each stage: the JAX port, the TF reference, upstream-style NumPy baselines."""

import functools as ft
import logging
import math
import pathlib
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np

from ptycho_jax.app.chain_flags import chain_path

from .machine import tf_module
from .plan import DENSITY, SEED, STAGES, Case, K

logger = logging.getLogger(__name__)


def synthetic_raw(
    M: int, N: int, *, seed: int, object_side: int | None = None, frames: bool = True
):
    """Random RawData: positions uniform over the object interior (gs2_ideal's density), float32 amplitudes in [0, 1)."""
    from ptycho_jax.internal import scan_raw

    rng = np.random.default_rng(seed)
    side = object_side or N + math.ceil(math.sqrt(M / DENSITY))
    lo, hi = N / 2, side - N / 2
    x = rng.uniform(lo, hi, M)
    y = rng.uniform(lo, hi, M)
    diff3d = rng.random((M, N, N), dtype=np.float32) if frames else np.zeros((M, 1, 1), np.float32)
    obj = (
        (
            rng.random((side, side), dtype=np.float32)
            + 1j * rng.random((side, side), dtype=np.float32)
        ).astype(np.complex64)
        if frames
        else None
    )
    return scan_raw(x, y, diff3d, obj=obj, scan_index=np.arange(M, dtype=np.int64))


def gs2_ideal_raw():
    """gs2_ideal's RawData: the committed golden input, else the full goldens, else simulated, else synthetic."""
    from ptycho_jax import RawData

    root = pathlib.Path(__file__).resolve().parents[1]
    for p in (
        root / "tests/data/golden/input_rawdata.npz",
        root.parent / "shared/golden/gs2_ideal/input_rawdata.npz",
    ):
        if p.is_file():
            return RawData.from_npz(
                p
            ), f"golden input {p.relative_to(p.parents[2]) if len(p.parents) > 2 else p}"
    try:
        from ptycho_jax import simulate

        return simulate("gs2_ideal").test, "simulated gs2_ideal (test half)"
    except Exception as e:  # noqa: BLE001 - fall back to shapes alone
        logger.warning(
            "bench: gs2_ideal input not found and simulation failed (%s); using synthetic data of its shapes",
            e,
        )
    return synthetic_raw(512, 64, seed=SEED, object_side=392), "synthetic, gs2_ideal shapes"


def tf_available() -> bool:
    try:
        tf_module()
        import ptycho_jax.crosscheck.tf_reference  # noqa: F401
    except ImportError:
        return False
    return True


def upstream_whole_canvas_patches(obj: np.ndarray, centres: np.ndarray, *, N: int) -> np.ndarray:
    """Upstream `get_image_patches`, algorithm as written: for each patch translate the whole padded object, crop N×N.

    The object is zero-padded by N//2; for centre (cx, cy) the whole canvas is translated by
    (−cx, −cy) with bilinear interpolation and zero fill (scipy.ndimage.shift, order 1, mode
    "constant": on a canvas with a zero border this is upstream's per-corner zero fill, and faster
    than "grid-constant"), real and imaginary parts separately, and the top-left N×N block kept. Cost
    per patch is O((H+N)(W+N)), not O(N²): this is what the JAX port's local gathers replace.

    Returns:
        (P, N, N) complex64 patches.
    """
    import scipy.ndimage as ndi

    pad = N // 2
    padded = np.pad(np.asarray(obj, np.complex64), pad)
    planes = (np.ascontiguousarray(padded.real), np.ascontiguousarray(padded.imag))
    out = np.empty((len(centres), N, N), np.complex64)
    for i, (cx, cy) in enumerate(np.asarray(centres, np.float32)):
        shift = (-float(cy), -float(cx))
        re_, im_ = (
            ndi.shift(p, shift, order=1, mode="constant", cval=0.0, prefilter=False) for p in planes
        )
        out[i].real = re_[:N, :N]
        out[i].imag = im_[:N, :N]
    return out


def _tf_scales(diff3d, diffraction, X, *, N: int, nphotons: float) -> dict[str, float]:
    """The quantities of `all_intensity_scales`, from ptycho_jax.crosscheck.tf_reference."""
    import ptycho_jax.crosscheck.tf_reference as ref

    raw_scale, raw_e = ref.dataset_scale(diff3d, nphotons)
    grouped_scale, grouped_e = ref.dataset_scale(diffraction, nphotons)
    seed_scale, x_e = ref.dataset_scale(X, nphotons, N=N)
    return {
        "fallback": ref.closed_form_scale_f64(N, nphotons),
        "main": ref.closed_form_scale_f32(N, nphotons),
        "seed": seed_scale,
        "raw_e": raw_e,
        "raw_scale": raw_scale,
        "grouped_e": grouped_e,
        "grouped_scale": grouped_scale,
        "norm_Y_I": ref.scale_nphotons(X, nphotons),
        "x_e": x_e,
    }


def _tf_chain(
    raw, *, N: int, gridsize: int, K: int, n_groups: int, nphotons: float, seed: int | None
) -> dict[str, Any]:
    """The chain through the TF reference: selection, grouped dict, normalize, container, scales, scaler variable."""
    import ptycho_jax.crosscheck.grouping as rg
    import ptycho_jax.crosscheck.tf_reference as ref

    nn = rg.select_groups(raw.positions(), gridsize=gridsize, K=K, n_groups=n_groups, seed=seed)
    grouped = ref.grouped_dict(raw, nn, N=N)
    X, gain = ref.normalize_data(grouped["diffraction"], N)
    container = ref.make_container(grouped, X, raw.probeGuess, nphotons=nphotons)
    scales = _tf_scales(raw.diff3d, grouped["diffraction"], X, N=N, nphotons=nphotons)
    log_scale = ref.make_log_scale(scales["main"])
    return {
        "grouped": grouped,
        "X_full": X,
        "gain": gain,
        "container": container,
        "scales": scales,
        "log_scale": log_scale,
    }


@ft.cache
def _jitted_scaler_roundtrip():
    import equinox as eqx

    @eqx.filter_jit
    def roundtrip(scaler, x):
        # what the TF reference's `inv(fwd(x))` returns: the inverse of the forward, one array
        return scaler.inverse(scaler(x))

    return roundtrip


class Inputs:
    """Per-case inputs, built lazily (only what a stage reads, `STAGE_INPUTS`) and kept for the case."""

    def __init__(self, case: Case, device, *, port: str | None = None):
        self.case, self.device, self.port = case, device, port
        self._cache: dict[str, Any] = {}

    def built(self) -> list[str]:
        return list(self._cache)

    def get(self, name: str):
        if name not in self._cache:
            self._cache[name] = getattr(self, "_make_" + name)()
        return self._cache[name]

    def _make_raw(self):
        c = self.case
        if c.source == "gs2_ideal":
            raw, origin = gs2_ideal_raw()
            self._cache["origin"] = origin
            return raw
        self._cache["origin"] = "synthetic" + (" positions only" if c.source == "positions" else "")
        return synthetic_raw(c.M, c.N, seed=SEED, frames=c.source != "positions")

    def _make_raw_resident(self):
        return self.get("raw").on_device(self.device)

    def _make_positions(self):
        return self.get("raw").positions()

    def _make_nn(self):
        from ptycho_jax import select_groups

        c = self.case
        return select_groups(self.get("positions"), c.params())

    def _make_seeds(self):
        c = self.case
        return np.random.RandomState(c.seed).choice(c.M, min(c.B, c.M), replace=False)

    def _put(self, a):
        import jax

        return jax.device_put(a, self.device)

    def _make_diff3d_dev(self):
        return self._put(self.get("raw").diff3d)

    def _make_nn_dev(self):
        return self._put(self.get("nn"))

    def _make_coords(self):
        from ptycho_jax import group_coordinates

        raw = self.get("raw")
        return group_coordinates(raw.xcoords, raw.ycoords, self.get("nn"))

    def _make_D_dev(self):
        from ptycho_jax.internal import gather_frames

        return gather_frames(self.get("diff3d_dev"), self.get("nn_dev"))

    def _make_X_dev(self):
        from ptycho_jax import normalize_data

        return normalize_data(self.get("D_dev"), self.case.N)[0]

    def _make_D_np(self):
        return np.array(self.get("D_dev"))

    def _make_X_np(self):
        return np.array(self.get("X_dev"))

    def _make_centres(self):
        from ptycho_jax import group_patch_centres

        nn_coords, offsets, relative = self.get("coords")
        return group_patch_centres(offsets, relative, nn_coords, positions="upstream")

    def _make_grouped(self):
        from ptycho_jax import group

        return group(self.get("raw"), self.case.params(), nn_indices=self.get("nn"))

    def _make_tf_grouped(self):
        import ptycho_jax.crosscheck.tf_reference as ref

        return ref.grouped_dict(self.get("raw"), self.get("nn"), N=self.case.N)

    def _make_tf_scaler(self):
        import ptycho_jax.crosscheck.tf_reference as ref

        _, fwd, inv = ref.make_scaler_pair(self.scale())
        return fwd, inv, tf_module().convert_to_tensor(self.get("X_np"))

    def scale(self) -> float:
        from ptycho_jax import closed_form_intensity_scale_f32

        return closed_form_intensity_scale_f32(self.case.N, self.case.nphotons)


class Impl(NamedTuple):
    """One implementation of a stage: `call()` runs it once; its time × `scale` is the figure."""

    call: Callable[[], Any]
    scale: float = 1.0
    note: str = ""
    exclude: tuple = ()  # input arrays the output aliases (not counted as produced)


def stage_callables(stage: str, inp: Inputs, impls: Sequence[str]) -> dict[str, Impl]:
    """`{impl: Impl}` for `stage` on the case's inputs (built here, before any timing)."""
    out = _own_callables(stage, inp, impls)
    if "port" in impls and inp.port is not None:
        from .port import PORT_STAGES, port_call

        out["port"] = Impl(
            port_call(inp.port, stage, inp.case, inp),
            1.0,
            f"--port {inp.port}: {PORT_STAGES[stage]} (a fresh instance per call)",
        )
    return out


def _own_callables(stage: str, inp: Inputs, impls: Sequence[str]) -> dict[str, Impl]:
    import jax  # noqa: F401 - imported before any stage is built, as before the split

    want = set(impls)
    ref = rg = None
    if "tf-ref" in want:
        import ptycho_jax.crosscheck.grouping as rg
        import ptycho_jax.crosscheck.tf_reference as ref

    make = _STAGE_CALLABLES.get(stage)
    if make is None:
        raise ValueError(f"stage: expected one of {STAGES}, got {stage!r}")
    return make(inp, want, ref, rg)


def _selection(inp: Inputs, want: set[str], ref, rg) -> dict[str, Impl]:
    from ptycho_jax import select_groups

    c = inp.case
    out: dict[str, Impl] = {}
    pos = inp.get("positions")
    params = c.params()
    out["jax"] = Impl(lambda: select_groups(pos, params), 1.0, f"engine={params.engine!r}")
    if "jax-engine" in want:
        out["jax-engine"] = Impl(
            lambda: select_groups(pos, params, engine="jax"),
            1.0,
            "engine='jax' (jax_neighbours + jax.random draws)",
        )
    if rg is not None:
        kw = {"gridsize": c.gridsize, "K": c.K, "n_groups": c.B, "seed": c.seed}
        out["tf-ref"] = Impl(
            lambda: rg.select_groups(pos, **kw),
            1.0,
            "ptycho_jax.crosscheck.grouping.select_groups",
        )
    return out


def _neighbours(inp: Inputs, want: set[str], ref, rg) -> dict[str, Impl]:
    from ptycho_jax.internal import jax_neighbours, kdtree_neighbours

    out: dict[str, Impl] = {}
    pos, seeds = inp.get("positions"), inp.get("seeds")
    out["jax"] = Impl(
        lambda: jax_neighbours(pos, seeds, k=K),
        1.0,
        f"jax_neighbours (jitted cell list, exhaustive fallback), {len(seeds)} seeds, k={K}",
    )
    out["ckdtree"] = Impl(
        lambda: kdtree_neighbours(pos, seeds, k=K + 1),
        1.0,
        f"cKDTree build + query, {len(seeds)} seeds, k={K + 1}",
    )
    return out


def _h2d(inp: Inputs, want: set[str], ref, rg) -> dict[str, Impl]:
    import jax

    out: dict[str, Impl] = {}
    raw = inp.get("raw")
    out["jax"] = Impl(
        lambda: jax.device_put(raw.diff3d, inp.device),
        1.0,
        "raw frames host -> device (jax.device_put)",
    )
    if "jax-resident" in want:
        out["jax-resident"] = Impl(
            lambda: raw.on_device(inp.device).device_frames,
            1.0,
            "RawData.on_device: the one transfer of the frames (then resident for every call)",
        )
    return out


def _end_to_end(inp: Inputs, want: set[str], ref, rg) -> dict[str, Impl]:
    from ptycho_jax import run_chain

    c = inp.case
    out: dict[str, Impl] = {}
    raw = inp.get("raw")
    params = c.params()
    path = chain_path(c.devices, c.chunk_groups)
    where = (
        f"run_chain (devices={c.devices}, chunk_groups={c.chunk_groups})"
        if c.devices or c.chunk_groups
        else "run_chain"
    )

    def chain_of(scan):
        def jax_chain():
            r = run_chain(scan, params, **path)
            return r.grouped, r.container, r.scaler

        return jax_chain

    out["jax"] = Impl(
        chain_of(raw),
        1.0,
        f"{where} from host RawData (selection, transfers, patches from objectGuess)",
        (raw.objectGuess,),
    )
    if "jax-resident" in want:
        resident = inp.get("raw_resident")
        out["jax-resident"] = Impl(
            chain_of(resident),
            1.0,
            f"{where} from RawData.on_device (frames resident: no transfer per call)",
            (raw.objectGuess, resident.device_frames),
        )
    if ref is not None:
        note = "crosscheck selection + tf_reference stages"
        out["tf-ref"] = Impl(
            lambda: _tf_chain(
                raw,
                N=c.N,
                gridsize=c.gridsize,
                K=c.K,
                n_groups=c.B,
                nphotons=c.nphotons,
                seed=c.seed,
            ),
            1.0,
            note,
            (raw.objectGuess, raw.probeGuess),
        )
    return out


def _gather_coords(inp: Inputs, want: set[str], ref, rg) -> dict[str, Impl]:
    from ptycho_jax import group_coordinates
    from ptycho_jax.internal import gather_frames

    out: dict[str, Impl] = {}
    raw, nn = inp.get("raw"), inp.get("nn")
    diff_dev, nn_dev = inp.get("diff3d_dev"), inp.get("nn_dev")

    def jax_gc():
        start = group_coordinates(raw.xcoords_start, raw.ycoords_start, nn)
        return (
            gather_frames(diff_dev, nn_dev),
            group_coordinates(raw.xcoords, raw.ycoords, nn),
            start,
        )

    out["jax"] = Impl(jax_gc, 1.0, "gather_frames + group_coordinates x2 (frames on device)")
    if ref is not None:
        out["tf-ref"] = Impl(
            lambda: (ref.gather_diffraction(raw.diff3d, nn), ref.group_coordinates(raw, nn)),
            1.0,
            "",
        )
    return out


def _normalize(inp: Inputs, want: set[str], ref, rg) -> dict[str, Impl]:
    from ptycho_jax import normalize_data

    N = inp.case.N
    out: dict[str, Impl] = {}
    inp.get("raw"), inp.get("nn")  # built first, as before the split
    D = inp.get("D_dev")
    out["jax"] = Impl(lambda: normalize_data(D, N), 1.0, "variant main")
    if ref is not None:
        D_np = inp.get("D_np")
        out["tf-ref"] = Impl(lambda: ref.normalize_data(D_np, N), 1.0, "variant main")
    return out


def _gather_normalize(inp: Inputs, want: set[str], ref, rg) -> dict[str, Impl]:
    from ptycho_jax import normalize_data
    from ptycho_jax.internal import gather_frames

    N = inp.case.N
    out: dict[str, Impl] = {}
    raw, nn = inp.get("raw"), inp.get("nn")
    diff_dev, nn_dev = inp.get("diff3d_dev"), inp.get("nn_dev")
    out["jax"] = Impl(
        lambda: normalize_data(gather_frames(diff_dev, nn_dev), N),
        1.0,
        "gather_frames then normalize_data",
    )
    if ref is not None:
        out["tf-ref"] = Impl(
            lambda: ref.normalize_data(ref.gather_diffraction(raw.diff3d, nn), N), 1.0, ""
        )
    return out


def _group_normalize(inp: Inputs, want: set[str], ref, rg) -> dict[str, Impl]:
    import dataclasses

    from ptycho_jax import group

    out: dict[str, Impl] = {}
    raw = inp.get("raw")
    inp.get("nn")  # built first, as before the split
    bare = (
        dataclasses.replace(raw, objectGuess=None, Y=None)
        if hasattr(raw, "Y")
        else dataclasses.replace(raw, objectGuess=None)
    )
    params = inp.case.params()
    out["jax"] = Impl(
        lambda: group(bare, params),
        1.0,
        "group() from host RawData without objectGuess: selection, gather, coordinates, normalize (as upstream's generate_grouped_data)",
    )
    return out


def _intensity_scale(inp: Inputs, want: set[str], ref, rg) -> dict[str, Impl]:
    from ptycho_jax import all_intensity_scales

    c = inp.case
    N = c.N
    out: dict[str, Impl] = {}
    raw = inp.get("raw")
    inp.get("nn")  # built first, as before the split
    diff_dev, D, X = inp.get("diff3d_dev"), inp.get("D_dev"), inp.get("X_dev")
    out["jax"] = Impl(
        lambda: all_intensity_scales(
            raw_diff3d=diff_dev, grouped_diffraction=D, X=X, N=N, nphotons=c.nphotons
        ),
        1.0,
        "all_intensity_scales (9 quantities)",
    )
    if ref is not None:
        D_np, X_np = inp.get("D_np"), inp.get("X_np")
        out["tf-ref"] = Impl(
            lambda: _tf_scales(raw.diff3d, D_np, X_np, N=N, nphotons=c.nphotons),
            1.0,
            "same 9 quantities",
        )
    return out


def _scaler(inp: Inputs, want: set[str], ref, rg) -> dict[str, Impl]:
    from ptycho_jax import IntensityScaler

    out: dict[str, Impl] = {}
    inp.get("raw"), inp.get("nn")  # built first, as before the split
    X = inp.get("X_dev")
    scale = inp.scale()
    rt = _jitted_scaler_roundtrip()
    out["jax"] = Impl(
        lambda: rt(IntensityScaler.from_scale(scale), X),
        1.0,
        "from_scale, then inverse(forward(x)) in one filter_jit program (one array returned, as the TF pair)",
    )
    if ref is not None:
        fwd, inv, Xt = inp.get("tf_scaler")
        out["tf-ref"] = Impl(
            lambda: inv(fwd(Xt)), 1.0, "Keras layer pair, forward + inverse (eager)"
        )
    return out


def _container(inp: Inputs, want: set[str], ref, rg) -> dict[str, Impl]:
    from ptycho_jax import make_container

    c = inp.case
    out: dict[str, Impl] = {}
    raw = inp.get("raw")
    inp.get("nn")  # built first, as before the split
    g, probe = inp.get("grouped"), raw.probeGuess
    note = "Y_I/Y_phi from complex Y, norm_Y_I in TF order"
    out["jax"] = Impl(
        lambda: make_container(g, probe, nphotons=c.nphotons),
        1.0,
        note,
        (g.X_full, g.nn_indices, g.coords_offsets, g.coords_relative),
    )
    if ref is not None:
        tg, tX = inp.get("tf_grouped"), inp.get("X_np")
        alias = (tX, probe, tg["nn_indices"], tg["coords_offsets"], tg["coords_relative"])
        out["tf-ref"] = Impl(
            lambda: ref.make_container(tg, tX, probe, nphotons=c.nphotons), 1.0, "", alias
        )
    return out


def _patches(inp: Inputs, want: set[str], ref, rg) -> dict[str, Impl]:
    from ptycho_jax import extract_group_patches

    c = inp.case
    N = c.N
    out: dict[str, Impl] = {}
    raw = inp.get("raw")
    inp.get("nn")  # built first, as before the split
    obj, centres = raw.objectGuess, inp.get("centres")
    out["jax"] = Impl(
        lambda: extract_group_patches(obj, centres, N=N, C=c.C),
        1.0,
        "local bilinear gathers, FMA-order blend",
    )
    if ref is not None:
        B = len(centres) // c.C
        flat = (
            centres.reshape(B, c.C, 2).transpose(0, 2, 1)[:, None].astype(np.float64)
        )  # (B, 1, 2, C), exact
        zeros = np.zeros((B, 1, 2, 1))
        note = "crosscheck gather-based extraction (not upstream's algorithm)"
        out["tf-ref"] = Impl(lambda: ref.image_patches(obj, flat, zeros, N=N), 1.0, note)
    if "upstream-np" in want:
        k = max(1, min(c.upstream_subset, len(centres)))
        sub = centres[:k]
        note = f"whole padded canvas ({c.object_side + 2 * (N // 2)}² px) translated per patch; {k} of {len(centres)} patches timed, scaled per patch"
        out["upstream-np"] = Impl(
            lambda: upstream_whole_canvas_patches(obj, sub, N=N), len(centres) / k, note
        )
    return out


_STAGE_CALLABLES: dict[str, Callable[..., dict[str, Impl]]] = {
    "selection": _selection,
    "neighbours": _neighbours,
    "h2d": _h2d,
    "end_to_end": _end_to_end,
    "gather_coords": _gather_coords,
    "normalize": _normalize,
    "gather_normalize": _gather_normalize,
    "group_normalize": _group_normalize,
    "intensity_scale": _intensity_scale,
    "scaler": _scaler,
    "container": _container,
    "patches": _patches,
}
"""Stage name -> the function that builds its `{impl: Impl}` (`_own_callables` dispatches on it)."""
