"""The whole data chain in one call: RawData → groups → normalize_data → container → intensity scales → scaler."""

import dataclasses
import logging
from collections.abc import Callable
from typing import Literal

import jax.numpy as jnp
import numpy as np

from ._container import Container, make_container
from ._errors import PtychoInputError
from ._grouping import GroupedData, choose_groups, grouped_from_indices
from ._intensity import TRAINING_SCALE_KEY, all_intensity_scales
from ._rawdata import RawData
from ._scaler import IntensityScaler

logger = logging.getLogger(__name__)

STAGES = ("grouping", "normalize", "container", "intensity_scale", "scaler")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ChainParams:
    """Every parameter the chain reads (upstream's `params.cfg` keys made explicit).

    Attributes:
        N: frame size; None takes it from the data.
        gridsize: g (C = g² members per group).
        K: neighbour count (upstream `neighbor_count`).
        n_groups: number of groups B (upstream `nsamples`).
        seed: grouping seed (local legacy RandomState); None = fresh entropy.
        sequential: sequential seeds (upstream `sequential_sampling`).
        oversample, neighbor_pool_size: K-choose-C oversampling (upstream `enable_oversampling`).
        nphotons: photon budget.
        variant: "main" (upstream main line) or "seed" (the seed-report branch).
        engine: "scipy" (exact upstream groups) or "jax".
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
    nphotons: float = 1e9
    variant: Literal["main", "seed"] = "main"
    engine: Literal["scipy", "jax"] = "scipy"
    patch_positions: Literal["upstream", "member"] = "upstream"
    trainable: bool = True

    def __post_init__(self):
        for name in ("gridsize", "K", "n_groups"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise PtychoInputError(f"ChainParams.{name}: expected an int >= 1, got {v!r}")
        if self.N is not None and (not isinstance(self.N, int) or self.N < 1):
            raise PtychoInputError(f"ChainParams.N: expected a positive int or None, got {self.N!r}")
        if not (isinstance(self.nphotons, (int, float)) and np.isfinite(self.nphotons) and self.nphotons > 0):
            raise PtychoInputError(f"ChainParams.nphotons: expected a finite number > 0, got {self.nphotons!r}")
        if self.variant not in ("main", "seed"):
            raise PtychoInputError(f"ChainParams.variant: expected 'main' or 'seed', got {self.variant!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def group_kwargs(self, raw: RawData) -> dict:
        """The keyword arguments of `group` these parameters stand for (N from the data when None)."""
        return dict(
            N=self.N if self.N is not None else raw.N,
            gridsize=self.gridsize,
            K=self.K,
            nsamples=self.n_groups,
            seed=self.seed,
            sequential=self.sequential,
            oversample=self.oversample,
            neighbor_pool_size=self.neighbor_pool_size,
            variant=self.variant,
            engine=self.engine,
            patch_positions=self.patch_positions,
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class ChainResult:
    """Every stage output of one chain run."""

    params: ChainParams
    grouped: GroupedData
    container: Container
    intensity_scales: dict[str, float]
    training_scale: float
    scaler: IntensityScaler


def run_chain(
    raw: RawData,
    params: ChainParams = ChainParams(),
    *,
    nn_indices=None,
    progress: Callable[[str], None] | None = None,
) -> ChainResult:
    """Run grouping → normalize_data → container → intensity scales → IntensityScaler on `raw`.

    Args:
        raw: the scan.
        params: chain parameters.
        nn_indices: inject (B, C) groups, skipping selection.
        progress: called with each stage name as it starts (e.g. to drive a progress bar).
    """
    tick = progress or (lambda stage: None)
    tick("grouping")
    args = params.group_kwargs(raw)
    N, nn = choose_groups(raw.positions(), frame_size=raw.N, nn_indices=nn_indices, key=None, **args)
    # One device copy of the frames serves the gather and the raw-frame energy.
    frames = jnp.asarray(raw.diff3d)
    grouped = grouped_from_indices(raw, nn, N=N, variant=params.variant, patch_positions=params.patch_positions, frames=frames)
    tick("container")
    container = make_container(grouped, raw.probeGuess, nphotons=params.nphotons)
    tick("intensity_scale")
    scales = all_intensity_scales(
        raw_diff3d=frames, grouped_diffraction=grouped.diffraction, X=container.X, N=N, nphotons=params.nphotons
    )
    training = scales[TRAINING_SCALE_KEY[params.variant]]  # = training_intensity_scale(container, ...)
    tick("scaler")
    scaler = IntensityScaler.from_scale(training, trainable=params.trainable)
    logger.info("chain: %d groups of %d, gain %.6g, training scale %.9g", len(grouped), grouped.nn_indices.shape[1], float(grouped.normalize_gain), training)
    return ChainResult(
        params=params, grouped=grouped, container=container, intensity_scales=scales, training_scale=training, scaler=scaler
    )
