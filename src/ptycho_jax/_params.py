"""`ChainParams`: every parameter the chain reads, one name each from CLI flag to kernel (pipeline.md §1)."""

import dataclasses
import math
import typing
from typing import Literal

import numpy as np

from ._errors import GroupingError, PtychoInputError
from ._variants import VARIANT_NAMES, Variant, VariantName, get_variant

# The closed choices of `ChainParams`: each a `Literal` type, its values derived from it (one
# definition gives the type the checkers and annotations use and the tuple the CLI offers).
Engine = Literal["scipy", "jax"]
"""`ChainParams.engine`: exact upstream groups (cKDTree on the host) or the JAX search."""
NeighbourSearch = Literal["auto", "host", "device"]
"""`ChainParams.neighbour_search` (engine "scipy"): the device search with cKDTree's answers off
the CPU, SciPy's cKDTree on the host, or the device search."""
PatchPositions = Literal["upstream", "member"]
"""`ChainParams.patch_positions`: upstream's literal (mirrored for C > 1) centres, or the members'."""
ENGINES: tuple[Engine, ...] = typing.get_args(Engine)
NEIGHBOUR_SEARCHES: tuple[NeighbourSearch, ...] = typing.get_args(NeighbourSearch)
PATCH_POSITIONS: tuple[PatchPositions, ...] = typing.get_args(PatchPositions)
_CLOSED_FIELDS: dict[str, tuple[str, ...]] = {
    "engine": ENGINES,
    "neighbour_search": NEIGHBOUR_SEARCHES,
    "patch_positions": PATCH_POSITIONS,
}
"""The `ChainParams` string fields with a closed set of values besides `variant` (whose names,
`VARIANT_NAMES`, `get_variant` checks), checked in `__post_init__`."""
__all__ = [
    "ENGINES",
    "NEIGHBOUR_SEARCHES",
    "PATCH_POSITIONS",
    "VARIANT_NAMES",
    "ChainParams",
    "Engine",
    "NeighbourSearch",
    "PatchPositions",
    "VariantName",
]


def _one_of(choices: tuple[str, ...]) -> str:
    """`'a', 'b' or 'c'`: the choices as an error message lists them."""
    quoted = [repr(c) for c in choices]
    return " or ".join([", ".join(quoted[:-1]), quoted[-1]] if len(quoted) > 1 else quoted)


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ChainParams:
    """Every parameter the chain reads (upstream's `params.cfg` keys made explicit, pipeline.md §1).

    Attributes:
        N: frame size; None takes it from the data.
        gridsize: g (C = g² members per group).
        K: neighbour count (upstream `neighbor_count`).
        n_groups: number of groups B (upstream `nsamples` / `n_groups`).
        seed: grouping seed (local legacy RandomState); None = fresh entropy.
        sequential: sequential seeds (upstream `sequential_sampling`).
        oversample: K-choose-C oversampling when n_groups exceeds the positions (upstream `enable_oversampling`).
        neighbor_pool_size: K of the oversampling path (None: K).
        nphotons: photon budget.
        variant: "main" (upstream main line) or "seed" (the seed-report branch).
        engine: "scipy" (exact upstream groups) or "jax".
        neighbour_search: where engine "scipy" finds cKDTree's neighbours: "host" (cKDTree),
            "device" (a JAX search certified equal to cKDTree's, `device_neighbours`) or "auto"
            (the device when JAX's default backend is not the CPU, else the host).
        patch_positions: "upstream" (literal, mirrored for C > 1) or "member".
        trainable: `intensity_scale.trainable` of the scaler.
    """

    N: int | None = None
    gridsize: int = 2
    K: int = 4
    n_groups: int = 64
    seed: int | None = 42
    sequential: bool = False
    oversample: bool = False
    neighbor_pool_size: int | None = None
    nphotons: float | int = 1e9
    variant: VariantName = "main"
    engine: Engine = "scipy"
    neighbour_search: NeighbourSearch = "auto"
    patch_positions: PatchPositions = "upstream"
    trainable: bool = True

    # `__post_init__` checks every field with an error naming it (PtychoInputError); a runtime
    # type checker on `__init__` (the tests' jaxtyping import hook) would check the annotations
    # first and raise its own TypeCheckError instead, so the class opts out of it at creation
    # (the attribute is deleted after the class, so `typing.get_type_hints` still sees the fields).
    __no_type_check__ = True

    def __post_init__(self):
        for name in ("gridsize", "K", "n_groups", "N", "neighbor_pool_size"):
            v = getattr(self, name)
            if (v is not None or name in ("gridsize", "K", "n_groups")) and not (
                _is_int(v) and v >= 1
            ):
                raise PtychoInputError(f"ChainParams.{name} must be an int >= 1, got {v!r}")
        if self.seed is not None and not (_is_int(self.seed) and self.seed >= 0):
            raise PtychoInputError(
                f"ChainParams.seed must be an int >= 0 or None, got {self.seed!r}"
            )
        for name in ("sequential", "oversample", "trainable"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise PtychoInputError(
                    f"ChainParams.{name} must be a bool, got {getattr(self, name)!r}"
                )
        n = self.nphotons
        if (
            isinstance(n, bool)
            or not isinstance(n, (int, float, np.integer, np.floating))
            or not (math.isfinite(n) and n > 0)
        ):
            raise PtychoInputError(f"ChainParams.nphotons must be a finite number > 0, got {n!r}")
        get_variant(self.variant)
        for name, choices in _CLOSED_FIELDS.items():
            if getattr(self, name) not in choices:
                raise GroupingError(
                    f"ChainParams.{name} must be {_one_of(choices)}, got {getattr(self, name)!r}"
                )

    @property
    def C(self) -> int:
        """Members per group, gridsize²."""
        return self.gridsize * self.gridsize

    @property
    def numerics(self) -> Variant:
        """The `Variant` object of `variant`."""
        return get_variant(self.variant)

    def frame_size(self, data_N: int) -> int:
        """N for data of frame size `data_N`: `data_N` when N is None, else N, which must equal it.

        Raises:
            GroupingError: N differs from the data's frame size.
        """
        if self.N is not None and self.N != data_N:
            raise GroupingError(
                f"ChainParams.N={self.N} does not match the frame size {data_N} of raw.diff3d"
            )
        return int(data_N)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


del ChainParams.__no_type_check__
