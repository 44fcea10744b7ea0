"""`ptycho-jax crosscheck`: argument definitions and the command body (wired by `ptycho_jax._cli`).

Exit codes: 0 every compared stage within tolerance, 1 a stage out of tolerance, 2 bad input,
bad tolerance file or an unavailable backend.
"""

import argparse
import dataclasses
import enum
import logging
import pathlib
import sys
from typing import Any

logger = logging.getLogger(__name__)

DEFAULT_SCENARIO = "gs2_ideal"


class ExitCode(enum.IntEnum):
    """Process exit status of `ptycho-jax crosscheck`."""

    OK = 0
    MISMATCH = 1  # a stage is outside tolerance
    USAGE = 2  # bad arguments, invalid input, bad tolerance file, backend unavailable


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the `crosscheck` options to `parser` (a subcommand parser)."""
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--input", metavar="NPZ", help="RawData NPZ (upstream layout) to cross-check")
    src.add_argument(
        "--scenario",
        metavar="NAME",
        help=f"simulate a preset scenario and use its test half (default {DEFAULT_SCENARIO} "
        "when neither --input nor a golden:DIR reference gives an input)",
    )
    parser.add_argument("--port", default="jax", help="backend under test (default: jax)")
    parser.add_argument(
        "--reference",
        default="tf",
        help="reference backend: tf | upstream | golden:DIR | module:attr (default: tf)",
    )
    parser.add_argument(
        "--variant",
        choices=("main", "seed"),
        default="main",
        help="upstream code variant of normalize_data / training scale (default: main)",
    )
    parser.add_argument(
        "--tolerances",
        metavar="TOML",
        help="tolerance overrides (same layout as the shipped table)",
    )
    parser.add_argument(
        "--out", required=True, metavar="DIR", help="output folder for crosscheck.md/.json/.png"
    )
    g = parser.add_argument_group(
        "chain parameters (default: the scenario's, the golden recording's, or ChainParams')"
    )
    g.add_argument("--gridsize", type=int)
    g.add_argument("--n-groups", type=int, dest="n_groups")
    g.add_argument("--neighbor-count", type=int, dest="K")
    g.add_argument("--seed", type=int)
    g.add_argument(
        "--unseeded",
        action="store_true",
        help="draw groups without a seed (compared by invariants)",
    )
    g.add_argument("--sequential", action="store_true", default=None)
    g.add_argument("--nphotons", type=float)
    g.add_argument("--patch-positions", choices=("upstream", "member"), dest="patch_positions")


def _load_input(args: argparse.Namespace) -> tuple[Any, dict[str, Any], str]:
    """(raw, parameter defaults, description of the input)."""
    import ptycho_jax as pj

    if args.input:
        return pj.RawData.from_npz(args.input), {}, args.input
    if args.scenario is None and args.reference.startswith("golden:"):
        from .backends import GoldenBackend

        gb = GoldenBackend(args.reference[len("golden:") :])
        if gb.input_path().is_file():
            return pj.RawData.from_npz(gb.input_path()), gb.recorded_params(), str(gb.input_path())
    name = args.scenario or DEFAULT_SCENARIO
    simulate = getattr(pj, "simulate", None)
    get_scenario = getattr(pj, "get_scenario", None)
    if simulate is None or get_scenario is None:  # helper exports not re-exported yet
        from ptycho_jax._simulate import get_scenario, simulate
    sc = get_scenario(name)
    sim = simulate(sc)
    defaults = {
        "N": sc.N,
        "gridsize": sc.gridsize,
        "K": sc.neighbor_count,
        "n_groups": sc.inference_groups,
        "nphotons": sc.nphotons,
        "seed": 42,
    }
    return sim.test, defaults, f"scenario {name} (test half)"


def _params(args: argparse.Namespace, defaults: dict[str, Any]):
    import ptycho_jax as pj

    kw = dict(defaults)
    for k in ("gridsize", "n_groups", "K", "seed", "nphotons", "patch_positions"):
        v = getattr(args, k, None)
        if v is not None:
            kw[k] = v
    if args.sequential:
        kw["sequential"] = True
    if args.unseeded:
        kw["seed"] = None
    kw["variant"] = args.variant
    fields = {f.name for f in dataclasses.fields(pj.ChainParams)}
    return pj.ChainParams(**{k: v for k, v in kw.items() if k in fields})


def run(args: argparse.Namespace) -> int:
    """Run the cross-check described by `args`, write the outputs, return the exit code."""
    import ptycho_jax as pj

    from .compare import ToleranceError
    from .run import format_failure, run_crosscheck, write_outputs

    try:
        raw, defaults, described = _load_input(args)
        params = _params(args, defaults)
        logger.info("crosscheck %s vs %s on %s", args.port, args.reference, described)
        result = run_crosscheck(
            raw,
            port=args.port,
            reference=args.reference,
            params=params,
            tolerances=args.tolerances,
            progress=lambda stage: logger.info("stage %s", stage),
        )
    except (pj.PtychoInputError, pj.BackendUnavailableError, ToleranceError, OSError) as e:
        print(f"ptycho-jax crosscheck: error: {e}", file=sys.stderr)
        return ExitCode.USAGE
    paths = write_outputs(result, pathlib.Path(args.out))
    print(format_failure(result))
    print(f"\nwrote {', '.join(str(p) for p in paths.values())}")
    return ExitCode.OK if result.passed else ExitCode.MISMATCH


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (`python -m crosscheck.cli`); the console script is `ptycho-jax crosscheck`."""
    parser = argparse.ArgumentParser(
        prog="ptycho-jax crosscheck", description=__doc__.splitlines()[0]
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    return int(run(args))


if __name__ == "__main__":
    sys.exit(main())
