"""ptycho-jax: a jitted JAX port of PtychoPINN's data chain, with a TensorFlow cross-check harness.

Importing the package is light: it imports neither numpy nor jax. Each public name is loaded from
its module on first use (PEP 562), so that `reuse_freed_host_memory()` can run before either is
imported (see `ptycho_jax.app.host_memory`) and `ptycho-jax --help` starts at once.
"""

import importlib
import typing

from ._errors import PtychoJaxError
from ._version import __version__ as __version__

if typing.TYPE_CHECKING:  # what type checkers and editors see; at run time `__getattr__` loads them
    from ._container import Container as Container
    from ._container import make_container as make_container
    from ._coords import group_coordinates as group_coordinates
    from ._errors import BackendUnavailableError as BackendUnavailableError
    from ._errors import ExitCode as ExitCode
    from ._errors import GroupingError as GroupingError
    from ._errors import NormalizationError as NormalizationError
    from ._errors import ObjectExtentError as ObjectExtentError
    from ._errors import OutputPathError as OutputPathError
    from ._errors import OutputWriteError as OutputWriteError
    from ._errors import PtychoInputError as PtychoInputError
    from ._errors import PtychoJaxError as PtychoJaxError
    from ._errors import RawDataError as RawDataError
    from ._grouping import DuplicatePositionWarning as DuplicatePositionWarning
    from ._grouping import GroupedData as GroupedData
    from ._grouping import MirroredPatchWarning as MirroredPatchWarning
    from ._grouping import select_groups as select_groups
    from ._intensity import EnergyTotals as EnergyTotals
    from ._intensity import all_intensity_scales as all_intensity_scales
    from ._intensity import closed_form_intensity_scale as closed_form_intensity_scale
    from ._intensity import closed_form_intensity_scale_f32 as closed_form_intensity_scale_f32
    from ._intensity import dataset_intensity_scale as dataset_intensity_scale
    from ._intensity import diffsim_norm_Y_I as diffsim_norm_Y_I
    from ._intensity import intensity_scales as intensity_scales
    from ._intensity import mean_frame_energy as mean_frame_energy
    from ._intensity import seed_training_intensity_scale as seed_training_intensity_scale
    from ._intensity import training_intensity_scale as training_intensity_scale
    from ._mesh import make_mesh as make_mesh
    from ._mesh import process_frame_range as process_frame_range
    from ._normalize import normalize_data as normalize_data
    from ._params import ChainParams as ChainParams
    from ._params import Engine as Engine
    from ._params import NeighbourSearch as NeighbourSearch
    from ._params import PatchPositions as PatchPositions
    from ._params import VariantName as VariantName
    from ._patches import extract_group_patches as extract_group_patches
    from ._patches import extract_patches as extract_patches
    from ._patches import group_patch_centres as group_patch_centres
    from ._pipeline import ChainResult as ChainResult
    from ._pipeline import group as group
    from ._pipeline import run_chain as run_chain
    from ._rawdata import RawData as RawData
    from ._rawdata import frames_as_given as frames_as_given
    from ._report import IntensityReport as IntensityReport
    from ._report import StageRecord as StageRecord
    from ._report import build_intensity_report as build_intensity_report
    from ._report import chain_report as chain_report
    from ._report import dataset_scale_comparison as dataset_scale_comparison
    from ._report import intensity_scaler_state as intensity_scaler_state
    from ._report import make_provenance as make_provenance
    from ._report import record_stage as record_stage
    from ._scaler import IntensityScaler as IntensityScaler
    from ._scenarios import SCENARIOS as SCENARIOS
    from ._scenarios import Scenario as Scenario
    from ._scenarios import get_scenario as get_scenario
    from ._simulate import SimulatedData as SimulatedData
    from ._simulate import make_idealized_probe as make_idealized_probe
    from ._simulate import make_lines_object as make_lines_object
    from ._simulate import make_scan_positions as make_scan_positions
    from ._simulate import normalize_probe as normalize_probe
    from ._simulate import simulate as simulate
    from ._simulate import simulate_from_positions as simulate_from_positions
    from ._simulate import simulate_raw as simulate_raw
    from ._simulate import split_raw_by_axis as split_raw_by_axis
    from ._stats import array_stats as array_stats
    from ._validate import AllZeroPatchesWarning as AllZeroPatchesWarning
    from ._validate import PatchOutsideObjectWarning as PatchOutsideObjectWarning
    from ._variants import Variant as Variant
    from ._variants import get_variant as get_variant
    from .app.figure import render_figure as render_figure
    from .app.host_memory import HostMemorySetup as HostMemorySetup
    from .app.host_memory import release_freed_host_memory as release_freed_host_memory
    from .app.host_memory import reuse_freed_host_memory as reuse_freed_host_memory
    from .app.report_files import write_report as write_report

# public name -> the module that defines it
_MODULE_OF: dict[str, str] = {
    "Container": "_container",
    "make_container": "_container",
    "group_coordinates": "_coords",
    "BackendUnavailableError": "_errors",
    "ExitCode": "_errors",
    "GroupingError": "_errors",
    "NormalizationError": "_errors",
    "ObjectExtentError": "_errors",
    "OutputPathError": "_errors",
    "OutputWriteError": "_errors",
    "PtychoInputError": "_errors",
    "PtychoJaxError": "_errors",
    "RawDataError": "_errors",
    "render_figure": "app.figure",
    "DuplicatePositionWarning": "_grouping",
    "GroupedData": "_grouping",
    "MirroredPatchWarning": "_grouping",
    "select_groups": "_grouping",
    "HostMemorySetup": "app.host_memory",
    "release_freed_host_memory": "app.host_memory",
    "reuse_freed_host_memory": "app.host_memory",
    "EnergyTotals": "_intensity",
    "all_intensity_scales": "_intensity",
    "closed_form_intensity_scale": "_intensity",
    "closed_form_intensity_scale_f32": "_intensity",
    "dataset_intensity_scale": "_intensity",
    "diffsim_norm_Y_I": "_intensity",
    "intensity_scales": "_intensity",
    "mean_frame_energy": "_intensity",
    "seed_training_intensity_scale": "_intensity",
    "training_intensity_scale": "_intensity",
    "make_mesh": "_mesh",
    "process_frame_range": "_mesh",
    "normalize_data": "_normalize",
    "ChainParams": "_params",
    "Engine": "_params",
    "NeighbourSearch": "_params",
    "PatchPositions": "_params",
    "VariantName": "_params",
    "extract_group_patches": "_patches",
    "extract_patches": "_patches",
    "group_patch_centres": "_patches",
    "ChainResult": "_pipeline",
    "group": "_pipeline",
    "run_chain": "_pipeline",
    "RawData": "_rawdata",
    "frames_as_given": "_rawdata",
    "IntensityReport": "_report",
    "StageRecord": "_report",
    "build_intensity_report": "_report",
    "chain_report": "_report",
    "dataset_scale_comparison": "_report",
    "intensity_scaler_state": "_report",
    "make_provenance": "_report",
    "record_stage": "_report",
    "write_report": "app.report_files",
    "IntensityScaler": "_scaler",
    "SCENARIOS": "_scenarios",
    "Scenario": "_scenarios",
    "SimulatedData": "_simulate",
    "get_scenario": "_scenarios",
    "make_idealized_probe": "_simulate",
    "make_lines_object": "_simulate",
    "make_scan_positions": "_simulate",
    "normalize_probe": "_simulate",
    "simulate": "_simulate",
    "simulate_from_positions": "_simulate",
    "simulate_raw": "_simulate",
    "split_raw_by_axis": "_simulate",
    "array_stats": "_stats",
    "AllZeroPatchesWarning": "_validate",
    "PatchOutsideObjectWarning": "_validate",
    "Variant": "_variants",
    "get_variant": "_variants",
}

__all__ = sorted([*_MODULE_OF, "__version__"])


class _NoSuchNameError(PtychoJaxError, AttributeError):
    """`ptycho_jax.<name>` for a name the package does not export (an AttributeError, as PEP 562 asks)."""


def __getattr__(name: str) -> object:
    """Load a public name from its module on first access, and keep it in the package namespace."""
    module = _MODULE_OF.get(name)
    if module is None:
        raise _NoSuchNameError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
