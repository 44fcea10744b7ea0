"""Fake `ptycho.diffsim`: scale_nphotons reads params.cfg['nphotons'], as upstream."""

import numpy as np

from crosscheck import tf_reference as _R

from . import SEEN, params


def scale_nphotons(X):
    SEEN.append(dict(params.cfg, _call="scale_nphotons"))
    return np.float32(_R.scale_nphotons(X, params.cfg["nphotons"]))
