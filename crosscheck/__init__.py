"""Cross-check a port of the PtychoPINN data chain against a reference, stage by stage (specs/crosscheck.md).

Public names are loaded lazily (so `import ptycho_jax.crosscheck.pytest_plugin` stays cheap):
`run_crosscheck`, `write_outputs`, `Verdict`, `EXIT_CODES`, `HarnessInputError`, `resolve_backend`, `Backend`, `StageUnsupported`,
`ToleranceTable`, `Tolerance`, `ArrayDelta`, `StageResult`, `CrosscheckResult`, `diagnose`,
`assert_backends_match`.
"""

import importlib

_EXPORTS = {
    "run_crosscheck": "run",
    "EXIT_CODES": "compare",
    "Verdict": "compare",
    "HarnessInputError": "errors",
    "OutputError": "errors",
    "write_outputs": "render",
    "format_failure": "render",
    "resolve_backend": "backends",
    "Backend": "backends",
    "StageUnsupported": "backends",
    "STAGES": "backends",
    "ToleranceTable": "compare",
    "Tolerance": "compare",
    "ToleranceError": "compare",
    "ArrayDelta": "compare",
    "StageResult": "compare",
    "CrosscheckResult": "compare",
    "diagnose": "diagnose",
    "Diagnosis": "diagnose",
    "assert_backends_match": "pytest_plugin",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'crosscheck' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
