"""ptycho-jax: a jitted JAX port of PtychoPINN's data chain, with a TensorFlow cross-check harness."""

from ._container import Container as Container
from ._container import make_container as make_container
from ._coords import group_coordinates as group_coordinates
from ._errors import (
    BackendUnavailableError as BackendUnavailableError,
)
from ._errors import (
    GroupingError as GroupingError,
)
from ._errors import (
    NormalizationError as NormalizationError,
)
from ._errors import (
    ObjectExtentError as ObjectExtentError,
)
from ._errors import (
    OutputPathError as OutputPathError,
)
from ._errors import (
    OutputWriteError as OutputWriteError,
)
from ._errors import (
    PtychoInputError as PtychoInputError,
)
from ._errors import (
    PtychoJaxError as PtychoJaxError,
)
from ._errors import (
    RawDataError as RawDataError,
)
from ._figure import render_figure as render_figure
from ._grouping import (
    DuplicatePositionWarning as DuplicatePositionWarning,
)
from ._grouping import (
    GroupedData as GroupedData,
)
from ._grouping import (
    MirroredPatchWarning as MirroredPatchWarning,
)
from ._grouping import (
    select_groups as select_groups,
)
from ._intensity import (
    EnergyTotals as EnergyTotals,
)
from ._intensity import (
    all_intensity_scales as all_intensity_scales,
)
from ._intensity import (
    closed_form_intensity_scale as closed_form_intensity_scale,
)
from ._intensity import (
    closed_form_intensity_scale_f32 as closed_form_intensity_scale_f32,
)
from ._intensity import (
    dataset_intensity_scale as dataset_intensity_scale,
)
from ._intensity import (
    diffsim_norm_Y_I as diffsim_norm_Y_I,
)
from ._intensity import (
    intensity_scales as intensity_scales,
)
from ._intensity import (
    mean_frame_energy as mean_frame_energy,
)
from ._intensity import (
    seed_training_intensity_scale as seed_training_intensity_scale,
)
from ._intensity import (
    training_intensity_scale as training_intensity_scale,
)
from ._mesh import make_mesh as make_mesh
from ._mesh import process_frame_range as process_frame_range
from ._normalize import normalize_data as normalize_data
from ._params import ChainParams as ChainParams
from ._patches import (
    extract_group_patches as extract_group_patches,
)
from ._patches import (
    extract_patches as extract_patches,
)
from ._patches import (
    group_patch_centres as group_patch_centres,
)
from ._pipeline import ChainResult as ChainResult
from ._pipeline import group as group
from ._pipeline import run_chain as run_chain
from ._rawdata import RawData as RawData
from ._report import (
    IntensityReport as IntensityReport,
)
from ._report import (
    StageRecord as StageRecord,
)
from ._report import (
    build_intensity_report as build_intensity_report,
)
from ._report import (
    chain_report as chain_report,
)
from ._report import (
    dataset_scale_comparison as dataset_scale_comparison,
)
from ._report import (
    intensity_scaler_state as intensity_scaler_state,
)
from ._report import (
    make_provenance as make_provenance,
)
from ._report import (
    record_stage as record_stage,
)
from ._report_files import write_report as write_report
from ._scaler import IntensityScaler as IntensityScaler
from ._simulate import (
    SCENARIOS as SCENARIOS,
)
from ._simulate import (
    Scenario as Scenario,
)
from ._simulate import (
    SimulatedData as SimulatedData,
)
from ._simulate import (
    get_scenario as get_scenario,
)
from ._simulate import (
    make_idealized_probe as make_idealized_probe,
)
from ._simulate import (
    make_lines_object as make_lines_object,
)
from ._simulate import (
    make_scan_positions as make_scan_positions,
)
from ._simulate import (
    normalize_probe as normalize_probe,
)
from ._simulate import (
    simulate as simulate,
)
from ._simulate import (
    simulate_from_positions as simulate_from_positions,
)
from ._simulate import (
    simulate_raw as simulate_raw,
)
from ._simulate import (
    split_raw_by_axis as split_raw_by_axis,
)
from ._stats import array_stats as array_stats
from ._validate import (
    AllZeroPatchesWarning as AllZeroPatchesWarning,
)
from ._validate import (
    PatchOutsideObjectWarning as PatchOutsideObjectWarning,
)
from ._variants import Variant as Variant
from ._variants import get_variant as get_variant
from ._version import __version__ as __version__
