"""Exceptions raised on bad input; each message names the field, the expected and the actual value.

Also the process exit codes every command of the `ptycho-jax` console script returns (`ExitCode`).
"""

import enum


class ExitCode(enum.IntEnum):
    """Process exit status of every `ptycho-jax` command (and of `crosscheck`'s verdicts)."""

    OK = 0  # success; crosscheck: PASS (every required array compared and within tolerance)
    MISMATCH = 1  # crosscheck FAIL: something compared is out of tolerance, or a backend raised
    USAGE = 2  # bad arguments or input, a bad tolerance file, an unavailable backend
    INCOMPLETE = 3  # crosscheck INCOMPLETE: something required was not compared


class PtychoJaxError(Exception):
    """Root of every error ptycho_jax raises on purpose (catch this one to catch them all)."""


class PtychoInputError(PtychoJaxError, ValueError):
    """Invalid input to a ptycho_jax function (a field has the wrong shape, dtype or value)."""


class RawDataError(PtychoInputError):
    """A RawData file or field is missing, truncated, or of the wrong shape, dtype or value."""


class GroupingError(PtychoInputError):
    """Grouping parameters are inconsistent with the data (n < C, K < C, bad nn_indices, ...)."""


class NormalizationError(PtychoInputError):
    """Diffraction cannot be normalised (zero energy, NaN/Inf frames)."""


class BackendUnavailableError(PtychoJaxError, RuntimeError):
    """A cross-check backend cannot be imported or constructed."""


class ObjectExtentError(PtychoInputError):
    """Scan positions put object patches wholly outside `objectGuess` (their labels Y would be all zero)."""


class OutputPathError(PtychoInputError):
    """An output path cannot be written: an existing file where a folder is needed, no permission, a full disk."""


class OutputWriteError(PtychoJaxError, OSError):
    """Writing an output failed in the operating system (a full disk, an I/O error): the `OSError`
    with its errno and strerror, naming the file that was being written."""
