"""Atomic file output: every file appears whole or not at all (temporary name in the same folder, then rename)."""

import io
import os
import pathlib
import tempfile
from collections.abc import Mapping, Sequence

import numpy as np

from ._errors import OutputWriteError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_files_atomically(files: Sequence[tuple[str | os.PathLike, bytes]]) -> None:
    """Write every `(path, data)` to a temporary name in its folder, then rename each into place.

    Files get the permissions a plain `open(path, "w")` would give (0666 less the umask). On any
    error the temporary files are removed, and so are targets this call created; targets that
    existed before keep either their old or their new complete content.
    """
    mode = 0o666 & ~_umask()
    temps: list[tuple[str, pathlib.Path]] = []
    created: list[pathlib.Path] = []
    path = None
    try:
        for path, data in files:
            path = pathlib.Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            temps.append((tmp, path))
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, mode)
        for tmp, path in temps:
            existed = path.exists()
            os.replace(tmp, path)
            if not existed:
                created.append(path)
    except BaseException as e:
        _clean_up(temps, created)
        if isinstance(e, OSError) and e.filename is None and path is not None:
            # a failed write (a full disk) names no file: say which one, keep the errno and type
            raise OutputWriteError(e.errno, e.strerror or str(e), str(path)) from e
        raise


def _clean_up(temps: list[tuple[str, pathlib.Path]], created: list[pathlib.Path]) -> None:
    """Remove the temporary files and the targets this call created."""
    for tmp, _ in temps:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
    for path in created:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def npz_bytes(arrays: Mapping[str, np.ndarray], *, compressed: bool = False) -> bytes:
    """The bytes of an NPZ archive holding `arrays` (no pickled objects)."""
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, **arrays)
    return buf.getvalue()


def write_npz_atomic(
    path: str | os.PathLike, arrays: Mapping[str, np.ndarray], *, compressed: bool = False
) -> None:
    """Write `arrays` to `path` as an NPZ archive, atomically."""
    write_files_atomically([(path, npz_bytes(arrays, compressed=compressed))])
