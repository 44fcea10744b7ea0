"""The upstream variants as data: what differs between `main` and `seed`, one frozen object each (pipeline.md §2)."""

import dataclasses
import typing
from typing import Literal

from ._errors import PtychoInputError

VariantName = Literal["main", "seed"]
"""The name of an upstream variant: the type of `ChainParams.variant` (its values: `VARIANT_NAMES`)."""
VARIANT_NAMES: tuple[VariantName, ...] = typing.get_args(VariantName)


@dataclasses.dataclass(frozen=True)
class Variant:
    """The numerics of one upstream variant, consulted by the stages (never `if variant == ...`).

    Attributes:
        name: "main" or "seed".
        tf_order_energies: normalisation energies as float32 per-frame sums in TF-CPU order with
            NumPy's float32 mean (seed, `loader.normalize_data`); otherwise float64 (main).
        training_scale_key: the `all_intensity_scales` entry that is the training scale.
        local_offset_sign: sign of the relative offsets (both variants −1; [DOSE] used +1).
        float32_frames_only: the variant squares and sums the frames in the dtype they arrive in
            (seed's `loader.normalize_data`: uint16 wraps, float64 sums in float64), so only frames
            given as float32 reproduce it (specs/bad-input.md §2.1).
    """

    name: VariantName
    tf_order_energies: bool
    training_scale_key: str
    local_offset_sign: float = -1.0
    float32_frames_only: bool = False


MAIN = Variant(
    name="main",
    tf_order_energies=False,
    training_scale_key="main_head_train_pinn_calculate_intensity_scale",
)
SEED = Variant(
    name="seed",
    tf_order_energies=True,
    training_scale_key="seed_era_dataset_derived_scale_normalized_X",
    float32_frames_only=True,
)
VARIANTS: dict[VariantName, Variant] = {v.name: v for v in (MAIN, SEED)}
"""The variants by name, in `VARIANT_NAMES` order (tests/test_grouping.py checks the two agree)."""


def get_variant(name: str) -> Variant:
    """The `Variant` called `name`.

    Raises:
        PtychoInputError: an unknown name.
    """
    try:
        return VARIANTS[name]
    except (KeyError, TypeError):
        raise PtychoInputError(
            f"variant: expected one of {tuple(VARIANTS)}, got {name!r}"
        ) from None
