"""Fake `ptycho.train_pinn`: the [MAIN] closed-form calculate_intensity_scale (reads N, nphotons)."""

import numpy as np

from crosscheck import tf_reference as _R

from . import SEEN, params


def calculate_intensity_scale(container):
    SEEN.append(dict(params.cfg, _call="calculate_intensity_scale"))
    return np.float32(_R.closed_form_scale_f32(params.cfg["N"], params.cfg["nphotons"]))
