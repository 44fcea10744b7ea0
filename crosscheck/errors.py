"""The harness's own errors (kept apart so every crosscheck module can raise them)."""

from ptycho_jax import PtychoInputError


class HarnessInputError(PtychoInputError):
    """Bad input to the harness itself (CLI exit 2): stage names, `--allow-missing` names, a
    backend's declarations, an input or parameters that contradict the reference's recording."""


class OutputError(ValueError):
    """A stage returned something the harness cannot compare (not a mapping, object arrays, a
    layout that does not fit); that stage fails with this message."""
