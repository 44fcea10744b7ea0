"""Per-array statistics of the report, in NumPy's exact float32 order (specs/report.md §2)."""

from typing import Any, Literal

import numpy as np
from jaxtyping import ArrayLike, Float, Shaped

from ._errors import PtychoInputError

SumOrder = Literal["numpy2.0", "numpy2.3"]
"""`"numpy2.0"`: NumPy 2.0-2.2 (8192-element blocks, the goldens); `"numpy2.3"`: NumPy >= 2.3."""

STATS_KEYS = (
    "min",
    "max",
    "mean",
    "std",
    "nan_count",
    "shape",
    "dtype",
    "finite_count",
    "total_count",
)
"""The nine keys of a stage's statistics (intensity-report.md §2.2)."""

_LEAF = 128  # longest run summed by the 8-accumulator loop
_LANES = 8  # accumulators
_BLOCK = 8192  # NumPy 2.0-2.2 reduction buffer, in elements


def _leaf_sums(v: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
    """Sums of the runs `v[s:s+length]` (all of one length <= 128), the pairwise leaf order."""
    dt = v.dtype.type
    if length < _LANES:
        # Fewer than 8 elements: left to right from 0.
        acc = np.zeros(starts.shape, dtype=v.dtype)
        for i in range(length):
            acc = acc + v[starts + i]
        return acc
    k, s0 = len(starts), int(starts[0])
    if np.array_equal(starts, s0 + length * np.arange(k)):
        rows = v[s0 : s0 + k * length].reshape(k, length)  # back-to-back runs: a view
    else:
        rows = v[starts[:, None] + np.arange(length)[None, :]]  # one gather
    body = length - length % _LANES
    lanes = rows[:, :body].reshape(k, body // _LANES, _LANES)
    r = lanes[:, 0, :].copy()
    for i in range(1, body // _LANES):
        r += lanes[:, i, :]
    s = ((r[:, 0] + r[:, 1]) + (r[:, 2] + r[:, 3])) + ((r[:, 4] + r[:, 5]) + (r[:, 6] + r[:, 7]))
    for i in range(body, length):
        s = s + rows[:, i]
    return s.astype(dt, copy=False)


def _pairwise_sums(v: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """NumPy's pairwise sum of each segment `v[s:s+n]`, evaluated level by level over the tree.

    The split tree depends only on the segment length (split at n2 = n//2 - (n//2 % 8) while
    n > 128), so all segments are split together, one NumPy operation per level and leaf length.
    """
    levels = []  # per level: (lengths, internal mask, leaf values or None)
    cur_starts, cur_lengths = starts, lengths
    while cur_starts.size:
        internal = cur_lengths > _LEAF
        leaf_vals = np.zeros(cur_starts.shape, dtype=v.dtype)
        leaf = ~internal
        if leaf.any():
            leaf_lengths = cur_lengths[leaf]
            vals = np.zeros(leaf_lengths.shape, dtype=v.dtype)
            for length in np.unique(leaf_lengths):
                sel = leaf_lengths == length
                vals[sel] = _leaf_sums(v, cur_starts[leaf][sel], int(length))
            leaf_vals[leaf] = vals
        levels.append((internal, leaf_vals))
        s, n = cur_starts[internal], cur_lengths[internal]
        half = n // 2
        n2 = half - half % _LANES
        # Children of the k-th internal node sit at 2k (left) and 2k + 1 (right).
        cur_starts = np.stack([s, s + n2], axis=1).ravel()
        cur_lengths = np.stack([n2, n - n2], axis=1).ravel()
    below = np.zeros((0,), dtype=v.dtype)
    for internal, leaf_vals in reversed(levels):
        vals = leaf_vals
        vals[internal] = below[0::2] + below[1::2]
        below = vals
    return below


def float_sum(v: Float[np.ndarray, " n"], *, order: SumOrder = "numpy2.0") -> np.generic:
    """Add-reduce a 1-D float array in NumPy's float pairwise order, in the array's own dtype.

    Args:
        v: 1-D float32 or float64 array (any length, any strides).
        order: `"numpy2.0"` (NumPy 2.0-2.2: pairwise over 8192-element blocks, block sums added
            left to right from 0; the order that made the goldens) or `"numpy2.3"` (NumPy >= 2.3:
            pairwise over the whole array).

    Returns:
        The sum as a NumPy scalar of `v.dtype`, every addition rounded to that dtype.
    """
    v = np.ascontiguousarray(v)
    if v.ndim != 1 or v.dtype not in (np.float32, np.float64):
        raise PtychoInputError(
            f"float_sum: v: expected a 1-D float32/float64 array, got {v.shape} {v.dtype}"
        )
    n = v.shape[0]
    if order == "numpy2.3":
        starts = np.zeros((1,), dtype=np.int64)
        lengths = np.full((1,), n, dtype=np.int64)
    elif order == "numpy2.0":
        starts = np.arange(0, n, _BLOCK, dtype=np.int64)
        lengths = np.minimum(_BLOCK, n - starts)
    else:
        raise PtychoInputError(
            f"float_sum: order: expected 'numpy2.0' or 'numpy2.3', got {order!r}"
        )
    if n == 0:
        return v.dtype.type(0)
    blocks = _pairwise_sums(v, starts, lengths)
    total = v.dtype.type(0)
    for b in blocks:  # block results, left to right (a single block for "numpy2.3")
        total = total + b
    return total


def _reduction_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype NumPy's mean/std accumulate in for an array of `dtype`."""
    if dtype == np.float64 or dtype == np.float32:
        return dtype
    if dtype == np.float16:
        return np.dtype(np.float32)
    return np.dtype(np.float64)  # integers and bools, as np.mean


def array_stats(a: Shaped[ArrayLike, "..."], *, order: SumOrder = "numpy2.0") -> dict[str, Any]:
    """The nine statistics of one stage array, as the upstream report computes them with NumPy.

    Computed on the host over a 1-D copy of the finite entries in logical (row-major) order:
    `min`/`max`; `mean = sum/n`; population `std = sqrt(sum((v - mean)**2)/n)`; every step in the
    array's own float dtype, summed in NumPy's pairwise order (see `float_sum`), so a float32
    array gives bit-identical values to NumPy 2.0-2.2 (the goldens) whatever NumPy is installed.
    Integer and bool arrays are reduced in float64 and float16 in float32, as `np.mean` does.

    Args:
        a: The stage array: NumPy array, JAX array or anything `np.asarray` accepts (real dtype).
        order: NumPy summation order, `"numpy2.0"` (default, the goldens) or `"numpy2.3"`.

    Returns:
        `{min, max, mean, std, nan_count, shape, dtype, finite_count, total_count}` as plain
        Python values; `min`, `max`, `mean`, `std` are None when no entry is finite.
    """
    arr = np.asarray(a)
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_) or np.issubdtype(
        arr.dtype, np.complexfloating
    ):
        raise PtychoInputError(
            f"array_stats: a: expected a real numeric array, got dtype {arr.dtype}"
        )
    finite_mask = np.isfinite(arr)
    finite = arr[finite_mask]  # 1-D copy in logical order
    n = int(finite.size)
    nan_count = int(np.isnan(arr).sum()) if np.issubdtype(arr.dtype, np.inexact) else 0
    stats: dict[str, Any] = {
        "min": None,
        "max": None,
        "mean": None,
        "std": None,
        "nan_count": nan_count,
        "shape": [int(d) for d in arr.shape],
        "dtype": str(arr.dtype),
        "finite_count": int(finite_mask.sum()),
        "total_count": int(arr.size),
    }
    if n == 0:
        return stats
    v = finite.astype(_reduction_dtype(arr.dtype), copy=False)
    dt = v.dtype.type
    # NumPy divides by an intp count, i.e. in float64, then casts back to the reduction dtype;
    # for float32 that equals a float32 division whenever n is exact in float32 (n < 2**24).
    mean = dt(np.float64(float_sum(v, order=order)) / np.float64(n))
    d = v - mean
    var = dt(np.float64(float_sum(d * d, order=order)) / np.float64(n))
    std = np.sqrt(var)
    stats["min"] = float(np.min(finite))
    stats["max"] = float(np.max(finite))
    stats["mean"] = float(mean)
    stats["std"] = float(std)
    return stats


def check_stats(stats: Any, *, where: str) -> dict[str, Any]:
    """Validate a nine-key statistics mapping given instead of an array; return a plain copy."""
    if not hasattr(stats, "keys"):
        raise PtychoInputError(
            f"{where}: expected a mapping of statistics, got {type(stats).__name__}"
        )
    missing = [k for k in STATS_KEYS if k not in stats]
    if missing:
        raise PtychoInputError(f"{where}: expected the keys {list(STATS_KEYS)}, missing {missing}")
    out = {k: stats[k] for k in stats}
    for k in ("min", "max", "mean", "std"):
        x = out[k]
        if x is not None and (isinstance(x, bool) or not isinstance(x, (int, float))):
            raise PtychoInputError(
                f"{where}: {k}: expected a Python float or None, got {type(x).__name__}"
            )
    return out
