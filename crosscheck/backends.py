"""The backend protocol and the built-in backends: `jax`, `tf`, `upstream`, `golden:DIR`, `module:attr`.

specs/crosscheck.md §2. A backend computes the chain's stages from a RawData-like input and
explicit parameters (`ptycho_jax.ChainParams`); every stage after `grouping` accepts injected
`nn_indices`, so the harness can remove grouping randomness. Each stage returns a mapping of
array name → NumPy array (or Python scalar), named like the upstream grouped dict / container /
golden files. A backend that cannot produce a stage raises `StageUnsupported`.
"""

import contextlib
import dataclasses
import hashlib
import importlib
import json
import logging
import os
import pathlib
from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ptycho_jax import BackendUnavailableError

from . import grouping as _grouping
from . import tf_reference as _tfr
from ._keys import CONTAINER_KEYS, COORD_KEYS, SCALE_KEYS

logger = logging.getLogger(__name__)

STAGES = ("grouping", "grouped", "normalize", "patches", "intensity_scales", "scaler", "container")
"""Stage names, in the order the harness runs them."""

GROUPED_KEYS = ("diffraction",) + COORD_KEYS
REQUIRED: Mapping[str, tuple[str, ...]] = {
    "grouping": ("nn_indices",),
    "grouped": GROUPED_KEYS,
    "normalize": ("X_full", "normalize_gain"),
    "patches": ("Y", "Y_member"),
    "intensity_scales": SCALE_KEYS,
    "scaler": ("log_scale", "scaler_out", "scaler_inv_out"),
    "container": CONTAINER_KEYS,
}
"""Arrays each stage must produce (extra arrays are compared when both sides have them)."""


class StageUnsupported(Exception):
    """A backend cannot produce this stage for these inputs (the stage is reported as skipped)."""


@runtime_checkable
class Backend(Protocol):
    """What a cross-check backend implements: one method per stage.

    `raw` is a `ptycho_jax.RawData` (or any object with its fields), `params` a
    `ptycho_jax.ChainParams`. `nn_indices` (B, C), when given, replaces the backend's own
    grouping. Return NumPy arrays (or Python/NumPy scalars) under the names in `REQUIRED`.
    """

    name: str

    def grouping(self, raw: Any, params: Any) -> Mapping[str, Any]:
        """`{"nn_indices": (B, C) int}` chosen by the backend itself (seeded or not)."""
        ...

    def grouped(self, raw: Any, params: Any, *, nn_indices: Any = None) -> Mapping[str, Any]:
        """`diffraction` (B, N, N, C) and the six float64 coordinate arrays."""
        ...

    def normalize(self, raw: Any, params: Any, *, nn_indices: Any = None) -> Mapping[str, Any]:
        """`X_full` (B, N, N, C) float32 and the float32 `normalize_gain` of `params.variant`."""
        ...

    def patches(self, raw: Any, params: Any, *, nn_indices: Any = None) -> Mapping[str, Any]:
        """`Y` (upstream positions, mirrored for C > 1) and `Y_member` (each member's position)."""
        ...

    def intensity_scales(
        self, raw: Any, params: Any, *, nn_indices: Any = None
    ) -> Mapping[str, Any]:
        """Every named scale of `SCALE_KEYS` as a Python float."""
        ...

    def scaler(self, x: np.ndarray, *, scale: float, trainable: bool = True) -> Mapping[str, Any]:
        """`log_scale` (float32), `scaler_out = x / exp(log_scale)`, `scaler_inv_out` (round trip)."""
        ...

    def container(self, raw: Any, params: Any, *, nn_indices: Any = None) -> Mapping[str, Any]:
        """The container fields of `CONTAINER_KEYS` (optionally `Y_complex`)."""
        ...


# ---------------------------------------------------------------------------------------------
# helpers


def array_digest(a: Any) -> str:
    a = np.ascontiguousarray(np.asarray(a))
    return hashlib.sha1(a.tobytes() + str(a.shape).encode() + str(a.dtype).encode()).hexdigest()


def _N(raw: Any, params: Any) -> int:
    return (
        int(params.N) if getattr(params, "N", None) is not None else int(np.shape(raw.diff3d)[-1])
    )


def _host(d: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if v is None or isinstance(v, (float, int)):
            out[k] = v
        else:
            out[k] = np.asarray(v)
    return out


class _Memo:
    """A tiny per-instance cache of chain runs keyed by (raw identity, params, nn digest)."""

    def __init__(self, size: int = 4):
        self._size = size
        self._items: list[tuple[tuple, Any, Any]] = []

    def get(self, key: tuple, raw: Any, make: Callable[[], Any]) -> Any:
        for k, r, v in self._items:
            if k == key and r is raw:
                return v
        v = make()
        self._items.append((key, raw, v))
        del self._items[: -self._size]
        return v


def params_key(params: Any) -> tuple:
    if dataclasses.is_dataclass(params):
        return tuple(sorted((k, repr(v)) for k, v in dataclasses.asdict(params).items()))
    return (repr(params),)


# ---------------------------------------------------------------------------------------------
# jax


class JaxBackend:
    """`ptycho_jax` through its public API (`run_chain`, `group`, `IntensityScaler`)."""

    name = "jax"

    def __init__(self, *, mesh=None, chunk_groups: int | None = None):
        self._memo = _Memo()
        self._path = {"mesh": mesh, "chunk_groups": chunk_groups}  # run_chain's mesh / stream path

    def _chain(self, raw, params, nn_indices):
        import ptycho_jax as pj

        nn = None if nn_indices is None else np.asarray(nn_indices)
        key = (params_key(params), None if nn is None else array_digest(nn))
        return self._memo.get(
            key, raw, lambda: pj.run_chain(raw, params, nn_indices=nn, **self._path)
        )

    def grouping(self, raw, params):
        import ptycho_jax as pj

        return {"nn_indices": np.asarray(pj.select_groups(raw.positions(), params))}

    def grouped(self, raw, params, *, nn_indices=None):
        g = self._chain(raw, params, nn_indices).grouped
        return _host({k: getattr(g, k) for k in GROUPED_KEYS})

    def normalize(self, raw, params, *, nn_indices=None):
        g = self._chain(raw, params, nn_indices).grouped
        return {
            "X_full": np.asarray(g.X_full),
            "normalize_gain": np.float32(np.asarray(g.normalize_gain)),
        }

    def patches(self, raw, params, *, nn_indices=None):
        import ptycho_jax as pj

        nn = self._chain(raw, params, nn_indices).grouped.nn_indices
        out = {}
        for key, where in (("Y", "upstream"), ("Y_member", "member")):
            g = pj.group(
                raw,
                dataclasses.replace(
                    params, N=_N(raw, params), n_groups=len(nn), patch_positions=where
                ),
                nn_indices=np.asarray(nn),
            )
            if g.Y is None:
                raise StageUnsupported("jax: no patches (the input has neither Y nor objectGuess)")
            out[key] = np.asarray(g.Y)
        return out

    def intensity_scales(self, raw, params, *, nn_indices=None):
        return {
            k: float(v) for k, v in self._chain(raw, params, nn_indices).intensity_scales.items()
        }

    def scaler(self, x, *, scale, trainable=True):
        import jax.numpy as jnp

        import ptycho_jax as pj

        s = pj.IntensityScaler.from_scale(scale, trainable=trainable)
        out = s(jnp.asarray(np.asarray(x, np.float32)))
        back = s.inverse(out)
        return {
            "log_scale": np.float32(s.log_scale_f32),
            "scaler_out": np.asarray(out),
            "scaler_inv_out": np.asarray(back),
        }

    def container(self, raw, params, *, nn_indices=None):
        c = self._chain(raw, params, nn_indices).container
        out = _host({k: getattr(c, k) for k in CONTAINER_KEYS})
        out["Y_complex"] = np.asarray(c.Y)
        return out


# ---------------------------------------------------------------------------------------------
# tf


class TFBackend:
    """The independent TensorFlow reference (`ptycho_jax.crosscheck.tf_reference`), grouping by `ptycho_jax.crosscheck.grouping`."""

    name = "tf"

    def __init__(self):
        try:
            _tfr._tf()
        except ImportError as e:
            raise BackendUnavailableError(
                "backend 'tf' needs TensorFlow: pip install 'ptycho-jax[tf]' (or tensorflow-cpu)"
            ) from e
        self._memo = _Memo()

    def grouping(self, raw, params):
        pos = np.stack([np.asarray(raw.xcoords), np.asarray(raw.ycoords)], axis=1)
        nn = _grouping.select_groups(
            pos,
            gridsize=params.gridsize,
            K=params.K,
            n_groups=params.n_groups,
            seed=params.seed,
            sequential=params.sequential,
            oversample=params.oversample,
            neighbor_pool_size=params.neighbor_pool_size,
        )
        return {"nn_indices": nn}

    def _nn(self, raw, params, nn_indices):
        if nn_indices is not None:
            return np.asarray(nn_indices)
        return self._memo.get(
            ("groups", params_key(params)), raw, lambda: self.grouping(raw, params)["nn_indices"]
        )

    def _chain(self, raw, params, nn_indices):
        nn = self._nn(raw, params, nn_indices)
        key = ("chain", params_key(params), array_digest(nn))
        return self._memo.get(key, raw, lambda: self._run(raw, params, nn))

    def _run(self, raw, params, nn):
        N = _N(raw, params)
        g = _tfr.grouped_dict(raw, nn, N=N, patch_positions=params.patch_positions)
        X, gain = _tfr.normalize_data(g["diffraction"], N, variant=params.variant)
        container = _tfr.make_container(g, X, raw.probeGuess, nphotons=params.nphotons)
        return {"grouped": g, "X_full": X, "gain": gain, "container": container, "N": N}

    def grouped(self, raw, params, *, nn_indices=None):
        g = self._chain(raw, params, nn_indices)["grouped"]
        return {k: g[k] for k in GROUPED_KEYS if k in g}

    def normalize(self, raw, params, *, nn_indices=None):
        c = self._chain(raw, params, nn_indices)
        return {"X_full": c["X_full"], "normalize_gain": c["gain"]}

    def patches(self, raw, params, *, nn_indices=None):
        c = self._chain(raw, params, nn_indices)
        g, N = c["grouped"], c["N"]
        up = _tfr.grouped_patches(raw, g, N=N, patch_positions="upstream")
        if up is None:
            raise StageUnsupported("tf: no patches (the input has neither Y nor objectGuess)")
        return {"Y": up, "Y_member": _tfr.grouped_patches(raw, g, N=N, patch_positions="member")}

    def intensity_scales(self, raw, params, *, nn_indices=None):
        c = self._chain(raw, params, nn_indices)
        N, nph = c["N"], params.nphotons
        X = c["container"]["X"]
        seed_scale, seed_E = _tfr.dataset_scale(X, nph, N=N)
        raw_scale, raw_E = _tfr.dataset_scale(raw.diff3d, nph)
        g_scale, g_E = _tfr.dataset_scale(c["grouped"]["diffraction"], nph)
        return {
            "fallback_scale_closed_form": _tfr.closed_form_scale_f64(N, nph),
            "main_head_train_pinn_calculate_intensity_scale": _tfr.closed_form_scale_f32(N, nph),
            "seed_era_dataset_derived_scale_normalized_X": seed_scale,
            "raw_E_batch_sum_psi2": raw_E,
            "raw_dataset_scale": raw_scale,
            "grouped_E_batch_sum_psi2_over_HWC": g_E,
            "grouped_dataset_scale_over_HWC": g_scale,
            "container_norm_Y_I_diffsim_scale_nphotons": float(c["container"]["norm_Y_I"]),
            "normalized_X_mean_sum_sq_over_HWC": seed_E,
        }

    def scaler(self, x, *, scale, trainable=True):
        return _tfr.apply_scaler(x, scale)

    def container(self, raw, params, *, nn_indices=None):
        return dict(self._chain(raw, params, nn_indices)["container"])


# ---------------------------------------------------------------------------------------------
# golden:DIR


class GoldenBackend:
    """Recorded upstream stage arrays in the golden layout (`stage1_grouping.npz` … `stage4_intensity.npz`).

    Recorded data answer only the question they were recorded for: stages are refused
    (`StageUnsupported`) when the input, the parameters or the injected groups differ from the
    recording, or when the variant/patch positions were not recorded.
    """

    FILES = (
        "stage1_grouping.npz",
        "stage2_normalize.npz",
        "stage3_container.npz",
        "stage4_intensity.npz",
    )

    def __init__(self, directory: str | os.PathLike):
        self.dir = pathlib.Path(directory)
        self.name = f"golden:{directory}"
        if not (self.dir / self.FILES[0]).is_file():
            raise BackendUnavailableError(
                f"backend golden:{directory}: expected a golden case folder with {self.FILES[0]}, "
                f"got {'a missing folder' if not self.dir.is_dir() else 'a folder without it'}"
            )
        self._cache: dict[str, dict[str, np.ndarray]] = {}
        for fname in self.FILES:
            path = self.dir / fname
            if path.exists():
                try:
                    with np.load(path, allow_pickle=False) as z:
                        z.files  # noqa: B018 - reads the archive's directory
                except (OSError, ValueError) as e:
                    raise BackendUnavailableError(
                        f"backend {self.name}: cannot read {path} ({type(e).__name__}: {e})"
                    ) from e
        self._params_json()

    def _load(self, fname: str) -> dict[str, np.ndarray]:
        if fname not in self._cache:
            path = self.dir / fname
            if not path.is_file():
                raise StageUnsupported(f"golden: {path} is missing")
            with np.load(path, allow_pickle=False) as z:
                self._cache[fname] = {k: z[k] for k in z.files}
        return self._cache[fname]

    def recorded_params(self) -> dict[str, Any]:
        """The recording's parameters as `ChainParams` fields (only those it records).

        Read from `params.json`: `case_params` first (gridsize, K / neighbor_count, n_groups,
        group_seed, sequential_sampling, enable_oversampling, neighbor_pool_size, nphotons, N,
        variant, patch_positions, and its `sim` block's N / nphotons), then the top-level `sim`
        block, then upstream's `params_cfg_after` for N, nphotons, enable_oversampling and
        neighbor_pool_size (the keys upstream reads from `params.cfg`). A value absent everywhere
        is not recorded. `group_seed: null` with sequential sampling records no seed (unused).
        """
        meta = self._params_json()
        cp = meta.get("case_params") or {}
        sim = cp.get("sim") or meta.get("sim") or {}
        cfg = meta.get("params_cfg_after") or {}

        def first(*values):
            return next((v for v in values if v is not None), None)

        out = {
            "gridsize": first(cp.get("gridsize"), cfg.get("gridsize")),
            "K": first(cp.get("K"), cp.get("neighbor_count"), cfg.get("neighbor_count")),
            # "nsamples": upstream's own name of the group count, as a recording may hold it
            "n_groups": first(cp.get("n_groups"), cp.get("nsamples"), cfg.get("n_groups")),
            "seed": first(cp.get("group_seed"), cp.get("seed")),
            "sequential": first(cp.get("sequential_sampling"), cp.get("sequential")),
            "oversample": first(
                cp.get("enable_oversampling"), cp.get("oversample"), cfg.get("enable_oversampling")
            ),
            "neighbor_pool_size": first(
                cp.get("neighbor_pool_size"), cfg.get("neighbor_pool_size")
            ),
            "N": first(cp.get("N"), sim.get("N"), cfg.get("N")),
            "nphotons": first(cp.get("nphotons"), sim.get("nphotons"), cfg.get("nphotons")),
            "variant": first(cp.get("variant"), meta.get("variant")),
            "patch_positions": cp.get("patch_positions"),
        }
        for k in ("gridsize", "K", "n_groups", "seed", "neighbor_pool_size", "N"):
            if out[k] is not None:
                out[k] = int(out[k])
        if out["nphotons"] is not None:
            out["nphotons"] = float(out["nphotons"])
        for k in ("sequential", "oversample"):
            if out[k] is not None:
                out[k] = bool(out[k])
        return {k: v for k, v in out.items() if v is not None}

    def _params_json(self) -> dict[str, Any]:
        path = self.dir / "params.json"
        if not path.is_file():
            return {}
        try:
            meta = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise BackendUnavailableError(f"backend {self.name}: cannot read {path} ({e})") from e
        if not isinstance(meta, dict):
            raise BackendUnavailableError(
                f"backend {self.name}: {path} must hold a JSON object, got {type(meta).__name__}"
            )
        return meta

    def provenance(self) -> dict[str, Any]:
        """The recording: its folder, the parameters and upstream commit it names."""
        meta = {}
        with contextlib.suppress(Exception):
            meta = self._params_json()
        out: dict[str, Any] = {"backend": "golden", "spec": self.name, "tree": str(self.dir)}
        for key, name in (("upstream_commit", "commit"), ("upstream_branch", "branch")):
            if isinstance(meta, dict) and meta.get(key):
                out[name] = meta[key]
        if isinstance(meta, dict) and isinstance(meta.get("versions"), dict):
            out["versions"] = meta["versions"]
        out["recorded_params"] = self.recorded_params()
        return out

    def not_computed(self, params: Any) -> tuple[str, ...]:
        """What this recording does not hold for `params` (documented, not INCOMPLETE):
        variant `seed`: the seed copy's gain, the container, the X-derived scales and the scaler
        runs (recorded for `main` only: their input is the main container's X); member patch
        positions: the container (recorded with upstream's)."""
        out = []
        if getattr(params, "variant", "main") != "main":
            out += [
                "normalize.normalize_gain",
                "container",
                "scaler",
                "intensity_scales.seed_era_dataset_derived_scale_normalized_X",
                "intensity_scales.container_norm_Y_I_diffsim_scale_nphotons",
                "intensity_scales.normalized_X_mean_sum_sq_over_HWC",
            ]
        if getattr(params, "patch_positions", "upstream") != "upstream":
            out.append("container")
        return tuple(dict.fromkeys(out))

    def check_input(self, raw) -> None:
        """`HarnessInputError` when `raw` is not this recording's input (same coordinates)."""
        from .errors import HarnessInputError

        try:
            self._check_input(raw)
        except StageUnsupported as e:
            raise HarnessInputError(
                f"{e}: its coordinates differ from {self.input_path()}; cross-check a recording "
                f"on its own input (leave --input out to use it)"
            ) from None

    def input_path(self) -> pathlib.Path:
        return self.dir / "input_rawdata.npz"

    def _check_input(self, raw) -> None:
        inp = self.input_path()
        if inp.is_file():
            key = "__input_xy"
            if key not in self._cache:
                with np.load(inp, allow_pickle=False) as z:
                    self._cache[key] = {"x": z["xcoords"], "y": z["ycoords"]}
            rec = self._cache[key]
            if not (
                np.array_equal(rec["x"], raw.xcoords) and np.array_equal(rec["y"], raw.ycoords)
            ):
                raise StageUnsupported(f"golden: the input is not {inp.name} of this recording")

    def _check_nn(self, raw, nn_indices) -> None:
        self._check_input(raw)
        rec = self._load(self.FILES[0])["nn_indices"]
        if nn_indices is not None and not np.array_equal(np.asarray(nn_indices), rec):
            raise StageUnsupported(
                "golden: the injected nn_indices differ from the recorded groups"
            )

    def grouping(self, raw, params):
        self._check_input(raw)
        rec = self.recorded_params()
        for k in ("gridsize", "K", "n_groups", "seed", "sequential"):
            if k in rec and getattr(params, k) != rec[k]:
                raise StageUnsupported(
                    f"golden: recorded with {k}={rec[k]!r}, asked for {getattr(params, k)!r}"
                )
        return {"nn_indices": self._load(self.FILES[0])["nn_indices"]}

    def grouped(self, raw, params, *, nn_indices=None):
        self._check_nn(raw, nn_indices)
        s1 = self._load(self.FILES[0])
        return {k: s1[k] for k in GROUPED_KEYS if k in s1}

    def normalize(self, raw, params, *, nn_indices=None):
        self._check_nn(raw, nn_indices)
        s2 = self._load(self.FILES[1])
        if params.variant == "seed":
            return {
                "X_full": s2["X_full_loader_normalize_data"]
            }  # the gain of this copy is not recorded
        return {"X_full": s2["X_full"], "normalize_gain": s2["normalize_gain"]}

    def patches(self, raw, params, *, nn_indices=None):
        self._check_nn(raw, nn_indices)
        s1 = self._load(self.FILES[0])
        out = {}
        if "Y" in s1:
            out["Y"] = s1["Y"]
        if "Y_from_sim_patches" in s1:
            out["Y_member"] = s1["Y_from_sim_patches"]
        if not out:
            raise StageUnsupported("golden: no patches recorded")
        return out

    def intensity_scales(self, raw, params, *, nn_indices=None):
        self._check_nn(raw, nn_indices)
        s4 = self._load(self.FILES[3])
        keys = SCALE_KEYS
        if params.variant != "main":  # recorded from the main-variant container X
            keys = tuple(
                k
                for k in keys
                if k
                not in (
                    "seed_era_dataset_derived_scale_normalized_X",
                    "container_norm_Y_I_diffsim_scale_nphotons",
                    "normalized_X_mean_sum_sq_over_HWC",
                )
            )
        return {k: float(s4[k]) for k in keys if k in s4}

    def scaler(self, x, *, scale, trainable=True):
        s4 = self._load(self.FILES[3])
        for prefix in ("seed_era", "main_head"):
            if f"{prefix}_scaler_in" not in s4:
                continue
            if float(s4[f"{prefix}_intensity_scale_in"]) == float(scale) and np.array_equal(
                s4[f"{prefix}_scaler_in"], np.asarray(x)
            ):
                return {
                    "log_scale": s4[f"{prefix}_log_scale"],
                    "scaler_out": s4[f"{prefix}_scaler_out"],
                    "scaler_inv_out": s4[f"{prefix}_scaler_inv_out"],
                }
        raise StageUnsupported(f"golden: no scaler recording for scale {scale!r} and this input")

    def container(self, raw, params, *, nn_indices=None):
        self._check_nn(raw, nn_indices)
        if params.variant != "main":
            raise StageUnsupported("golden: the container was recorded for variant 'main' only")
        if params.patch_positions != "upstream":
            raise StageUnsupported(
                "golden: the container was recorded with upstream patch positions"
            )
        return dict(self._load(self.FILES[2]))


# ---------------------------------------------------------------------------------------------
# upstream and its torch port live in ptycho_jax.crosscheck.upstream / ptycho_jax.crosscheck.torch_port (own process)


def __getattr__(name: str) -> Any:
    if name in ("UpstreamBackend", "upstream_cfg"):
        from . import upstream

        return getattr(upstream, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ---------------------------------------------------------------------------------------------
# resolution


def _user_backend(spec: str) -> Any:
    module_name, _, attr = spec.partition(":")
    form = "package.module:Attribute (e.g. my_port.backend:Backend)"
    if not module_name or not attr or ":" in attr:
        raise BackendUnavailableError(
            f"backend {spec!r}: expected {form} — one colon between an importable module path "
            f"and an attribute path (dots inside each, e.g. pkg.mod:Outer.Inner)"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise BackendUnavailableError(
            f"backend {spec!r}: cannot import module {module_name!r} ({e}); expected {form}"
        ) from e
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as e:
            raise BackendUnavailableError(
                f"backend {spec!r}: module {module_name!r} has no attribute {attr!r}"
            ) from e
    if isinstance(obj, type) or (callable(obj) and not any(hasattr(obj, s) for s in STAGES)):
        try:
            obj = obj()
        except BackendUnavailableError:
            raise
        except Exception as e:  # noqa: BLE001 - a port's constructor failing is bad input, exit 2
            raise BackendUnavailableError(
                f"backend {spec!r}: {attr}() raised {type(e).__name__}: {e}"
            ) from e
    if not any(callable(getattr(obj, s, None)) for s in STAGES):
        raise BackendUnavailableError(
            f"backend {spec!r}: expected an object with stage methods "
            f"{list(STAGES)}, got {type(obj).__name__}"
        )
    if not getattr(obj, "name", None):
        try:
            obj.name = spec
        except AttributeError:
            pass
    return obj


def resolve_backend(
    spec: "str | Backend",
    *,
    upstream_repo: "str | os.PathLike | None" = None,
    python: "str | os.PathLike | None" = None,
) -> Any:
    """The backend named by `spec`: `jax`, `tf`, `upstream`, `upstream:PATH`, `upstream@REF`,
    `ptycho_torch` (alias `torch`, with the same `:PATH` / `@REF` forms), `golden:DIR` or
    `package.module:Attribute`.

    A `module:attribute` may name a backend instance, a class (instantiated without arguments) or
    a zero-argument factory. A non-string `spec` is returned unchanged. `upstream_repo` is the
    git checkout `@REF` reads (default `PTYCHO_UPSTREAM_REPO`); `python` the interpreter of an
    upstream tree's own environment (default `PTYCHO_UPSTREAM_PYTHON`).

    Raises:
        BackendUnavailableError: unknown name, missing dependency, missing folder or attribute,
            a tree that cannot be imported.
        HarnessInputError: a tree path without `ptycho/params.py`, a ref git does not know.
    """
    if not isinstance(spec, str):
        return spec
    if spec == "jax":
        return JaxBackend()
    if spec == "tf":
        return TFBackend()
    from . import trees

    if trees.is_tree_spec(spec):
        tree = trees.parse_tree_spec(spec, repo=upstream_repo)
        py = None if python is None else pathlib.Path(python)
        if spec.startswith("upstream"):
            from .upstream import UpstreamBackend

            return UpstreamBackend(tree=tree, python=py)
        from .torch_port import TorchPortBackend

        return TorchPortBackend(tree=tree, python=py)
    if spec.startswith("golden:"):
        return GoldenBackend(spec[len("golden:") :])
    if ":" in spec:
        return _user_backend(spec)
    raise BackendUnavailableError(
        f"backend {spec!r}: expected jax, tf, upstream, ptycho_torch, golden:DIR or "
        f"package.module:Attribute (e.g. my_port.backend:Backend); an upstream tree also as "
        f"upstream:PATH or upstream@REF"
    )
