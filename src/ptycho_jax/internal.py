"""The one internal API: names the harness (`ptycho_jax.crosscheck`) and the benchmarks need
beyond the public package, so that neither imports a private `ptycho_jax._*` module.

Everything here is core (numerics and file plumbing, nothing of the application layer); it is
kept stable for the harness and the benchmarks in this repository, not promised to users.
"""

from ._atomic import write_files_atomically
from ._grouping import gather_frames
from ._neighbours import device_neighbours, jax_neighbours, kdtree_neighbours
from ._scan import scan_raw

__all__ = [
    "device_neighbours",
    "gather_frames",
    "jax_neighbours",
    "kdtree_neighbours",
    "scan_raw",
    "write_files_atomically",
]
