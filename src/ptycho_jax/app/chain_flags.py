"""The chain flags, defined once for every chain subcommand (`report`, `crosscheck`, `bench`).

Each flag names one `ChainParams` field (`--n-groups` is `n_groups`), except `--devices` and
`--chunk-groups`, which choose the mesh or the stream path. Every flag defaults to None, "not
given"; `chain_params` fills what was not given by one rule: the flag, else the caller's defaults
(a scenario's values, a golden recording's), else `ChainParams`' own default.
"""

import argparse
import dataclasses
import re
import typing
from collections.abc import Callable, Mapping
from typing import Any

from .. import ChainParams
from .._errors import PtychoInputError

CLOSED_CHOICES: dict[str, tuple[str, ...]] = {
    name: typing.get_args(hint)
    for name, hint in typing.get_type_hints(ChainParams).items()
    if typing.get_origin(hint) is typing.Literal
}
"""The `ChainParams` fields with a closed set of values, from their `Literal` types (`VariantName`,
`Engine`, `NeighbourSearch`, `PatchPositions`): listed in --help, checked by argparse."""

CHAIN_GROUP_TITLE = "chain parameters"


@dataclasses.dataclass(frozen=True)
class ChainFlag:
    """One chain flag: its name on the command line, the `argparse` destination, how it parses."""

    flag: str
    dest: str
    help: str
    type: Callable[[str], Any] | None = None
    switch: bool = False  # --name / --no-name
    minimum: int | float | None = None  # checked before any data are read (`check_chain_flags`)
    open_minimum: bool = False  # the value must exceed `minimum`


CHAIN_FLAGS: tuple[ChainFlag, ...] = (
    ChainFlag("--N", "N", "frame size N (default: the data's)", int, minimum=2),
    ChainFlag("--gridsize", "gridsize", "group side g, C = g² members per group", int, minimum=1),
    ChainFlag("--K", "K", "neighbour count (upstream neighbor_count)", int, minimum=1),
    ChainFlag("--n-groups", "n_groups", "number of groups B (upstream nsamples)", int, minimum=1),
    ChainFlag("--seed", "seed", "grouping seed (legacy NumPy RandomState)", int, minimum=0),
    ChainFlag(
        "--sequential", "sequential", "sequential seeds (upstream sequential_sampling)", switch=True
    ),
    ChainFlag(
        "--oversample",
        "oversample",
        "K-choose-C oversampling (upstream enable_oversampling)",
        switch=True,
    ),
    ChainFlag(
        "--neighbor-pool-size",
        "neighbor_pool_size",
        "neighbour pool of the oversampled groups",
        int,
        minimum=1,
    ),
    ChainFlag("--nphotons", "nphotons", "photon budget", float, minimum=0, open_minimum=True),
    ChainFlag("--variant", "variant", "upstream variant: main line or the seed-report branch"),
    ChainFlag("--engine", "engine", "neighbour engine: scipy (upstream's groups) or jax"),
    ChainFlag(
        "--neighbour-search",
        "neighbour_search",
        "where engine scipy finds cKDTree's neighbours: host, device (the same indices) or auto "
        "(device off the CPU)",
    ),
    ChainFlag(
        "--patch-positions",
        "patch_positions",
        "object patch centres: upstream (mirrored for C > 1) or member",
    ),
    ChainFlag(
        "--devices",
        "devices",
        "shard the group axis over this many devices (mesh path)",
        int,
        minimum=1,
    ),
    ChainFlag(
        "--chunk-groups",
        "chunk_groups",
        "stream groups in chunks of this size (stream path)",
        int,
        minimum=1,
    ),
)
"""The chain flags in help order."""

PATH_FIELDS = ("devices", "chunk_groups")
"""Flags that choose the path (one device, mesh, stream), not a `ChainParams` field."""


def _param_default(field: str) -> Any:
    (f,) = [f for f in dataclasses.fields(ChainParams) if f.name == field]
    return f.default


def add_chain_arguments(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """Add the chain flags to `parser` in one argument group (every flag defaults to None)."""
    group = parser.add_argument_group(
        CHAIN_GROUP_TITLE,
        "a flag not given takes the input's value (the scenario's, the golden recording's, the benchmark case's), "
        "else ChainParams' default (in brackets)",
    )
    for cf in CHAIN_FLAGS:
        kw: dict[str, Any] = {"dest": cf.dest, "default": None, "help": cf.help}
        if cf.dest not in PATH_FIELDS and _param_default(cf.dest) is not None:
            kw["help"] += f" [{_param_default(cf.dest)}]"
        if cf.switch:
            kw["action"] = argparse.BooleanOptionalAction
        else:
            kw.update(type=cf.type, choices=CLOSED_CHOICES.get(cf.dest))
        group.add_argument(cf.flag, **kw)
    return group


def check_chain_flags(args: argparse.Namespace) -> None:
    """Range-check the chain flags given, before any data are read (PtychoInputError naming the flag)."""
    import math

    for cf in CHAIN_FLAGS:
        v = getattr(args, cf.dest, None)
        if v is None or cf.minimum is None:
            continue
        bad = not math.isfinite(v) or (v <= cf.minimum if cf.open_minimum else v < cf.minimum)
        if bad:
            rel = ">" if cf.open_minimum else ">="
            raise PtychoInputError(f"{cf.flag} must be {rel} {cf.minimum:g}, got {v:g}")


_API_WORD = re.compile(r"\b(?:ChainParams|Scenario)\.(\w+)|\b(\w+)(?=\s*(?:>=|<=|>|<)\s*\S)")


def in_flag_terms(message: str) -> str:
    """An error of the Python API in the command line's words: `ChainParams.gridsize` and
    `neighbor_pool_size >= 4` name their flags (`--gridsize`, `--neighbor-pool-size >= 4`),
    `oversample=True` is `--oversample`; a `field=value` (a recorded value) stays as it is."""
    flags = {cf.dest: cf.flag for cf in CHAIN_FLAGS}
    message = message.replace("oversample=True", "--oversample")

    def sub(m: re.Match) -> str:
        if m.group(1):  # ChainParams.field / Scenario.field
            return flags.get(m.group(1), m.group(0))
        name = m.group(2)  # a bare `field >= …`: single letters (N, K, C, n) stay as they are
        return flags[name] if name in flags and len(name) > 1 else m.group(0)

    return _API_WORD.sub(sub, message)


def given_chain_values(args: argparse.Namespace) -> dict[str, Any]:
    """The `ChainParams` fields whose flags were given on the command line."""
    return {
        cf.dest: getattr(args, cf.dest)
        for cf in CHAIN_FLAGS
        if cf.dest not in PATH_FIELDS and getattr(args, cf.dest, None) is not None
    }


def chain_params(
    args: argparse.Namespace, defaults: Mapping[str, Any] | None = None
) -> ChainParams:
    """The `ChainParams` of the parsed chain flags: a flag given, else `defaults[field]`, else ChainParams' default.

    Args:
        args: the parsed arguments of a parser that `add_chain_arguments` set up.
        defaults: values of a scenario or a golden recording (keys that are not `ChainParams`
            fields are ignored).
    """
    fields = {f.name for f in dataclasses.fields(ChainParams)}
    values = {k: v for k, v in (defaults or {}).items() if k in fields and v is not None}
    values.update(given_chain_values(args))
    return ChainParams(**values)


def scenario_defaults(scenario: Any) -> dict[str, Any]:
    """The chain values a simulated scenario implies (its test half's inference grouping)."""
    return {
        "N": scenario.N,
        "gridsize": scenario.gridsize,
        "K": scenario.neighbor_count,
        "n_groups": scenario.inference_groups,
        "nphotons": scenario.nphotons,
    }


def chain_path(devices: int | None, chunk_groups: int | None) -> dict[str, Any]:
    """The `run_chain` keywords that `--devices` and `--chunk-groups` select (mesh path, stream path).

    Neither given: one device. `--devices D`: the chain on a mesh of the first D devices.
    `--chunk-groups M`: streamed M groups at a time (each chunk on that mesh when D is given too).
    """
    from .._mesh import make_mesh

    return {"mesh": None if devices is None else make_mesh(devices), "chunk_groups": chunk_groups}


def add_input_arguments(
    parser: argparse.ArgumentParser,
    *,
    input_help: str,
    scenario_help: str,
    input_metavar: str | None = None,
) -> None:
    """`--input NPZ` xor `--scenario NAME`, where a chain command's RawData comes from (both
    default None: the command decides); `--scenario` lists the presets as its choices in --help
    (checked by `cli._check_flags`, which names them and `ptycho-jax scenarios`)."""
    import pathlib

    from .._scenarios import SCENARIOS

    src = parser.add_mutually_exclusive_group()
    src.add_argument("--input", type=pathlib.Path, metavar=input_metavar, help=input_help)
    src.add_argument("--scenario", metavar="{" + ",".join(SCENARIOS) + "}", help=scenario_help)


def add_out_folder_argument(
    parser: argparse.ArgumentParser, *, help: str, metavar: str | None = None
) -> None:
    """`--out DIR`, the output folder of `report` and `crosscheck` (default ./report for both)."""
    import pathlib

    parser.add_argument(
        "--out", type=pathlib.Path, default=pathlib.Path("report"), metavar=metavar, help=help
    )
