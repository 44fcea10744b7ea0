"""ptycho-jax: a jitted JAX port of PtychoPINN's data chain, with a TensorFlow cross-check harness."""

__version__ = "0.1.0"

# --- core (lead) ---
from ._errors import (
    BackendUnavailableError as BackendUnavailableError,
    GroupingError as GroupingError,
    NormalizationError as NormalizationError,
    PtychoInputError as PtychoInputError,
    RawDataError as RawDataError,
)
from ._rawdata import RawData as RawData
from ._grouping import (
    DuplicatePositionWarning as DuplicatePositionWarning,
    GroupedData as GroupedData,
    MirroredPatchWarning as MirroredPatchWarning,
    group as group,
    select_groups as select_groups,
)
from ._coords import group_coordinates as group_coordinates
from ._normalize import normalize_data as normalize_data
from ._intensity import (
    all_intensity_scales as all_intensity_scales,
    closed_form_intensity_scale as closed_form_intensity_scale,
    closed_form_intensity_scale_f32 as closed_form_intensity_scale_f32,
    dataset_intensity_scale as dataset_intensity_scale,
    mean_frame_energy as mean_frame_energy,
    scale_nphotons as scale_nphotons,
    seed_training_intensity_scale as seed_training_intensity_scale,
    training_intensity_scale as training_intensity_scale,
)
from ._scaler import IntensityScaler as IntensityScaler
from ._container import Container as Container, make_container as make_container
from ._pipeline import ChainParams as ChainParams, ChainResult as ChainResult, run_chain as run_chain

# --- simulation + patches (helper A) ---
from ._patches import (
    extract_group_patches as extract_group_patches,
    extract_patches as extract_patches,
    group_patch_centres as group_patch_centres,
)
from ._simulate import (
    SCENARIOS as SCENARIOS,
    Scenario as Scenario,
    SimulatedData as SimulatedData,
    get_scenario as get_scenario,
    make_idealized_probe as make_idealized_probe,
    make_lines_object as make_lines_object,
    make_scan_positions as make_scan_positions,
    normalize_probe as normalize_probe,
    simulate as simulate,
    simulate_from_positions as simulate_from_positions,
    simulate_raw as simulate_raw,
    split_raw_by_axis as split_raw_by_axis,
)

# --- report (helper B) ---
from ._stats import array_stats as array_stats
from ._report import (
    IntensityReport as IntensityReport,
    StageRecord as StageRecord,
    build_intensity_report as build_intensity_report,
    chain_report as chain_report,
    dataset_scale_comparison as dataset_scale_comparison,
    intensity_scaler_state as intensity_scaler_state,
    make_provenance as make_provenance,
    record_stage as record_stage,
    write_report as write_report,
)
from ._figure import render_figure as render_figure

# --- sharding / streaming (helper E) ---
from ._sharding import (
    group_sharded as group_sharded,
    make_mesh as make_mesh,
    normalize_data_sharded as normalize_data_sharded,
    process_frame_range as process_frame_range,
    run_chain_scaled as run_chain_scaled,
    run_chain_sharded as run_chain_sharded,
)
from ._streaming import run_chain_streamed as run_chain_streamed
