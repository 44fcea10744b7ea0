"""Worker operations for upstream's PyTorch port `ptycho_torch` (specs/crosscheck.md §2.5).

Imported by `_upstream_worker.py` inside the upstream environment (NumPy, torch, upstream's
code; never JAX). Each stage runs the port's own functions in the order its in-memory dataset
builder (`ptycho_torch.dataloader.PtychoDataset.from_np`, which itself needs `tensordict`, absent
from the upstream environment) calls them:

* grouping: `patch_generator.group_coords` with `patch_generator.get_neighbor_indices`
  ('Nearest'), every scan point valid (no x/y bounds), `n_subsample = 1`, seeded through the
  global legacy RNG it uses (restored afterwards); `nn_indices.astype(int64)` as `from_np`.
* grouped: `images = diff[nn]` (M, C, H, W) float32 tensor; `coords_global` float32
  (M, C, 1, 2); `patch_generator.get_relative_coords` → centre / relative (stored float32);
  start coordinates are zeros in `from_np`.
* normalize: `helper.get_rms_scaling_factor(diff, DataConfig(normalize='Batch'))` over all raw
  frames; X = images · factor (the factor is the gain).
* patches: `datagen.datagen.get_image_patches(object, x, y, data_config)` at each member's own
  position (`Y_member`), in chunks of 64; the port has no mirrored-position `Y`.
* intensity_scales: `helper.derive_intensity_scale_from_amplitudes(X, nphotons)`.
* scaler: `model.IntensityScalerModule(ModelConfig(...)).scale` / `.inv_scale`; `ptycho_torch.model`
  imports its training stack (lightning, mlflow) at module level, so those absent packages are
  replaced by inert placeholder modules for that import only.
* container: `data_container_bridge.PtychoDataContainerTorch(grouped, probe)`.

Arrays are returned in upstream's layout (B, N, N, C) / (B, 1, 2, C); the layout conversion is a
transpose, never a numeric change.
"""

import contextlib
import importlib.abc
import importlib.machinery
import sys
import types
from collections.abc import Mapping
from typing import Any

import numpy as np


class Unsupported(Exception):
    """The port cannot answer this request."""


@contextlib.contextmanager
def global_rng(seed: int | None):
    """Seed NumPy's global legacy RNG (the port draws from it) and restore it afterwards."""
    state = np.random.get_state()
    try:
        if seed is not None:
            np.random.seed(int(seed))
        yield
    finally:
        np.random.set_state(state)


class _Inert(types.ModuleType):
    """A placeholder module: any attribute is another placeholder, usable as a base class."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        sub = _Inert(f"{self.__name__}.{name}")
        setattr(self, name, sub)
        return sub

    def __call__(self, *args, **kwargs):
        return self

    def __mro_entries__(self, bases):
        return (object,)


class _InertFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self, roots):
        self.roots = set(roots)

    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in self.roots:
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        return _Inert(spec.name)

    def exec_module(self, module):
        module.__path__ = []


def _torch_model():
    """`ptycho_torch.model`, with placeholders for its missing training-stack packages."""
    if "ptycho_torch.model" in sys.modules:
        return sys.modules["ptycho_torch.model"]
    missing = []
    for root in ("lightning", "mlflow", "tensordict"):
        try:
            __import__(root)
        except ImportError:
            missing.append(root)
    finder = _InertFinder(missing)
    sys.meta_path.insert(0, finder)
    try:
        import ptycho_torch.model as model
    finally:
        sys.meta_path.remove(finder)
    return model


def _nhwc(a):
    """(M, C, H, W) → (M, H, W, C)."""
    return np.ascontiguousarray(np.transpose(np.asarray(a), (0, 2, 3, 1)))


def _coords_up(a):
    """Port coordinates (M, C, 1, 2) → upstream (M, 1, 2, C)."""
    return np.ascontiguousarray(np.transpose(np.asarray(a), (0, 2, 3, 1)))


def _member_patches(raw, nn, dcfg, shift=(0.0, 0.0)):
    """`get_image_patches` of the port at each member's (x + dx, y + dy), (B, N, N, C) complex64."""
    import torch
    from ptycho_torch.datagen.datagen import get_image_patches

    N = dcfg.N
    B, C = nn.shape
    obj = torch.from_numpy(np.asarray(raw["objectGuess"]).astype(np.complex128))
    xs = np.ascontiguousarray(np.asarray(raw["xcoords"])[nn].reshape(-1) + shift[0], np.float64)
    ys = np.ascontiguousarray(np.asarray(raw["ycoords"])[nn].reshape(-1) + shift[1], np.float64)
    xs, ys = torch.from_numpy(xs), torch.from_numpy(ys)
    chunks = [
        get_image_patches(obj, xs[i : i + 64], ys[i : i + 64], dcfg).reshape(-1, N, N)
        for i in range(0, len(xs), 64)
    ]
    patches = torch.cat(chunks).to(torch.complex64)
    return _nhwc(patches.reshape(B, C, N, N).numpy())


def op_torch_patches(req: Mapping[str, Any]) -> dict[str, Any]:
    """The port's patches for given groups at positions shifted by `shift` (diagnostics)."""
    from ptycho_torch.config_params import DataConfig

    with np.load(req["raw"], allow_pickle=False) as z:
        raw = {k: z[k] for k in z.files}
    with np.load(req["nn"], allow_pickle=False) as z:
        nn = np.asarray(z["nn_indices"]).astype(np.int64)
    dcfg = DataConfig(N=int(raw["diff3d"].shape[-1]), C=nn.shape[1])
    np.savez(req["out"], Y_member=_member_patches(raw, nn, dcfg, tuple(req["shift"])))
    return {}


def _chain_modules() -> types.SimpleNamespace:
    """torch and the port's modules the chain uses, imported together before anything runs, so
    that a tree lacking any of them fails `torch_group` as well as `torch_chain`."""
    import torch
    from ptycho_torch import helper
    from ptycho_torch import patch_generator as pg
    from ptycho_torch.config_params import DataConfig
    from ptycho_torch.data_container_bridge import PtychoDataContainerTorch

    return types.SimpleNamespace(
        torch=torch,
        helper=helper,
        pg=pg,
        DataConfig=DataConfig,
        PtychoDataContainerTorch=PtychoDataContainerTorch,
    )


def _data_config(m: types.SimpleNamespace, p: Mapping[str, Any], N: int, C: int):
    """The port's `DataConfig` for the request: nearest-neighbour groups, one subsample, batch
    RMS normalisation, Parseval scaling (what `from_np` is configured with)."""
    return m.DataConfig(
        N=N,
        C=C,
        K=int(p["K"]),
        n_subsample=1,
        grid_size=(int(p["gridsize"]), int(p["gridsize"])),
        neighbor_function="Nearest",
        normalize="Batch",
        data_scaling="Parseval",
        nphotons=float(p["nphotons"]),
    )


def _own_groups(m, p, x_full, y_full, dcfg, C: int) -> np.ndarray:
    """The port's own groups (every scan point a group centre), seeded through the global RNG."""
    pg = m.pg
    with global_rng(p.get("seed")):
        valid = np.arange(len(x_full))
        own, _coords = pg.group_coords(
            x_full, y_full, x_full, y_full, pg.get_neighbor_indices, valid, dcfg, C=C
        )
    return np.asarray(own).astype(np.int64)


def _grouped_stage(m, raw, nn, x_full, y_full, C: int, out: dict[str, Any]):
    """grouped: from_np's images, coords_global (float32), centre / relative coordinates, into
    `out`; returns (all raw frames, grouped images) as float32 tensors for normalize."""
    torch, pg = m.torch, m.pg
    coords_nn = np.stack([x_full[nn], y_full[nn]], axis=2)[:, :, None, :]
    coords_com, coords_rel = pg.get_relative_coords(coords_nn)
    glob = torch.from_numpy(np.stack([x_full, y_full], axis=1)).to(torch.float32)
    coords_global = glob[torch.from_numpy(nn)].unsqueeze(2)
    diff_t = torch.from_numpy(np.asarray(raw["diff3d"])).to(torch.float32)
    images = diff_t[torch.from_numpy(nn)]
    out["grouped.diffraction"] = _nhwc(images.numpy())
    out["grouped.coords_nn"] = _coords_up(coords_global.numpy())
    out["grouped.coords_offsets"] = _coords_up(torch.from_numpy(coords_com).to(torch.float32))
    out["grouped.coords_relative"] = _coords_up(torch.from_numpy(coords_rel).to(torch.float32))
    B = len(nn)
    out["grouped.coords_start_offsets"] = _coords_up(torch.zeros(B, 1, 1, 2))
    out["grouped.coords_start_relative"] = _coords_up(torch.zeros(B, C, 1, 2))
    return diff_t, images


def _normalize_stage(m, diff_t, images, dcfg, out: dict[str, Any]):
    """normalize: batch RMS factor over every raw frame, applied to the grouped images, into
    `out`; returns X as a tensor (for the intensity scale) and in upstream's layout."""
    torch = m.torch
    rms = m.helper.get_rms_scaling_factor(diff_t, dcfg)
    X_t = (images * rms).to(torch.float32)
    X = _nhwc(X_t.numpy())
    out["normalize.X_full"] = X
    out["normalize.normalize_gain"] = np.float32(rms.reshape(-1)[0].item())
    return X_t, X


_CONTAINER_ATTRS = (
    "X",
    "Y_I",
    "Y_phi",
    "coords_nominal",
    "coords_true",
    "probe",
    "nn_indices",
    "global_offsets",
    "local_offsets",
)
"""The container's attributes returned as `container.<name>` (those it has)."""


def _container_stage(m, raw, X, member, nn, out: dict[str, Any]) -> None:
    """container: the port's container class on its own grouped arrays, into `out`."""
    grouped = {
        "X_full": X,
        "Y": member,
        "coords_relative": out["grouped.coords_relative"],
        "coords_offsets": out["grouped.coords_offsets"],
        "nn_indices": nn,
    }
    c = m.PtychoDataContainerTorch(grouped, np.asarray(raw["probeGuess"]))
    for k in _CONTAINER_ATTRS:
        v = getattr(c, k, None)
        if v is not None:
            out[f"container.{k}"] = v.numpy() if hasattr(v, "numpy") else np.asarray(v)
    if member is not None:
        out["container.Y_complex"] = c.Y.numpy()


def op_torch_chain(req: Mapping[str, Any]) -> dict[str, Any]:
    """Every stage of the port's chain into one NPZ (`req["out"]`), on the injected groups
    (`req["nn"]`) or its own; `torch_group` stops after the port's own grouping."""
    m = _chain_modules()
    p = req["params"]
    with np.load(req["raw"], allow_pickle=False) as z:
        raw = {k: z[k] for k in z.files}
    N = int(p["N"]) if p.get("N") is not None else int(raw["diff3d"].shape[-1])
    C = int(p["gridsize"]) ** 2
    x_full, y_full = np.asarray(raw["xcoords"]), np.asarray(raw["ycoords"])
    dcfg = _data_config(m, p, N, C)
    out: dict[str, Any] = {}

    # grouping: the port's own (every scan point a group centre), or the injected groups
    own = _own_groups(m, p, x_full, y_full, dcfg, C)
    out["grouping.nn_indices"] = own
    if req["op"] == "torch_group":  # the port's own groups only (its chain on them is not needed)
        np.savez(req["out"], **out)
        return {}
    if req.get("nn") is not None:
        with np.load(req["nn"], allow_pickle=False) as z:
            nn = np.asarray(z["nn_indices"]).astype(np.int64)  # the port indexes with int64
    else:
        nn = own

    diff_t, images = _grouped_stage(m, raw, nn, x_full, y_full, C, out)
    X_t, X = _normalize_stage(m, diff_t, images, dcfg, out)

    # patches: the port's patch extractor at each member's own scan position. The importable
    # one is ptycho_torch.datagen.datagen.get_image_patches (ptycho_torch/datagen.py is shadowed
    # by the package ptycho_torch/datagen/). Called as the port's simulation calls it: float64
    # coordinates, the object widened exactly to complex128.
    member = None
    if raw.get("objectGuess") is not None:
        member = _member_patches(raw, nn, dcfg)
        out["patches.Y_member"] = member

    # intensity scale: the port's dataset-derived scale from the normalised amplitudes
    out["intensity_scales.seed_era_dataset_derived_scale_normalized_X"] = np.float64(
        m.helper.derive_intensity_scale_from_amplitudes(X_t, float(p["nphotons"])).item()
    )

    _container_stage(m, raw, X, member, nn, out)
    np.savez(req["out"], **out)
    return {}


def op_torch_scaler(req: Mapping[str, Any]) -> dict[str, Any]:
    import torch
    from ptycho_torch.config_params import ModelConfig

    model = _torch_model()
    with np.load(req["x"], allow_pickle=False) as z:
        x = torch.from_numpy(np.asarray(z["x"], np.float32))
    scale = float(req["scale"])
    mcfg = ModelConfig(intensity_scale=scale, intensity_scale_trainable=bool(req["trainable"]))
    m = model.IntensityScalerModule(mcfg)
    factor = torch.tensor(scale, dtype=torch.float32)
    with torch.no_grad():
        y = m.scale(x, factor)
        back = m.inv_scale(y, factor)
    res = {
        "scaler_out": np.asarray(y.numpy(), np.float32),
        "scaler_inv_out": np.asarray(back.numpy(), np.float32),
    }
    if m.log_scale is not None:  # the port keeps no log-scale when not trainable
        res["log_scale"] = np.asarray(m.log_scale.detach().numpy(), np.float32)
    np.savez(req["out"], **res)
    return {}


OPS = {
    "torch_chain": op_torch_chain,
    "torch_group": op_torch_chain,
    "torch_patches": op_torch_patches,
    "torch_scaler": op_torch_scaler,
}
