"""Fake `ptycho.loader`: the [SEED] float32 normalize_data copy and `load` → PtychoDataContainer."""

from crosscheck import tf_reference as _R

from . import SEEN, diffsim, params

FAIL = False
"""Test switch: make `load` raise, to check that the adapter restores `params.cfg` on error."""


def normalize_data(dset, N):
    return _R.normalize_data(dset["diffraction"], N, variant="seed")[0]


class PtychoDataContainer:
    def __init__(self, fields):
        self.__dict__.update(fields)


def load(cb, probeGuess, which, create_split):
    SEEN.append(dict(params.cfg, _call="load"))
    if FAIL:
        raise RuntimeError("fake upstream: load failed on purpose")
    dset = cb()
    fields = _R.make_container(dset, dset["X_full"], probeGuess, nphotons=params.cfg["nphotons"])
    fields["norm_Y_I"] = diffsim.scale_nphotons(fields["X"])
    return PtychoDataContainer(fields)
