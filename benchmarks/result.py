"""The result of a run and its JSON file format (specs/benchmarks.md §7)."""

import dataclasses
from typing import Any

import numpy as np

from .plan import SCHEMA


@dataclasses.dataclass(kw_only=True)
class BenchResult:
    """Everything one run measured; `to_json` is the file format."""

    preset: str
    command: str
    machine: dict[str, Any]
    versions: dict[str, Any]
    git: dict[str, Any]
    copy_bandwidth: dict[str, Any]
    cases: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    figures: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    ratios: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    checks: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    cuts: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    errors: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    targets: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    compile: dict[str, Any] = dataclasses.field(
        default_factory=dict
    )  # compile time apart (benchmarks/compile_time.py)
    started: str = ""
    wall_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"schema": SCHEMA, **dataclasses.asdict(self)}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> "BenchResult":
        """Read back `to_json`'s document (to re-render Markdown and plot, e.g. of a GPU run)."""
        from ptycho_jax import PtychoInputError

        if doc.get("schema") != SCHEMA:
            raise PtychoInputError(
                f"bench --render: schema: expected {SCHEMA!r}, got {doc.get('schema')!r}"
            )
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in doc.items() if k in names})


def json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
