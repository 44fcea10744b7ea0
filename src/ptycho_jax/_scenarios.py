"""The sim_lines study scenarios: `Scenario`, the presets `SCENARIOS`, `get_scenario` (simulation.md §2).

NumPy only (no JAX), so the command line lists the presets without importing the simulation.
"""

import dataclasses
import math
from types import MappingProxyType
from typing import Any, Literal

import numpy as np

from ._errors import PtychoInputError


def input_error(field: str, expected: str, actual) -> PtychoInputError:
    return PtychoInputError(f"{field}: expected {expected}, got {actual!r}")


# ---------------------------------------------------------------------------------------------
# Scenario (simulation.md §2)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Scenario:
    """One sim_lines study scenario: simulation inputs plus the runner's counts (simulation.md §2).

    Counts follow the study runner: `total_images = base_total_images · gridsize² ·
    image_multiplier`, `test_count = int(round(total_images · split_fraction))` (Python rounding),
    `train_count = total_images - test_count`, `n_groups = group_count · group_multiplier`, and the
    report's inference grouping uses `inference_groups = min(n_groups, group_limit)`.

    `position_seed` is the seed of the scan positions: upstream hard-codes 42 there, so `sim_seed`
    never moves them; here `sim_seed` seeds the Poisson noise key (upstream's noise came from
    TensorFlow's global RNG) when `simulate` gets no `key`.

    Raises:
        PtychoInputError: a field is out of range, or the counts are inconsistent (either split
            empty, `n_groups > min(train_count, test_count)`, `neighbor_count < gridsize²`).
    """

    name: str
    gridsize: int
    base_total_images: int
    group_count: int
    N: int = 64
    object_size: int = 392
    object_seed: int = 42
    sim_seed: int = 42
    position_seed: int = 42
    buffer: float = 10.0
    split_fraction: float = 0.5
    split_axis: Literal["x", "y"] = "y"
    image_multiplier: int = 1
    group_multiplier: int = 1
    group_limit: int = 64
    neighbor_count: int = 4
    batch_size: int = 16
    nphotons: float = 1e9
    probe_mode: Literal["idealized", "custom"] = "idealized"
    probe_path: str | None = None
    probe_scale: float = 10.0
    default_probe_scale: float = 0.7

    def __post_init__(self):
        where = f"Scenario({self.name!r})"
        if not isinstance(self.name, str) or not self.name:
            raise input_error("Scenario.name", "a non-empty str", self.name)
        minimum = {
            "gridsize": 1, "base_total_images": 1, "group_count": 1, "N": 4, "object_size": 4,
            "object_seed": 0, "sim_seed": 0, "position_seed": 0, "image_multiplier": 1,
            "group_multiplier": 1, "group_limit": 1, "neighbor_count": 1, "batch_size": 1,
        }  # fmt: skip
        for f, lo in minimum.items():
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
                raise input_error(f"{where}.{f}", f"an int >= {lo}", v)
            object.__setattr__(self, f, int(v))
        for f in ("object_seed", "sim_seed", "position_seed"):
            if getattr(self, f) >= 2**32:
                raise input_error(
                    f"{where}.{f}", "an int < 2**32 (NumPy RandomState seed)", getattr(self, f)
                )
        if self.N % 2:
            raise input_error(f"{where}.N", "an even frame size", self.N)
        for f, lo_open in (("buffer", None), ("split_fraction", 0.0), ("nphotons", 0.0),
                           ("probe_scale", 0.0), ("default_probe_scale", 0.0)):  # fmt: skip
            v = getattr(self, f)
            if (
                isinstance(v, bool)
                or not isinstance(v, (int, float, np.integer, np.floating))
                or not math.isfinite(v)
            ):
                raise input_error(f"{where}.{f}", "a finite number", v)
            v = float(v)
            if lo_open is not None and not v > lo_open:
                raise input_error(f"{where}.{f}", f"a number > {lo_open}", v)
            object.__setattr__(self, f, v)
        if self.buffer < 0:
            raise input_error(f"{where}.buffer", "a number >= 0", self.buffer)
        if not self.split_fraction < 1.0:
            raise input_error(f"{where}.split_fraction", "a number in (0, 1)", self.split_fraction)
        if self.split_axis not in ("x", "y"):
            raise input_error(f"{where}.split_axis", "'x' or 'y'", self.split_axis)
        if self.probe_mode not in ("idealized", "custom"):
            raise input_error(f"{where}.probe_mode", "'idealized' or 'custom'", self.probe_mode)
        if self.probe_mode == "custom" and not self.probe_path:
            raise input_error(
                f"{where}.probe_path",
                "an NPZ path holding probeGuess for probe_mode='custom'",
                self.probe_path,
            )
        C = self.gridsize**2
        if self.neighbor_count < C:
            raise input_error(f"{where}.neighbor_count", f">= gridsize² = {C}", self.neighbor_count)
        if self.test_count <= 0 or self.train_count <= 0:
            raise PtychoInputError(
                f"{where}: expected train and test counts > 0, got train_count={self.train_count}, "
                f"test_count={self.test_count} (total_images={self.total_images}, "
                f"split_fraction={self.split_fraction})"
            )
        if self.n_groups > min(self.train_count, self.test_count):
            raise PtychoInputError(
                f"{where}.group_count: expected group_count·group_multiplier <= min(train_count, "
                f"test_count) = {min(self.train_count, self.test_count)}, got {self.n_groups}"
            )

    @property
    def total_images(self) -> int:
        """Positions simulated: `base_total_images · gridsize² · image_multiplier`."""
        return self.base_total_images * self.gridsize**2 * self.image_multiplier

    @property
    def test_count(self) -> int:
        """Positions in the test half: `int(round(total_images · split_fraction))`."""
        return int(round(self.total_images * self.split_fraction))  # noqa: RUF046 (as upstream)

    @property
    def train_count(self) -> int:
        """Positions in the train half: `total_images - test_count`."""
        return self.total_images - self.test_count

    @property
    def n_groups(self) -> int:
        """Groups for training: `group_count · group_multiplier`."""
        return self.group_count * self.group_multiplier

    @property
    def inference_groups(self) -> int:
        """Groups of the report's inference grouping: `min(n_groups, group_limit)`."""
        return min(self.n_groups, self.group_limit)

    def to_dict(self) -> dict:
        """The fields plus the derived counts, JSON-ready."""
        d = dataclasses.asdict(self)
        d.update(total_images=self.total_images, train_count=self.train_count, test_count=self.test_count,
                 n_groups=self.n_groups, inference_groups=self.inference_groups)  # fmt: skip
        return d


SCENARIOS = MappingProxyType(
    {
        # Stable profiles of the diagnostic runner that wrote the seed report (simulation.md §2).
        "gs1_ideal": Scenario(
            name="gs1_ideal", gridsize=1, base_total_images=512, group_count=256, batch_size=8
        ),
        "gs2_ideal": Scenario(
            name="gs2_ideal", gridsize=2, base_total_images=256, group_count=128, batch_size=4
        ),
    }
)
"""Preset scenarios by name (read-only)."""

_FIELDS = tuple(f.name for f in dataclasses.fields(Scenario))
_FLOAT_FIELDS = ("buffer", "split_fraction", "nphotons", "probe_scale", "default_probe_scale")


def get_scenario(name: str, **overrides: Any) -> Scenario:
    """The preset scenario `name`, with `overrides` applied by `dataclasses.replace` (validated again).

    Example: `get_scenario("gs2_ideal", nphotons=1e4, sim_seed=7)`.

    Raises:
        PtychoInputError: unknown name or field, or an override fails validation.
    """
    if name not in SCENARIOS:
        raise PtychoInputError(
            f"get_scenario: name: expected one of {sorted(SCENARIOS)}, got {name!r}"
        )
    unknown = sorted(set(overrides) - set(_FIELDS))
    if unknown:
        raise PtychoInputError(
            f"get_scenario: overrides: expected fields among {list(_FIELDS)}, got {unknown}"
        )
    for f in _FLOAT_FIELDS:  # accept ints for float fields (the dataclass is type-checked in tests)
        v = overrides.get(f)
        if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
            overrides[f] = float(v)
    return dataclasses.replace(SCENARIOS[name], **overrides)
