"""Fake `ptycho.raw_data`: RawData.generate_grouped_data, get_image_patches, normalize_data."""

import numpy as np

from crosscheck import grouping as _grouping
from crosscheck import tf_reference as _R

from . import SEEN, params


def normalize_data(dset, N):
    """[MAIN] normalize_data (float64 sums)."""
    return _R.normalize_data(dset["diffraction"], N, variant="main")[0]


def get_image_patches(gt_image, global_offsets, local_offsets, N=None, gridsize=None):
    N = params.cfg["N"] if N is None else N
    SEEN.append(dict(params.cfg, _call="get_image_patches"))
    return _R.image_patches(gt_image, global_offsets, local_offsets, N=N)


class RawData:
    def __init__(
        self,
        xcoords,
        ycoords,
        xcoords_start,
        ycoords_start,
        diff3d,
        probeGuess,
        scan_index,
        objectGuess=None,
        Y=None,
        norm_Y_I=None,
        metadata=None,
    ):
        self.xcoords, self.ycoords = xcoords, ycoords
        self.xcoords_start, self.ycoords_start = xcoords_start, ycoords_start
        self.diff3d, self.probeGuess, self.scan_index = diff3d, probeGuess, scan_index
        self.objectGuess, self.Y, self.norm_Y_I, self.metadata = objectGuess, Y, norm_Y_I, metadata

    def generate_grouped_data(
        self,
        N,
        K=4,
        nsamples=1,
        dataset_path=None,
        seed=None,
        sequential_sampling=False,
        gridsize=None,
        enable_oversampling=False,
        neighbor_pool_size=None,
    ):
        SEEN.append(dict(params.cfg, _call="generate_grouped_data"))
        gridsize = params.cfg.get("gridsize", 1) if gridsize is None else gridsize
        if seed is not None and not sequential_sampling:
            np.random.seed(seed)  # upstream reseeds the global legacy RNG
        if sequential_sampling:
            np.random.seed(0)
        np.random.rand()  # and consumes it
        pos = np.stack([self.xcoords, self.ycoords], axis=1)
        nn = _grouping.select_groups(
            pos,
            gridsize=gridsize,
            K=K,
            nsamples=nsamples,
            seed=seed,
            sequential=sequential_sampling,
            oversample=enable_oversampling,
            neighbor_pool_size=neighbor_pool_size,
        )
        dset = _R.grouped_dict(self, nn, N=N, patch_positions="upstream")
        dset["objectGuess"] = self.objectGuess
        dset["X_full"] = normalize_data(dset, N)
        return dset
