"""The array names of the harness's stages, shared by the backends and the upstream worker.

Standard library only: the worker imports it under the upstream environment, as a top-level module.
"""

SCALE_KEYS = (
    "fallback_scale_closed_form",
    "main_head_train_pinn_calculate_intensity_scale",
    "seed_era_dataset_derived_scale_normalized_X",
    "raw_E_batch_sum_psi2",
    "raw_dataset_scale",
    "grouped_E_batch_sum_psi2_over_HWC",
    "grouped_dataset_scale_over_HWC",
    "container_norm_Y_I_diffsim_scale_nphotons",
    "normalized_X_mean_sum_sq_over_HWC",
)
CONTAINER_KEYS = (
    "X",
    "Y_I",
    "Y_phi",
    "coords_nominal",
    "coords_true",
    "probe",
    "norm_Y_I",
    "nn_indices",
    "global_offsets",
    "local_offsets",
)
COORD_KEYS = (
    "coords_nn",
    "coords_offsets",
    "coords_relative",
    "coords_start_nn",
    "coords_start_offsets",
    "coords_start_relative",
)
