"""A worked example backend: part of the chain in plain NumPy, channel-first, with its own names.

This is the backend `specs/writing-a-backend.md` walks through; `tests/test_crosscheck_run.py`
runs it through the command line against the JAX port:

    ptycho-jax crosscheck --port ptycho_jax.crosscheck.examples.numpy_port:NumpyPort --reference jax \\
        --input scan.npz --out out/

It shows every declaration a backend can make:

* `array_names` — this port calls the normalised frames `X` and the gain `gain`; the harness
  renames them to ours (`X_full`, `normalize_gain`) before comparing.
* `layouts` — its images are channel-first (B, C, H, W) and its coordinates (B, C, xy); the
  harness reorders them into ours (B, H, W, C) / (B, 1, xy, C), and hands the scaler its input in
  the port's layout.
* `not_computed` — what it does not compute (groups, patches, container, three scales; the
  `seed` variant of normalize_data): documented absences, reported and counted, not INCOMPLETE.
"""

import math

import numpy as np

from ptycho_jax.crosscheck.backends import StageUnsupported


class NumpyPort:
    """The grouped arrays, normalize_data (main variant), six scales and the scaler, in NumPy."""

    name = "numpy-port"

    # their name -> our name, per stage ("*" would apply to every stage)
    array_names = {
        "grouped": {"frames": "diffraction", "centres": "coords_offsets"},
        "normalize": {"X": "X_full", "gain": "normalize_gain"},
        "scaler": {"log_s": "log_scale", "scaled": "scaler_out", "unscaled": "scaler_inv_out"},
    }

    # our array name (or "images" for every B H W C array) -> this port's axis layout
    layouts = {
        "images": "B C H W",
        "coords_nn": "B C xy",
        "coords_relative": "B C xy",
        "coords_start_nn": "B C xy",
        "coords_start_relative": "B C xy",
        "coords_offsets": "B xy",
        "coords_start_offsets": "B xy",
    }

    def not_computed(self, params):
        """What this port does not compute, for these parameters."""
        out = [
            "grouping",  # it takes the reference's groups
            "patches",
            "container",
            "intensity_scales.seed_era_dataset_derived_scale_normalized_X",
            "intensity_scales.container_norm_Y_I_diffsim_scale_nphotons",
            "intensity_scales.normalized_X_mean_sum_sq_over_HWC",
        ]
        if params.variant != "main":
            out.append("normalize")
        return out

    # -- stages ---------------------------------------------------------------------------------

    def _groups(self, nn_indices):
        if nn_indices is None:
            raise StageUnsupported("numpy-port does not group; it needs the reference's groups")
        return np.asarray(nn_indices)

    @staticmethod
    def _N(raw, params):
        return params.N if params.N is not None else int(np.shape(raw.diff3d)[-1])

    def grouped(self, raw, params, *, nn_indices=None):
        nn = self._groups(nn_indices)
        out = {"frames": np.asarray(raw.diff3d)[nn]}  # (B, C, H, W)
        for prefix, x, y in (
            ("coords", raw.xcoords, raw.ycoords),
            ("coords_start", raw.xcoords_start, raw.ycoords_start),
        ):
            xy = np.stack([np.asarray(x, np.float64)[nn], np.asarray(y, np.float64)[nn]], axis=-1)
            centre = xy.mean(axis=1)  # (B, xy)
            out[f"{prefix}_nn"] = xy  # (B, C, xy)
            out[f"{prefix}_relative"] = -1 * (xy - centre[:, None, :])
            out["centres" if prefix == "coords" else f"{prefix}_offsets"] = centre
        return out

    def normalize(self, raw, params, *, nn_indices=None):
        if params.variant != "main":
            raise StageUnsupported("numpy-port implements the main variant only")
        frames = self.grouped(raw, params, nn_indices=nn_indices)["frames"]
        N = self._N(raw, params)
        f64 = frames.astype(np.float64)
        energy = np.mean(np.sum(f64 * f64, axis=(2, 3)))  # mean over (b, c) of Σ_hw D²
        gain = np.float32(math.sqrt((N / 2) ** 2 / energy))
        return {"X": gain * frames, "gain": gain}

    def intensity_scales(self, raw, params, *, nn_indices=None):
        frames = self.grouped(raw, params, nn_indices=nn_indices)["frames"]
        N, nph = self._N(raw, params), float(params.nphotons)

        def mean_energy(x):
            x = np.asarray(x, np.float64).reshape(len(x), -1)
            return float(np.mean(np.sum(x * x, axis=1)))

        e_raw, e_grouped = mean_energy(raw.diff3d), mean_energy(frames)
        return {
            "fallback_scale_closed_form": math.sqrt(nph) / (N / 2),
            "main_head_train_pinn_calculate_intensity_scale": float(
                np.sqrt(np.float32(nph)) / np.float32(N / 2)
            ),
            "raw_E_batch_sum_psi2": e_raw,
            "raw_dataset_scale": math.sqrt(nph / e_raw),
            "grouped_E_batch_sum_psi2_over_HWC": e_grouped,
            "grouped_dataset_scale_over_HWC": math.sqrt(nph / e_grouped),
        }

    def scaler(self, x, *, scale, trainable=True):
        x = np.asarray(x, np.float32)  # (B, C, H, W): the harness converted it to our layout
        log_s = np.float32(math.log(scale))  # float64 log, one float32 variable (as upstream)
        s = np.float32(math.exp(float(log_s)))  # C expf = float64 exp rounded; not np.exp(float32)
        scaled = x / s
        return {"log_s": log_s, "scaled": scaled, "unscaled": s * scaled}
