"""The `ptycho_torch` backend: upstream PtychoPINN's own PyTorch port, through its own code paths.

specs/crosscheck.md §2.5. Runs in the upstream environment's worker process (as `upstream`,
`ptycho_jax.crosscheck.upstream`) and calls the port's grouping (`patch_generator.group_coords`),
normalisation (`helper.get_rms_scaling_factor`), patch extraction (`datagen.get_image_patches`),
intensity scale (`helper.derive_intensity_scale_from_amplitudes`), scaler
(`model.IntensityScalerModule`) and container (`data_container_bridge.PtychoDataContainerTorch`)
— never the bridges that hand grouping back to TensorFlow (`raw_data_bridge.RawDataTorch`).
What the port has no code for is declared in `not_computed`.
"""

from typing import Any

from .backends import CONTAINER_KEYS, GROUPED_KEYS, StageUnsupported
from .upstream import WorkerBackend

NOT_COMPUTED = frozenset(
    {
        # the port has no mirrored-position ground truth; its patches sit at each member
        "patches.Y",
        # the port keeps no start coordinates per member (from_np stores zeros for the rest)
        "grouped.coords_start_nn",
        # scales the port has no function for (report quantities, TF closed forms)
        "intensity_scales.fallback_scale_closed_form",
        "intensity_scales.main_head_train_pinn_calculate_intensity_scale",
        "intensity_scales.raw_E_batch_sum_psi2",
        "intensity_scales.raw_dataset_scale",
        "intensity_scales.grouped_E_batch_sum_psi2_over_HWC",
        "intensity_scales.grouped_dataset_scale_over_HWC",
        "intensity_scales.container_norm_Y_I_diffsim_scale_nphotons",
        "intensity_scales.normalized_X_mean_sum_sq_over_HWC",
        # PtychoDataContainerTorch keeps norm_Y_I only when the grouped dict carries it
        "container.norm_Y_I",
    }
)
"""Stage arrays `ptycho_torch` does not compute (reported as declared absences)."""


class TorchPortBackend(WorkerBackend):
    """Upstream's PyTorch port `ptycho_torch` (its own functions; see the module docstring)."""

    name = "ptycho_torch"
    kind = "ptycho_torch"
    not_computed = NOT_COMPUTED

    def grouping(self, raw: Any, params: Any):
        return {"nn_indices": self._run("torch_group", raw, params, None)["grouping.nn_indices"]}

    def grouped(self, raw, params, *, nn_indices=None):
        res = self._run("torch_chain", raw, params, nn_indices)
        return self._stage(res, "grouped", GROUPED_KEYS)

    def normalize(self, raw, params, *, nn_indices=None):
        return self._stage(self._run("torch_chain", raw, params, nn_indices), "normalize")

    def patches(self, raw, params, *, nn_indices=None):
        out = self._stage(self._run("torch_chain", raw, params, nn_indices), "patches")
        if not out:
            raise StageUnsupported("ptycho_torch: no patches (the input has no objectGuess)")
        return out

    def intensity_scales(self, raw, params, *, nn_indices=None):
        res = self._stage(self._run("torch_chain", raw, params, nn_indices), "intensity_scales")
        return {k: float(v) for k, v in res.items()}

    def scaler(self, x, *, scale, trainable=True):
        return self._scaler("torch_scaler", x, scale, trainable)

    def container(self, raw, params, *, nn_indices=None):
        res = self._run("torch_chain", raw, params, nn_indices)
        return self._stage(res, "container", CONTAINER_KEYS)

    def patches_at(self, raw: Any, nn_indices: Any, shift: tuple[float, float]) -> Any:
        """The port's `Y_member` with every scan position moved by `shift` = (dx, dy) pixels.

        Diagnostics for the half-pixel convention (specs/crosscheck.md §2.5).
        """
        import numpy as np

        nn_path, out_path = self.worker.file("nn"), self.worker.file("patches")
        np.savez(nn_path, nn_indices=np.asarray(nn_indices))
        self.worker.request(
            "torch_patches",
            raw=str(self._raw_file(raw)),
            nn=str(nn_path),
            shift=[float(shift[0]), float(shift[1])],
            out=str(out_path),
        )
        return self._load(out_path)["Y_member"]
