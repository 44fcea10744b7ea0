"""`scan_raw`: a scan's RawData from its positions and frames, the one builder of simulated and
synthetic scans (NumPy only)."""

from typing import Any

import numpy as np

from ._rawdata import RawData


def scan_raw(
    x: Any,
    y: Any,
    diff3d: Any,
    *,
    probe: Any = None,
    obj: Any = None,
    scan_index: Any = None,
    **fields: Any,
) -> RawData:
    """The RawData of a scan at positions `x`, `y` (start positions equal to them) with frames `diff3d`.

    The one builder of simulated and synthetic scans (`simulate`, the harness's `synthetic_raw`, the
    tests' small RawData); each draws its own positions and frames and hands them here.

    Args:
        x, y: (M,) positions in object pixels.
        diff3d: (M, N, N) amplitudes.
        probe: (N, N) complex64 probe (default: ones).
        obj: the object, or None.
        scan_index: (M,) int64 (default: zeros).
        fields: further `RawData` fields (`Y`, `norm_Y_I`, `metadata`, other start positions
            `xcoords_start`/`ycoords_start`, ...).

    The arguments are typed `Any` on purpose: `RawData` checks every field with errors naming it
    (bad-input tests hand their bad values through here).
    """
    if "xcoords_start" not in fields:
        fields["xcoords_start"] = np.array(x, copy=True)
    if "ycoords_start" not in fields:
        fields["ycoords_start"] = np.array(y, copy=True)
    if probe is None:
        probe = np.ones((np.shape(diff3d)[-1],) * 2, np.complex64)
    if scan_index is None:
        scan_index = np.zeros(np.shape(diff3d)[0], np.int64)
    return RawData(
        xcoords=x,
        ycoords=y,
        diff3d=diff3d,
        probeGuess=probe,
        scan_index=scan_index,
        objectGuess=obj,
        **fields,
    )
