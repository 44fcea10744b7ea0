"""Worker process that runs upstream PtychoPINN (`ptycho`, `ptycho_torch`) for crosscheck.

specs/crosscheck.md §2.3, §2.5. Runs under the Python environment that hosts upstream (TF 2.18,
tf-keras, NumPy 2.0, torch CPU), never under ours: this file imports only the standard library
and NumPy at module level, and upstream's packages on demand (never `ptycho_jax`, never JAX).

Protocol: one JSON request per line on stdin, one JSON reply per line on the file descriptor that
was stdout when the process started. Everything upstream prints (Python `print`, C-level writes
to fds 1 and 2, TF logs) goes to a capture file instead; each reply carries the text captured
while the request ran (`"output"`). Arrays travel as NPZ files named in the request.

Requests: `{"op": "chain" | "scaler" | "state" | "torch_chain" | "torch_scaler", ...}`; replies
`{"ok": true, "output": str, ...}` or `{"ok": false, "kind": "unsupported" | "error",
"error": str, "output": str}`.
"""

import contextlib
import json
import math
import os
import sys
import tempfile
import traceback
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

try:  # imported as part of the `crosscheck` package (by crosscheck.upstream)
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
# upstream TF chain


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


def op_chain(req: Mapping[str, Any]) -> dict[str, Any]:
    """Every stage of upstream's TF chain for one parameter set (own or injected groups)."""
    import ptycho.params as uparams
    from ptycho import loader, raw_data, train_pinn

    p = req["params"]
    with np.load(req["raw"], allow_pickle=False) as z:
        raw = {k: z[k] for k in z.files}
    N = int(p["N"]) if p.get("N") is not None else int(raw["diff3d"].shape[-1])
    nph = float(p["nphotons"])
    out: dict[str, Any] = {}
    with upstream_cfg(uparams, _cfg_values(p, N)):
        up = raw_data.RawData(
            raw["xcoords"],
            raw["ycoords"],
            raw["xcoords_start"],
            raw["ycoords_start"],
            raw["diff3d"],
            raw["probeGuess"],
            raw["scan_index"],
            **_raw_kwargs(raw),
        )
        if req.get("nn") is None:
            dset = up.generate_grouped_data(
                N,
                K=p["K"],
                nsamples=p["n_groups"],
                seed=p["seed"],
                sequential_sampling=p["sequential"],
                gridsize=p["gridsize"],
                enable_oversampling=p["oversample"],
                neighbor_pool_size=p.get("neighbor_pool_size"),
            )
        else:
            with np.load(req["nn"], allow_pickle=False) as z:
                nn = z["nn_indices"]
            # upstream's own builder of the grouped dict from given groups
            dset = up._generate_dataset_from_groups(nn, N, p["K"], p["gridsize"])
        dset = dict(dset)
        out["grouping.nn_indices"] = np.asarray(dset["nn_indices"])
        out["grouped.diffraction"] = np.asarray(dset["diffraction"])
        for k in COORD_KEYS:
            if dset.get(k) is not None:
                out[f"grouped.{k}"] = np.asarray(dset[k])

        # normalize: main = raw_data.normalize_data (inside the grouping), seed = loader's copy
        if p["variant"] == "seed":
            X_full = np.asarray(loader.normalize_data(dset, N))
        else:
            X_full = np.asarray(dset["X_full"])
        out["normalize.X_full"] = X_full
        out["normalize.normalize_gain"] = recover_gain(X_full, dset["diffraction"])

        # patches: Y as upstream builds it; Y_member from get_image_patches at own positions
        member = None
        if dset.get("Y") is not None:
            out["patches.Y"] = np.asarray(dset["Y"])
        if "Y" not in raw and raw.get("objectGuess") is not None:
            cnn = np.asarray(dset["coords_nn"])
            member = np.asarray(
                raw_data.get_image_patches(
                    raw["objectGuess"], cnn, np.zeros_like(cnn), N=N, gridsize=p["gridsize"]
                )
            )
            out["patches.Y_member"] = member

        # container: loader.load on the variant's X and the requested patch positions
        cdset = dict(dset, X_full=X_full)
        if p.get("patch_positions") == "member" and member is not None:
            cdset["Y"] = member
        container = loader.load(lambda: cdset, raw["probeGuess"], which=None, create_split=False)
        for k in CONTAINER_KEYS:
            v = getattr(container, k, None)
            if v is not None:
                out[f"container.{k}"] = np.asarray(v)
        if getattr(container, "Y", None) is not None:
            out["container.Y_complex"] = np.asarray(container.Y)

        # scales: upstream's functions where it has them, the reference formulas otherwise
        X = out["container.X"]
        seed_scale, seed_E = dataset_scale(X, nph, N)
        raw_scale, raw_E = dataset_scale(raw["diff3d"], nph)
        g_scale, g_E = dataset_scale(dset["diffraction"], nph)
        scales = {
            "fallback_scale_closed_form": math.sqrt(nph) / (N / 2),
            "main_head_train_pinn_calculate_intensity_scale": float(
                train_pinn.calculate_intensity_scale(container)
            ),
            "seed_era_dataset_derived_scale_normalized_X": seed_scale,
            "raw_E_batch_sum_psi2": raw_E,
            "raw_dataset_scale": raw_scale,
            "grouped_E_batch_sum_psi2_over_HWC": g_E,
            "grouped_dataset_scale_over_HWC": g_scale,
            "container_norm_Y_I_diffsim_scale_nphotons": float(np.asarray(container.norm_Y_I)),
            "normalized_X_mean_sum_sq_over_HWC": seed_E,
        }
        for k, v in scales.items():
            out[f"intensity_scales.{k}"] = np.float64(v)
    np.savez(req["out"], **out)
    return {}


def op_scaler(req: Mapping[str, Any]) -> dict[str, Any]:
    """Upstream's `IntensityScaler` / `IntensityScaler_inv` layers on x, sharing its variable."""
    import ptycho.params as uparams
    import tensorflow as tf
    from ptycho import model

    with np.load(req["x"], allow_pickle=False) as z:
        x = z["x"]
    with upstream_log_scale(model, uparams, req["scale"], req.get("trainable", True)) as var:
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
    return {}


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
                    continue
                traceback.print_exc()
                reply = {"ok": False, "kind": "error", "error": f"{type(e).__name__}: {e}"}
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
