"""Small stub backends for the harness tests: recorded stage outputs, altered one way each."""

import warnings

import numpy as np

import ptycho_jax as pj
from ptycho_jax.crosscheck.backends import STAGES, JaxBackend, StageUnsupported
from ptycho_jax.crosscheck.synthetic import synthetic_raw

PARAMS = pj.ChainParams(N=32, gridsize=2, K=4, n_groups=16, seed=3, nphotons=1e6)


def record(raw=None, params=PARAMS) -> dict:
    """Every stage output of the JAX backend on the synthetic scan (host arrays)."""
    raw = synthetic_raw() if raw is None else raw
    jb = JaxBackend()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # upstream's mirrored patch positions are announced
        nn = jb.grouping(raw, params)["nn_indices"]
        outs = {"grouping": {"nn_indices": nn}}
        for stage in ("grouped", "normalize", "patches", "intensity_scales", "container"):
            outs[stage] = dict(getattr(jb, stage)(raw, params, nn_indices=nn))
    return outs


def scaler(x, *, scale, trainable=True):
    ls = np.float32(np.log(scale))
    out = (np.asarray(x, np.float32) / np.exp(ls)).astype(np.float32)
    return {
        "log_scale": ls,
        "scaler_out": out,
        "scaler_inv_out": (out * np.exp(ls)).astype(np.float32),
    }


class Stub:
    """A backend answering from `outs`; `change[stage]` maps a stage output to what is returned,
    `lacks` removes stage methods, `unsupported` makes stages raise `StageUnsupported`."""

    def __init__(self, outs, name="stub", *, change=None, lacks=(), unsupported=(), **attrs):
        self.outs = outs
        self.name = name
        self.change = change or {}
        self.lacks = set(lacks)
        self.unsupported = set(unsupported)
        for k, v in attrs.items():
            setattr(self, k, v)

    def _answer(self, stage, value):
        if stage in self.unsupported:
            raise StageUnsupported(f"{self.name}: {stage} not available here")
        f = self.change.get(stage)
        return f(value) if f else value

    def __getattr__(self, stage):
        if stage not in STAGES or stage in self.lacks:
            raise AttributeError(stage)
        if stage == "scaler":
            return lambda x, *, scale, trainable=True: self._answer(
                "scaler", scaler(x, scale=scale, trainable=trainable)
            )
        return lambda raw, params, *, nn_indices=None: self._answer(
            stage, {k: v for k, v in self.outs[stage].items()}
        )


def without(*keys):
    return lambda d: {k: v for k, v in d.items() if k not in keys}


def replaced(**kw):
    return lambda d: {**d, **{k: f(d[k]) for k, f in kw.items()}}
