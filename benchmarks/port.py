"""A foreign port timed beside ours: any crosscheck backend (`--port package.module:Attribute`, or
`--port tf` for our TF reference) on the same inputs, with the same timer (`timing.measure_stage`).

Each timed call resolves a fresh backend instance (`crosscheck.resolve_backend`), so no memo a port
keeps across calls (ours and the TF reference keep one) returns a previous call's arrays. A stage
the port does not compute, or cannot run where the bench runs, is cut with the reason.
"""

from typing import Any

import numpy as np

from .plan import Case

PORT_STAGES = {
    "selection": "grouping(raw, params)",
    "gather_normalize": "normalize(raw, params, nn_indices=nn)",
    "patches": "patches(raw, params, nn_indices=nn)",
    "intensity_scale": "intensity_scales(raw, params, nn_indices=nn)",
    "scaler": "scaler(X, scale=...)",
    "container": "container(raw, params, nn_indices=nn)",
    "end_to_end": "grouping, then container and intensity_scales on its groups",
}
"""Bench stage -> the backend method (crosscheck's `Backend` protocol) timed for it."""

_METHOD = {
    "selection": "grouping",
    "gather_normalize": "normalize",
    "patches": "patches",
    "intensity_scale": "intensity_scales",
    "scaler": "scaler",
    "container": "container",
    "end_to_end": "container",
}


def fresh_backend(spec: str):
    from ptycho_jax.crosscheck.backends import resolve_backend

    return resolve_backend(spec)


def where_it_runs(spec: str, device) -> tuple[bool, str]:
    """`(runs on device, words)`: a port runs where its own library puts it (NumPy: the host)."""
    backend = fresh_backend(spec)
    name = getattr(backend, "name", spec)
    if device.platform == "cpu":
        return True, f"{name}: host CPU, as ours"
    if spec == "tf":
        import tensorflow as tf

        if tf.config.list_physical_devices("GPU"):
            return True, f"{name}: TensorFlow's GPU"
        return (
            False,
            f"{name}: this TensorFlow has no GPU (a CPU build), so it cannot run on {device}",
        )
    placed = getattr(backend, "device", None)
    if placed is not None and str(placed).startswith(device.platform):
        return True, f"{name}: {placed}"
    return False, f"{name}: runs on the host (it declares no device), not on {device}"


def not_computed_reason(spec: str, stage: str, params) -> str | None:
    """Why the port cannot give `stage` (it lacks the method or declares it not computed), or None."""
    backend = fresh_backend(spec)
    method = _METHOD[stage]
    if not callable(getattr(backend, method, None)):
        return f"the port has no `{method}` method"
    declared = getattr(backend, "not_computed", None)
    absent = set(declared(params) if callable(declared) else (declared or ()))
    wanted = {"grouping": {"grouping", "nn_indices"}, "patches": {"patches", "Y"}}.get(
        method, {method}
    )
    if stage == "end_to_end" and ("grouping" in absent or "container" in absent):
        return "the port does not compute its own grouping and container"
    hit = sorted(wanted & absent)
    return f"the port declares `{hit[0]}` not computed" if hit else None


def port_call(spec: str, stage: str, case: Case, inp) -> Any:
    """A zero-argument callable running the port's `stage` on the case's inputs (a fresh instance)."""
    raw, params = inp.get("raw"), case.params()
    nn = None if stage in ("selection", "end_to_end", "scaler") else np.asarray(inp.get("nn"))
    if stage == "scaler":
        X, scale = inp.get("X_np"), inp.scale()
        return lambda: fresh_backend(spec).scaler(X, scale=scale)
    if stage == "end_to_end":

        def chain():
            b = fresh_backend(spec)
            groups = np.asarray(b.grouping(raw, params)["nn_indices"])
            return b.container(raw, params, nn_indices=groups), b.intensity_scales(
                raw, params, nn_indices=groups
            )

        return chain
    method = _METHOD[stage]
    if stage == "selection":
        return lambda: fresh_backend(spec).grouping(raw, params)
    return lambda: getattr(fresh_backend(spec), method)(raw, params, nn_indices=nn)
