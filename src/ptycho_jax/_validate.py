"""Checks of a scan against its object where the chain cuts object patches (specs/bad-input.md).

Upstream cuts each object patch `Y` from `objectGuess` zero-padded by N//2 and zero-fills every
bilinear corner outside it (pipeline.md §5.1-5.2), so a patch off the object comes back partly or
wholly zero without a word. Here:

* a patch **wholly** outside the object (its `Y` would be all zero, an empty training label) is a
  `ObjectExtentError`, naming how many, which groups and scan positions, and the object's extent;
* a patch **centred off** the object but still overlapping it (more than half of it zero fill along
  an axis) is kept, as upstream does, with one `PatchOutsideObjectWarning` saying how many and which;
* a patch centred on the object whose edge reaches past it is upstream's own geometry (sim_lines
  draws positions 10 px from the edge of the object and simulates the frames from the same
  zero-padded object, so frames and labels agree): kept, counted in an INFO log line only;
* an all-zero `objectGuess` or `Y` (a placeholder object) gives all-zero labels: a warning.

The extent test is exact: it evaluates the first and last sample coordinate of every patch in
float32 exactly as `extract_patches` does, so it fires only where that kernel reads a zero fill.
"""

import logging
import warnings

import numpy as np

from ._errors import ObjectExtentError
from ._params import PatchPositions, VariantName

logger = logging.getLogger(__name__)

SHOW = 3
"""How many offending patches a message names."""


class PatchOutsideObjectWarning(UserWarning):
    """Object patches reach past the edge of `objectGuess` and are zero-filled there, as upstream does."""


class AllZeroPatchesWarning(UserWarning):
    """Every object patch `Y` is zero (an all-zero `objectGuess` or `Y`, e.g. a placeholder)."""


def _axis_extent(c: np.ndarray, size: int, N: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(inside, outside, centred off) masks along one axis for float32 centres `c` (padded-canvas coordinates).

    `extract_patches` samples the padded canvas at `float32(q + c)`, q = 0..N-1; canvas pixel i is
    object pixel `i - N//2`. Its bilinear corners floor(s) and floor(s)+1 (weight 0 when s is whole)
    all lie on the object iff `pad <= s <= size - 1 + pad`; none carries weight on it iff the last
    sample is <= pad - 1 or the first is >= size + pad. The centre pixel q = N//2 lands on object
    coordinate `c`; it is off the object when c < 0 or c > size - 1.
    """
    pad = N // 2
    first = c.astype(np.float32)
    last = np.float32(N - 1) + first  # the kernel's float32 addition, same rounding
    inside = (first >= pad) & (last <= size - 1 + pad)
    outside = (last <= pad - 1) | (first >= size + pad)
    off = (first < 0) | (first > size - 1)
    return inside, outside, off


def _name_patches(
    which: np.ndarray, centres: np.ndarray, nn: np.ndarray, positions: np.ndarray | None
) -> str:
    C = nn.shape[1]
    parts = []
    for i in which[:SHOW]:
        b, c = divmod(int(i), C)
        s = int(nn[b, c])
        at = "" if positions is None else f" at ({positions[s, 0]:.6g}, {positions[s, 1]:.6g})"
        parts.append(
            f"group {b} member {c} (scan index {s}{at}, patch centre ({centres[i, 0]:.6g}, {centres[i, 1]:.6g}))"
        )
    more = f", and {len(which) - SHOW} more" if len(which) > SHOW else ""
    return "; ".join(parts) + more


def check_patch_extent(
    object_shape: tuple[int, int],
    centres: np.ndarray,
    nn: np.ndarray,
    *,
    N: int,
    positions: np.ndarray | None = None,
    where: str = "group",
    stacklevel: int = 2,
) -> None:
    """Check the flat (B·C, 2) `[x, y]` patch centres (flat order b·C + c) against an (H, W) object.

    Raises:
        ObjectExtentError: at least one patch lies wholly outside the object (an all-zero label).

    Warns:
        PatchOutsideObjectWarning: patches centred off the object (mostly zero fill, kept as upstream).
    """
    H, W = (int(s) for s in object_shape)
    c = np.asarray(centres, np.float32).reshape(-1, 2)
    nn = (
        np.asarray(nn).reshape(-1, np.shape(nn)[-1])
        if np.ndim(nn) == 2
        else np.asarray(nn).reshape(-1, 1)
    )
    in_x, out_x, off_x = _axis_extent(c[:, 0], W, N)
    in_y, out_y, off_y = _axis_extent(c[:, 1], H, N)
    outside = out_x | out_y
    partly = ~(in_x & in_y) & ~outside
    off = (off_x | off_y) & ~outside
    pad = N // 2
    span = (
        f"the {N}x{N} patches span x [{float(c[:, 0].min()) - pad:.6g}, {float(c[:, 0].max()) - pad + N - 1:.6g}], "
        f"y [{float(c[:, 1].min()) - pad:.6g}, {float(c[:, 1].max()) - pad + N - 1:.6g}] in object pixels"
    )
    if outside.any():
        which = np.flatnonzero(outside)
        span_w = float(c[:, 0].max() - c[:, 0].min()) + N
        span_h = float(c[:, 1].max() - c[:, 1].min()) + N
        smaller = (
            f"; the object is smaller than the scanned area ({span_h:.6g}x{span_w:.6g} pixels under the patches)"
            if span_w > W and span_h > H
            else ""
        )
        raise ObjectExtentError(
            f"{where}: objectGuess: expected every object patch to overlap the {H}x{W} object "
            f"(rows 0..{H - 1}, columns 0..{W - 1}){smaller}, but {len(which)} of {len(c)} patches lie wholly "
            f"outside it and their Y would be all zero; {span}; first: {_name_patches(which, c, nn, positions)}. "
            "Give an objectGuess that covers the scan (positions are object pixels, x = column), "
            "or drop those positions with RawData.subset"
        )
    if partly.any():
        logger.info(
            "%s: %d of %d object patches reach past the edge of the %dx%d objectGuess (zero fill, as upstream)",
            where,
            int(partly.sum()),
            len(c),
            H,
            W,
        )
    if off.any():
        which = np.flatnonzero(off)
        warnings.warn(
            f"{where}: {len(which)} of {len(c)} object patches are centred off the {H}x{W} objectGuess "
            f"(rows 0..{H - 1}, columns 0..{W - 1}), so more than half of each is zero fill (upstream pads "
            f"the object with zeros and goes on); {span}; first: "
            f"{_name_patches(which, c, nn, positions)}",
            PatchOutsideObjectWarning,
            stacklevel=stacklevel + 1,
        )


def check_label_source(raw, *, where: str = "group", stacklevel: int = 2) -> None:
    """Warn when the object patches are bound to be all zero (all-zero `Y` or `objectGuess`)."""
    if raw.Y is not None:
        name, a = "Y", raw.Y
    elif raw.objectGuess is not None:
        name, a = "objectGuess", raw.objectGuess
    else:
        return
    if not np.any(a):
        warnings.warn(
            f"{where}: RawData.{name} is all zero (a placeholder?), so every object patch Y is zero; "
            "train only on losses that do not read Y, or supply the object",
            AllZeroPatchesWarning,
            stacklevel=stacklevel + 1,
        )


def check_group_patches(
    raw,
    nn: np.ndarray,
    *,
    N: int,
    variant: VariantName,
    patch_positions: PatchPositions,
    where: str,
    positions: np.ndarray | None = None,
    stacklevel: int = 2,
) -> None:
    """The object checks of the chain's entry (`group`, `run_chain` on one device, a mesh, streamed).

    Warns on an all-zero `Y`/`objectGuess`; when the chain will cut patches from `raw.objectGuess`,
    computes the host patch centres of groups `nn` exactly as `group_patch_centres` does and runs
    `check_patch_extent` on them. `positions` (M, >=2) `[x, y, ...]` are the whole scan's positions where `raw` holds only this
    process's part (default: `raw.positions()`).
    """
    check_label_source(raw, where=where, stacklevel=stacklevel + 1)
    if raw.Y is not None or raw.objectGuess is None:
        return
    from ._coords import group_coordinates
    from ._patches import group_patch_centres

    nn = np.asarray(nn)
    xy = raw.positions() if positions is None else np.asarray(positions)[:, :2]
    coords = group_coordinates(xy[:, 0], xy[:, 1], nn, variant=variant)
    centres = group_patch_centres(coords[1], coords[2], coords[0], positions=patch_positions)
    check_patch_extent(
        raw.objectGuess.shape,
        centres,
        nn,
        N=N,
        positions=xy,
        where=where,
        stacklevel=stacklevel + 1,
    )
