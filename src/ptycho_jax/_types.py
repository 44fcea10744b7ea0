"""Shared jaxtyping aliases: image tensors channel-last, coordinates [x, y] on axis 2, pixel units."""

import numpy as np
from jaxtyping import Array, Complex64, Float, Float32, Float64, Int, Shaped

Amplitudes = Float32[Array, "B N N C"]
"""Grouped diffraction amplitudes (not intensities), channel-last, on the device."""
Patches = Complex64[Array, "B N N C"]
"""Grouped complex object patches, channel-last."""
HostCoords = Float64[np.ndarray, "B 1 2 C"]
"""Per-member coordinates on the host, [x, y] on axis 2, pixels."""
HostOffsets = Float64[np.ndarray, "B 1 2 1"]
"""Group centres on the host, [x, y] on axis 2, pixels."""
HostGroups = Int[np.ndarray, "B C"]
"""Indices of the scan positions in each group (row b = group b)."""
Scalar32 = Float32[Array, ""]

__all__ = [
    "Amplitudes",
    "Array",
    "Complex64",
    "Float",
    "Float32",
    "Float64",
    "HostCoords",
    "HostGroups",
    "HostOffsets",
    "Int",
    "Patches",
    "Scalar32",
    "Shaped",
]
