"""Worker process that runs upstream PtychoPINN (`ptycho`, `ptycho_torch`) for crosscheck.

specs/crosscheck.md §2.3, §2.5. Runs under the Python environment that hosts upstream (TF 2.18,
tf-keras, NumPy 2.0, torch CPU), never under ours: this file imports only the standard library
and NumPy at module level, and upstream's packages on demand (never `ptycho_jax`, never JAX).

Protocol: one JSON request per line on stdin, one JSON reply per line on the file descriptor that
was stdout when the process started. Everything upstream prints (Python `print`, C-level writes
to fds 1 and 2, TF logs) goes to a capture file instead; each reply carries the text captured
while the request ran (`"output"`). Arrays travel as NPZ files named in the request.

Requests: `{"op": "probe" | "stage" | "chain" | "scaler" | "state" | "torch_chain" |
"torch_scaler", ...}`; replies `{"ok": true, "output": str, ...}` or `{"ok": false, "kind":
"unsupported" | "import_error" | "error", "error": str (one line), "traceback": str, "output": str}`.
Before any stage runs, `probe` checks the tree per stage (methods, signatures, log-scale layout):
a stage the tree cannot answer is `unsupported` with one line saying what is missing.
"""

import os
import sys

# This folder is sys.path[0] when run as a script: move it last, so a module of the harness
# never shadows the standard library's of the same name (it needs only `_keys` from here).
_HERE = os.path.dirname(os.path.abspath(__file__))
if sys.path and os.path.abspath(sys.path[0] or os.curdir) == _HERE:
    sys.path.append(sys.path.pop(0))

import contextlib  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import tempfile  # noqa: E402
import traceback  # noqa: E402
from collections.abc import Iterator, Mapping  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

try:  # imported as part of the `crosscheck` package (by ptycho_jax.crosscheck.upstream)
    from ._keys import CONTAINER_KEYS, COORD_KEYS
except ImportError:  # run as the worker script: this folder is sys.path[0]
    from _keys import CONTAINER_KEYS, COORD_KEYS


class Unsupported(Exception):
    """Upstream cannot answer this request (reported as a skipped stage)."""


@contextlib.contextmanager
def upstream_cfg(params_module: Any, values: Mapping[str, Any]) -> Iterator[dict]:
    """Set keys of upstream's global `params.cfg` for the duration, then restore it in place.

    The dict object is kept (upstream modules hold references to it); its previous contents and
    the global legacy NumPy RNG state (upstream reseeds it) are restored even on error.
    """
    cfg = params_module.cfg
    saved = dict(cfg)
    rng_state = np.random.get_state()
    try:
        cfg.update(values)
        yield cfg
    finally:
        cfg.clear()
        cfg.update(saved)
        np.random.set_state(rng_state)


@contextlib.contextmanager
def upstream_log_scale(model_module: Any, params_module: Any, scale: float, trainable: bool):
    """Point upstream's shared `log_scale` variable at `scale` for the duration, then restore it.

    Upstream keeps one process-wide variable in `ptycho.model._lazy_cache['log_scale']`, created
    by `_get_log_scale()` from `params.cfg['intensity_scale']` on first use. If it exists, its
    value and trainability are kept and restored; if not, it is created by upstream's own
    `_get_log_scale()` under the requested scale and removed again afterwards.
    """
    cache = model_module._lazy_cache
    had = "log_scale" in cache
    old_var = cache.get("log_scale")
    old_value = None if old_var is None else old_var.numpy()
    values = {"intensity_scale": float(scale), "intensity_scale.trainable": bool(trainable)}
    with upstream_cfg(params_module, values):
        try:
            if had:
                del cache["log_scale"]
            var = model_module._get_log_scale()  # upstream creates it: float32(np.log(scale))
            yield var
        finally:
            if had:
                cache["log_scale"] = old_var
                old_var.assign(old_value)
            else:
                cache.pop("log_scale", None)


# ---------------------------------------------------------------------------------------------
# numerics shared by the report quantities upstream has no function for (reference §8.2, §8.4)


def mean_energy_f64(x: np.ndarray) -> float:
    """Mean over the batch axis of the float64 sum of squares over all other axes (TF sum)."""
    # its own Σx² on purpose: upstream's side computes with TF, independent of ptycho_jax's
    import tensorflow as tf

    x64 = tf.cast(tf.convert_to_tensor(np.asarray(x)), tf.float64)
    axes = tuple(range(1, len(x64.shape)))
    return float(tf.reduce_mean(tf.reduce_sum(x64 * x64, axis=axes)).numpy())


def dataset_scale(x: np.ndarray, nphotons: float, N: int | None = None) -> tuple[float, float]:
    """`(sqrt(nphotons / E), E)`; closed form `sqrt(nphotons)/(N/2)` when E <= 1e-12 and N given."""
    E = mean_energy_f64(x)
    if E > 1e-12 or N is None:
        return math.sqrt(nphotons / E), E
    return math.sqrt(nphotons) / (N / 2), E


def recover_gain(out: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """The float32 g for which `out == float32(g) * frames` element for element (upstream's gain).

    Upstream's `normalize_data` multiplies the frames by a float32 factor it does not return.
    The quotient of the largest frame value is within one float32 step of it; the candidate that
    reproduces every output element bit for bit is returned.
    """
    out = np.asarray(out, np.float32)
    frames = np.asarray(frames, np.float32)
    i = int(np.argmax(np.abs(frames)))
    q = np.float32(out.flat[i] / frames.flat[i])
    up, down = [q], [q]
    for _ in range(3):  # q and its neighbours up to 3 float32 steps away, nearest first
        up.append(np.nextafter(up[-1], np.float32(np.inf)))
        down.append(np.nextafter(down[-1], np.float32(-np.inf)))
    for c in [q] + [v for pair in zip(up[1:], down[1:], strict=True) for v in pair]:
        if np.array_equal(np.float32(c) * frames, out):
            return np.float32(c)
    raise RuntimeError("normalize_data output is not a float32 scalar times the frames")


# ---------------------------------------------------------------------------------------------
# probing: what the tree offers, stage by stage (specs/crosscheck.md §2.3.2)


class TreeImportError(Exception):
    """The tree's `ptycho` package cannot be imported at all (reported as bad input, exit 2)."""


def _first_line(e: BaseException) -> str:
    text = f"{type(e).__name__}: {e}".strip()
    return text.splitlines()[0] if text else type(e).__name__


def _module(name: str) -> Any:
    """Import `name` from the tree, or raise Unsupported naming the module and its first error."""
    import importlib

    try:
        return importlib.import_module(name)
    except Exception as e:  # noqa: BLE001 - any import failure is the tree's, reported in one line
        raise Unsupported(f"`{name}` cannot be imported ({_first_line(e)})") from e


def _parameters(fn: Any) -> tuple[list[str], bool]:
    """(parameter names, takes **kwargs) of `fn`."""
    import inspect

    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return [], True
    names = list(sig.parameters)
    return names, any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values())


def _require(owner: Any, attr: str, where: str, kwargs: tuple[str, ...] = ()) -> Any:
    """`owner.attr`, checked to exist and to take `kwargs`; else Unsupported in one line."""
    fn = getattr(owner, attr, None)
    if fn is None:
        raise Unsupported(f"the tree has no `{where}.{attr}`")
    names, var_kw = _parameters(fn)
    missing = [k for k in kwargs if k not in names]
    if missing and not var_kw:
        shown = ", ".join(n for n in names if n != "self") or "nothing"
        raise Unsupported(
            f"`{where}.{attr}` takes no {', '.join(repr(k) for k in missing)} (it takes {shown})"
        )
    return fn


def _grouping_kwargs(p: Mapping[str, Any]) -> tuple[str, ...]:
    """The keyword arguments `generate_grouped_data` must take for these parameters."""
    need = ["K", "nsamples", "gridsize"]  # upstream's own keyword names (its group count: nsamples)
    if p.get("seed") is not None and not p.get("sequential"):
        need.append("seed")
    if p.get("sequential"):
        need.append("sequential_sampling")
    if p.get("oversample"):
        need += ["enable_oversampling", "neighbor_pool_size"]
    return tuple(need)


def scaler_layout(model: Any) -> str:
    """How the tree keeps the shared log-scale variable: `lazy_cache` (`_lazy_cache` +
    `_get_log_scale()`, upstream main) or `module_variable` (a module-level `log_scale`
    tf.Variable, older trees); Unsupported otherwise."""
    if isinstance(getattr(model, "_lazy_cache", None), dict) and callable(
        getattr(model, "_get_log_scale", None)
    ):
        return "lazy_cache"
    var = getattr(model, "log_scale", None)
    if var is not None and hasattr(var, "assign") and hasattr(var, "numpy"):
        return "module_variable"
    raise Unsupported(
        "`ptycho.model` keeps no log-scale variable the harness knows (neither "
        "`_lazy_cache`/`_get_log_scale()` nor a module-level `log_scale` variable)"
    )


def _check_stage(stage: str, p: Mapping[str, Any]) -> None:
    """Raise Unsupported (one line) when the tree cannot answer `stage` for parameters `p`."""
    raw_data = _module("ptycho.raw_data")
    RawData = _require(raw_data, "RawData", "ptycho.raw_data")
    _require(RawData, "__init__", "RawData", ("objectGuess",))
    if stage == "grouping":
        _require(RawData, "generate_grouped_data", "RawData", _grouping_kwargs(p))
    elif stage in ("grouped", "patches", "container"):
        _require(RawData, "_generate_dataset_from_groups", "RawData")
    if stage == "normalize":
        if p.get("variant") == "seed":
            _require(_module("ptycho.loader"), "normalize_data", "ptycho.loader")
        elif getattr(RawData, "_generate_dataset_from_groups", None) is None:
            _require(raw_data, "normalize_data", "ptycho.raw_data")
    if stage == "patches":
        _require(raw_data, "get_image_patches", "ptycho.raw_data", ("N", "gridsize"))
    if stage == "container":
        _require(_module("ptycho.loader"), "load", "ptycho.loader", ("which", "create_split"))
    if stage == "scaler":
        model = _module("ptycho.model")
        scaler_layout(model)
        _require(model, "IntensityScaler", "ptycho.model")
        _require(model, "IntensityScaler_inv", "ptycho.model")


def op_probe(req: Mapping[str, Any]) -> dict[str, Any]:
    """Versions inside this worker and, per stage, None or why the tree cannot answer it.

    `import ptycho.params` failing is a TreeImportError (the tree is unusable); any other module
    failing costs only the stages that need it.
    """
    import importlib
    import platform

    versions = {"python": platform.python_version(), "executable": sys.executable}
    try:
        uparams = importlib.import_module("ptycho.params")
    except Exception as e:  # noqa: BLE001 - reported as the tree's import failure
        raise TreeImportError(f"`import ptycho.params` failed: {_first_line(e)}") from e
    if not isinstance(getattr(uparams, "cfg", None), dict):
        raise TreeImportError("`ptycho.params` has no `cfg` dict")
    for mod in ("numpy", "scipy", "tensorflow", "tf_keras", "keras", "torch"):
        m = sys.modules.get(mod)
        if m is None and mod in ("numpy", "tensorflow"):
            with contextlib.suppress(Exception):
                m = importlib.import_module(mod)
        if m is not None:
            versions[mod] = str(getattr(m, "__version__", "?"))
    versions["ptycho"] = os.path.dirname(os.path.dirname(os.path.abspath(uparams.__file__)))
    stages = {}
    p = dict(req.get("params") or {})
    for stage in req.get("stages") or ():
        try:
            _check_stage(stage, p)
            stages[stage] = None
        except Unsupported as e:
            stages[stage] = str(e)
    return {"versions": versions, "stages": stages}


# ---------------------------------------------------------------------------------------------
# upstream TF chain, one stage per request


def _raw_kwargs(z: Mapping[str, np.ndarray]) -> dict[str, Any]:
    kw = {}
    for k in ("objectGuess", "Y"):
        if k in z:
            kw[k] = z[k]
    return kw


def _cfg_values(p: Mapping[str, Any], N: int) -> dict[str, Any]:
    vals = {
        "N": N,
        "gridsize": p["gridsize"],
        "nphotons": float(p["nphotons"]),
        "neighbor_count": p["K"],
        "n_groups": p["n_groups"],
        "sequential_sampling": bool(p["sequential"]),
        "enable_oversampling": bool(p["oversample"]),
        "intensity_scale.trainable": bool(p["trainable"]),
        "use_xla_translate": True,
    }
    if p.get("neighbor_pool_size") is not None:
        vals["neighbor_pool_size"] = p["neighbor_pool_size"]
    return vals


class _Chain:
    """Upstream's objects for one (raw, parameters, groups) request key, built on demand.

    Each stage request builds only what it needs (the grouped dict, the container) and keeps it
    for the later stages of the same key, so one missing method costs only the stages that need
    it. Runs inside `upstream_cfg` (the caller's scope).
    """

    def __init__(self, req: Mapping[str, Any]):
        self.p = dict(req["params"])
        with np.load(req["raw"], allow_pickle=False) as z:
            self.raw = {k: z[k] for k in z.files}
        p = self.p
        self.N = int(p["N"]) if p.get("N") is not None else int(self.raw["diff3d"].shape[-1])
        self.nn = None
        if req.get("nn") is not None:
            with np.load(req["nn"], allow_pickle=False) as z:
                self.nn = z["nn_indices"]
        self._up = self._dset = self._container = self._X = None
        self.notes: list[str] = []

    def rawdata(self) -> Any:
        if self._up is None:
            from ptycho import raw_data

            r = self.raw
            self._up = raw_data.RawData(
                r["xcoords"],
                r["ycoords"],
                r["xcoords_start"],
                r["ycoords_start"],
                r["diff3d"],
                r["probeGuess"],
                r["scan_index"],
                **_raw_kwargs(r),
            )
        return self._up

    def grouped_by_upstream(self) -> dict[str, Any]:
        """The grouped dict from upstream's own code (own groups, or the injected ones)."""
        if self._dset is None:
            p, up = self.p, self.rawdata()
            if self.nn is None:
                given = {
                    "K": p["K"],
                    "nsamples": p["n_groups"],  # upstream's name of the group count
                    "gridsize": p["gridsize"],
                    "seed": p.get("seed"),
                    "sequential_sampling": p.get("sequential"),
                    "enable_oversampling": p.get("oversample"),
                    "neighbor_pool_size": p.get("neighbor_pool_size"),
                }
                kw = {k: given[k] for k in _grouping_kwargs(p)}
                dset = up.generate_grouped_data(self.N, **kw)
            else:
                # upstream's own builder of the grouped dict from given groups
                dset = up._generate_dataset_from_groups(self.nn, self.N, p["K"], p["gridsize"])
            self._dset = dict(dset)
        return self._dset

    def grouped_diffraction(self) -> np.ndarray:
        """The grouped frames: upstream's dict where the tree builds it, else the plain gather
        `diff3d[nn]` in upstream's (B, N, N, C) layout (a note says so)."""
        from ptycho import raw_data

        if getattr(raw_data.RawData, "_generate_dataset_from_groups", None) is not None:
            return np.asarray(self.grouped_by_upstream()["diffraction"])
        if self.nn is None:
            raise Unsupported("no groups to gather (the tree has no grouped-dict builder)")
        self.notes.append(
            "the tree has no `RawData._generate_dataset_from_groups`: its `normalize_data` ran on "
            "the harness's gather `diff3d[nn_indices]` (B, N, N, C)"
        )
        return np.transpose(self.raw["diff3d"][self.nn], [0, 2, 3, 1])

    def X_full(self) -> np.ndarray:
        """The variant's normalised frames: main = `raw_data.normalize_data` (inside the grouped
        dict where the tree builds one), seed = `loader.normalize_data`."""
        if self._X is None:
            from ptycho import raw_data

            if self.p["variant"] == "seed":
                from ptycho import loader

                self._X = np.asarray(
                    loader.normalize_data({"diffraction": self.grouped_diffraction()}, self.N)
                    if getattr(raw_data.RawData, "_generate_dataset_from_groups", None) is None
                    else loader.normalize_data(self.grouped_by_upstream(), self.N)
                )
            elif getattr(raw_data.RawData, "_generate_dataset_from_groups", None) is not None:
                self._X = np.asarray(self.grouped_by_upstream()["X_full"])
            else:
                self._X = np.asarray(
                    raw_data.normalize_data({"diffraction": self.grouped_diffraction()}, self.N)
                )
        return self._X

    def member_patches(self) -> np.ndarray | None:
        from ptycho import raw_data

        if "Y" in self.raw or self.raw.get("objectGuess") is None:
            return None
        cnn = np.asarray(self.grouped_by_upstream()["coords_nn"])
        return np.asarray(
            raw_data.get_image_patches(
                self.raw["objectGuess"],
                cnn,
                np.zeros_like(cnn),
                N=self.N,
                gridsize=self.p["gridsize"],
            )
        )

    def container(self) -> Any:
        """`loader.load` on the variant's X and the requested patch positions."""
        if self._container is None:
            from ptycho import loader

            dset = self.grouped_by_upstream()
            cdset = dict(dset, X_full=self.X_full())
            if self.p.get("patch_positions") == "member":
                member = self.member_patches()
                if member is not None:
                    cdset["Y"] = member
            self._container = loader.load(
                lambda: cdset, self.raw["probeGuess"], which=None, create_split=False
            )
        return self._container


def _stage_grouping(ch: _Chain) -> dict[str, Any]:
    return {"grouping.nn_indices": np.asarray(ch.grouped_by_upstream()["nn_indices"])}


def _stage_grouped(ch: _Chain) -> dict[str, Any]:
    dset = ch.grouped_by_upstream()
    out = {"grouped.diffraction": np.asarray(dset["diffraction"])}
    for k in COORD_KEYS:
        if dset.get(k) is not None:
            out[f"grouped.{k}"] = np.asarray(dset[k])
    return out


def _stage_normalize(ch: _Chain) -> dict[str, Any]:
    X = ch.X_full()
    return {
        "normalize.X_full": X,
        "normalize.normalize_gain": recover_gain(X, ch.grouped_diffraction()),
    }


def _stage_patches(ch: _Chain) -> dict[str, Any]:
    out = {}
    dset = ch.grouped_by_upstream()
    if dset.get("Y") is not None:
        out["patches.Y"] = np.asarray(dset["Y"])
    member = ch.member_patches()
    if member is not None:
        out["patches.Y_member"] = member
    return out


def _stage_container(ch: _Chain) -> dict[str, Any]:
    container = ch.container()
    out = {}
    for k in CONTAINER_KEYS:
        v = getattr(container, k, None)
        if v is not None:
            out[f"container.{k}"] = np.asarray(v)
    if getattr(container, "Y", None) is not None:
        out["container.Y_complex"] = np.asarray(container.Y)
    return out


def _stage_intensity_scales(ch: _Chain) -> dict[str, Any]:
    """Upstream's scale functions where it has them, the reference formulas otherwise; the
    container-derived scales are left out (with the reason) when the tree builds no container."""
    nph, N = float(ch.p["nphotons"]), ch.N
    raw_scale, raw_E = dataset_scale(ch.raw["diff3d"], nph)
    g_scale, g_E = dataset_scale(ch.grouped_diffraction(), nph)
    scales: dict[str, float] = {
        "fallback_scale_closed_form": math.sqrt(nph) / (N / 2),
        "raw_E_batch_sum_psi2": raw_E,
        "raw_dataset_scale": raw_scale,
        "grouped_E_batch_sum_psi2_over_HWC": g_E,
        "grouped_dataset_scale_over_HWC": g_scale,
    }
    try:
        _check_stage("container", ch.p)
        from ptycho import train_pinn

        container = ch.container()
        seed_scale, seed_E = dataset_scale(np.asarray(container.X), nph, N)
        scales.update(
            {
                "main_head_train_pinn_calculate_intensity_scale": float(
                    train_pinn.calculate_intensity_scale(container)
                ),
                "seed_era_dataset_derived_scale_normalized_X": seed_scale,
                "container_norm_Y_I_diffsim_scale_nphotons": float(np.asarray(container.norm_Y_I)),
                "normalized_X_mean_sum_sq_over_HWC": seed_E,
            }
        )
    except Unsupported as e:
        ch.notes.append(f"the container-derived scales are not computed: {e}")
    return {f"intensity_scales.{k}": np.float64(v) for k, v in scales.items()}


STAGE_FUNCTIONS = {
    "grouping": _stage_grouping,
    "grouped": _stage_grouped,
    "normalize": _stage_normalize,
    "patches": _stage_patches,
    "container": _stage_container,
    "intensity_scales": _stage_intensity_scales,
}

_CHAINS: dict[tuple, _Chain] = {}
MAX_CHAINS = 4


def _chain_for(req: Mapping[str, Any]) -> _Chain:
    """The memoised `_Chain` of this request's raw file, parameters and groups."""
    import hashlib

    nn_digest = None
    if req.get("nn") is not None:
        with open(req["nn"], "rb") as f:
            nn_digest = hashlib.sha1(f.read()).hexdigest()
    key = (req["raw"], json.dumps(req["params"], sort_keys=True), nn_digest)
    ch = _CHAINS.get(key)
    if ch is None:
        while len(_CHAINS) >= MAX_CHAINS:
            _CHAINS.pop(next(iter(_CHAINS)))
        ch = _CHAINS[key] = _Chain(req)
    return ch


def op_stage(req: Mapping[str, Any]) -> dict[str, Any]:
    """One stage of upstream's TF chain, after checking the tree can answer it."""
    import ptycho.params as uparams

    stage = req["stage"]
    fn = STAGE_FUNCTIONS.get(stage)
    if fn is None:
        raise ValueError(f"unknown stage {stage!r}")
    _check_stage(stage, req["params"])
    ch = _chain_for(req)
    ch.notes = []
    with upstream_cfg(uparams, _cfg_values(ch.p, ch.N)):
        out = fn(ch)
    np.savez(req["out"], **out)
    return {"notes": list(dict.fromkeys(ch.notes))}


def op_chain(req: Mapping[str, Any]) -> dict[str, Any]:
    """Every stage of upstream's TF chain in one request (the benchmark's timer)."""
    import ptycho.params as uparams

    ch = _Chain(req)
    out: dict[str, Any] = {}
    with upstream_cfg(uparams, _cfg_values(ch.p, ch.N)):
        for stage, fn in STAGE_FUNCTIONS.items():
            if stage != "grouping" or ch.nn is None:
                out.update(fn(ch))
    np.savez(req["out"], **out)
    return {}


@contextlib.contextmanager
def _module_log_scale(model_module: Any, scale: float, trainable: bool):
    """Older trees: a module-level `log_scale` tf.Variable (made at import); its value is set to
    float32(log(scale)) for the duration and restored afterwards. Its trainability cannot change."""
    var = model_module.log_scale
    old = var.numpy()
    try:
        var.assign(np.float32(np.log(scale)))
        yield var
    finally:
        var.assign(old)


def op_scaler(req: Mapping[str, Any]) -> dict[str, Any]:
    """Upstream's `IntensityScaler` / `IntensityScaler_inv` layers on x, sharing its variable,
    driven through whichever log-scale layout the tree has (`scaler_layout`)."""
    import ptycho.params as uparams
    import tensorflow as tf

    _check_stage("scaler", {})
    model = _module("ptycho.model")
    layout = scaler_layout(model)
    with np.load(req["x"], allow_pickle=False) as z:
        x = z["x"]
    trainable = req.get("trainable", True)
    notes = []
    if layout == "lazy_cache":
        scope = upstream_log_scale(model, uparams, req["scale"], trainable)
    else:
        scope = _module_log_scale(model, req["scale"], trainable)
        notes.append(
            "the tree keeps a module-level `log_scale` variable (older layout): its value was set"
        )
    with scope as var:
        fwd = model.IntensityScaler()
        inv = model.IntensityScaler_inv()
        xt = tf.convert_to_tensor(np.asarray(x, np.float32))
        y = fwd([xt])
        back = inv([y])
        res = {
            "log_scale": np.asarray(var.numpy(), np.float32),
            "scaler_out": np.asarray(y),
            "scaler_inv_out": np.asarray(back),
        }
    np.savez(req["out"], **res)
    return {"notes": notes, "layout": layout}


def op_state(req: Mapping[str, Any]) -> dict[str, Any]:
    """Upstream's global state, for tests: `params.cfg`, RNG digest, the log-scale variable."""
    import hashlib

    import ptycho.params as uparams

    st = np.random.get_state()
    rng = hashlib.sha1(st[1].tobytes() + repr(st[2:]).encode()).hexdigest()
    model = sys.modules.get("ptycho.model")
    log_scale = None
    if model is not None and "log_scale" in model._lazy_cache:
        log_scale = float(model._lazy_cache["log_scale"].numpy())
    cfg = {k: repr(v) for k, v in uparams.cfg.items()}
    return {"cfg": cfg, "cfg_id": id(uparams.cfg), "rng": rng, "log_scale": log_scale}


def op_seed_global_rng(req: Mapping[str, Any]) -> dict[str, Any]:
    """Seed the global legacy RNG and set a `params.cfg` key (tests: state is kept)."""
    import ptycho.params as uparams

    np.random.seed(int(req["seed"]))
    uparams.cfg.update(req.get("cfg") or {})
    if req.get("log_scale") is not None:
        from ptycho import model

        with upstream_cfg(uparams, {"intensity_scale": float(req["log_scale"])}):
            model._lazy_cache.pop("log_scale", None)
            model._get_log_scale()
    return {}


OPS = {
    "probe": op_probe,
    "stage": op_stage,
    "chain": op_chain,
    "scaler": op_scaler,
    "state": op_state,
    "seed_global_rng": op_seed_global_rng,
}


# ---------------------------------------------------------------------------------------------
# main loop


def main() -> int:
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    cap_fd, cap_path = tempfile.mkstemp(prefix="ptycho-upstream-", suffix=".log")
    os.dup2(cap_fd, 1)
    os.dup2(cap_fd, 2)
    sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
    sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)
    pos = 0
    here = os.path.dirname(os.path.abspath(__file__))
    if here not in sys.path:
        sys.path.append(here)

    def captured() -> str:
        nonlocal pos
        sys.stdout.flush()
        sys.stderr.flush()
        with open(cap_path, "rb") as f:
            f.seek(pos)
            data = f.read()
        pos += len(data)
        return data.decode("utf-8", "replace")

    try:
        for line in sys.stdin:
            if not line.strip():
                continue
            req = json.loads(line)
            op = req.get("op")
            try:
                fn = OPS.get(op)
                if fn is None and str(op).startswith("torch_"):
                    import _torch_worker_ops  # the torch-port operations (same process)

                    fn = _torch_worker_ops.OPS.get(op)
                if fn is None:
                    raise ValueError(f"unknown op {op!r}")
                reply = {"ok": True, **fn(req)}
            except Exception as e:  # noqa: BLE001 - reported to the parent, which decides
                if type(e).__name__ == "Unsupported":  # also the torch ops' own class
                    reply = {"ok": False, "kind": "unsupported", "error": str(e)}
                    reply["output"] = captured()
                    proto.write(json.dumps(reply) + "\n")
                    proto.flush()
                    continue
                tb = traceback.format_exc()
                kind = "import_error" if isinstance(e, TreeImportError) else "error"
                reply = {"ok": False, "kind": kind, "error": _first_line(e), "traceback": tb}
            reply["output"] = captured()
            proto.write(json.dumps(reply) + "\n")
            proto.flush()
    finally:
        os.close(cap_fd)
        with contextlib.suppress(OSError):
            os.unlink(cap_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
