"""`ptycho-jax`: one console script with subcommands simulate, report, scenarios and crosscheck.

The benchmark suite is not in the installed package: `python -m benchmarks` from a checkout.
"""

import argparse
import logging
import pathlib
import sys
import time
from collections.abc import Sequence

from .._errors import ExitCode, PtychoInputError
from .._scenarios import SCENARIOS
from .chain_flags import (
    add_chain_arguments,
    add_input_arguments,
    add_out_folder_argument,
    chain_params,
    chain_path,
    scenario_defaults,
)

DEFAULT_SCENARIO = "gs2_ideal"
SCENARIO_NAMES = tuple(SCENARIOS)


class Progress:
    """Numbered stage lines with elapsed time on stderr (the CLI's progress display)."""

    def __init__(self, total: int | None, *, quiet: bool = False):
        self.total, self.done, self.quiet = total, 0, quiet
        self.t0 = time.perf_counter()

    def __call__(self, stage: str) -> None:
        now = time.perf_counter()
        self.done += 1
        if not self.quiet:
            count = f"{self.done}/{self.total}" if self.total else f"{self.done}"
            print(
                f"ptycho-jax: [{count}] {stage} (t={now - self.t0:.1f} s)",
                file=sys.stderr,
                flush=True,
            )


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = (
        logging.WARNING
        if quiet
        else (logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING)
    )
    from .guard import one_line_formatter

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(one_line_formatter())  # the same level words as our own loggers' lines
    logging.basicConfig(level=level, handlers=[handler])


def _add_input_arguments(p: argparse.ArgumentParser) -> None:
    add_input_arguments(
        p,
        input_help="RawData NPZ file (upstream format)",
        scenario_help=f"simulate a preset scenario instead (default {DEFAULT_SCENARIO}; "
        "`ptycho-jax scenarios` describes them)",
    )
    p.add_argument(
        "--noise-seed",
        type=int,
        default=None,
        help="PRNG seed of the simulated photon noise (default: the scenario's sim_seed)",
    )


COMMANDS = ("simulate", "report", "scenarios", "crosscheck")
DEFAULT_SIMULATE_OUT = "scan.npz"


GLOBAL_FLAGS: tuple[tuple[tuple[str, ...], dict], ...] = (
    (("-v", "--verbose"), {"action": "count", "help": "more log output on stderr"}),
    (("-q", "--quiet"), {"action": "store_true", "help": "no progress lines"}),
    (
        ("--json",),
        {
            "action": "store_true",
            "help": "report, crosscheck: print the JSON file's object on stdout, nothing else "
            "(paths, progress and crosscheck's verdict text go to stderr)",
        },
    ),
    (
        ("--no-compile-cache",),
        {
            "action": "store_true",
            "help": "no persistent compilation cache (PTYCHO_JAX_NO_CACHE=1 turns off both caches)",
        },
    ),
    (
        ("--no-dataset-cache",),
        {
            "action": "store_true",
            "help": "simulate the report's scenario even when the dataset cache holds it",
        },
    ),
)
"""The value-less flags every subcommand takes before or after its name (-vv counts as -v -v)."""


def _add_global_flags(p: argparse.ArgumentParser, *, in_subcommand: bool) -> None:
    """GLOBAL_FLAGS on `p`. On a subcommand they default to SUPPRESS, so a flag given before it is
    not reset there."""
    g = p.add_argument_group("global options") if in_subcommand else p
    for names, kw in GLOBAL_FLAGS:
        if in_subcommand:
            kw = {**kw, "default": argparse.SUPPRESS}
        elif kw["action"] == "count":
            kw = {**kw, "default": 0}
        g.add_argument(*names, **kw)


def _parser() -> argparse.ArgumentParser:
    from .._version import __version__

    parser = argparse.ArgumentParser(
        prog="ptycho-jax",
        description="PtychoPINN's data chain in JAX: simulate, report, cross-check. "
        "Without a subcommand it runs `report` (taking the report's flags).",
    )
    parser.add_argument("--version", action="version", version=f"ptycho-jax {__version__}")
    _add_global_flags(parser, in_subcommand=False)
    sub = parser.add_subparsers(dest="command", metavar="{" + ",".join(COMMANDS) + "}")

    p = sub.add_parser(
        "simulate", help="simulate a sim_lines scenario into an upstream-compatible RawData NPZ"
    )
    _add_global_flags(p, in_subcommand=True)
    p.add_argument(
        "--scenario",
        default=DEFAULT_SCENARIO,
        metavar="{" + ",".join(SCENARIO_NAMES) + "}",
        help=f"preset (default {DEFAULT_SCENARIO}; `ptycho-jax scenarios` describes them)",
    )
    p.add_argument(
        "--out",
        default=DEFAULT_SIMULATE_OUT,  # a str: a trailing "/" (a folder meant) must stay visible
        help=f"output .npz file (default ./{DEFAULT_SIMULATE_OUT})",
    )
    p.add_argument(
        "--split",
        choices=("test", "train", "all"),
        default="test",
        help="which half to write (default test, the report's)",
    )
    p.add_argument(
        "--noise-seed",
        type=int,
        default=None,
        help="PRNG seed of the photon noise (default: the scenario's sim_seed)",
    )
    p.add_argument("--no-noise", action="store_true", help="write expected (noise-free) amplitudes")
    p.add_argument("--N", type=int, help="override the frame size")
    p.add_argument("--nphotons", type=float, help="override the photon budget")
    p.add_argument(
        "--gridsize", type=int, help="override the scenario gridsize (changes the counts)"
    )

    p = sub.add_parser(
        "report",
        help="run the chain and write the Intensity Statistics report (Markdown, JSON, PNG)",
    )
    _add_global_flags(p, in_subcommand=True)
    _add_report_arguments(p)

    p = sub.add_parser("scenarios", help="list the preset scenarios (for --scenario NAME)")
    _add_global_flags(p, in_subcommand=True)

    p = sub.add_parser(
        "crosscheck", help="compare a port against a reference stage by stage (exit 1 on mismatch)"
    )
    _add_global_flags(p, in_subcommand=True)
    from ptycho_jax.app.crosscheck_cli import (
        add_arguments as add_crosscheck,  # the harness, imported only to run it
    )

    add_crosscheck(p)

    return parser


def _add_report_arguments(p: argparse.ArgumentParser) -> None:
    _add_input_arguments(p)
    add_chain_arguments(p)
    add_out_folder_argument(p, help="output folder (default ./report)")
    p.add_argument("--no-figure", action="store_true", help="skip the PNG")


def _first_word(argv: list[str]) -> int:
    """Index of the first argument that is not a global flag (`len(argv)` when there is none)."""
    global_flags = {name for names, _ in GLOBAL_FLAGS for name in names}
    for i, a in enumerate(argv):
        if not (a in global_flags or (a.startswith("-v") and set(a[1:]) == {"v"})):
            return i
    return len(argv)


def _with_command(argv: list[str]) -> list[str]:
    """`argv` with `report` inserted where no subcommand is named (`ptycho-jax --out DIR`)."""
    i = _first_word(argv)
    if i < len(argv) and (argv[i] in COMMANDS or argv[i] in ("-h", "--help", "--version")):
        return argv
    return [*argv[:i], "report", *argv[i:]]


NOT_INSTALLED = {
    "bench": "the benchmark suite is not part of the installed command; run it from a source "
    "checkout (the repository root) with `python -m benchmarks`",
}
"""Subcommands people look for that the installed command does not have, and where they are."""


def _refuse_not_installed(argv: list[str]) -> None:
    """`ptycho-jax bench ...`: one error line and exit 2 (`ExitCode.USAGE`), not argparse's
    "unrecognized arguments" of the report the bare command would otherwise run."""
    i = _first_word(argv)
    if i < len(argv) and argv[i] in NOT_INSTALLED:
        print(f"ptycho-jax: error: {argv[i]}: {NOT_INSTALLED[argv[i]]}", file=sys.stderr)
        raise SystemExit(ExitCode.USAGE)


def _load_raw(args, progress: Progress):
    """`(raw, scenario, source)`: the RawData named by --input, or the test half of the --scenario
    simulated (see `_simulated`); `source` is the provenance line saying how (None for --input)."""
    from .._rawdata import RawData

    if args.input is not None:
        progress(f"loading {args.input}")
        return RawData.from_npz(args.input), None, None
    from .._simulate import get_scenario

    scenario = get_scenario(args.scenario or DEFAULT_SCENARIO)
    raw, source = _simulated(scenario, args, progress)
    return raw, scenario, source


def _simulated(scenario, args, progress: Progress):
    """`(raw, source)`: the test half of `scenario` with --noise-seed's noise, loaded from the
    dataset cache when it holds it, else simulated (and stored there); `source` says which."""
    from .._report import file_sha256
    from .compile_cache import cache_disabled
    from .dataset_cache import dataset_cache_dir, dataset_key, load_dataset, store_dataset

    cache = None if args.no_dataset_cache or cache_disabled() else dataset_cache_dir()
    probe_sha256 = None
    if scenario.probe_path is not None and cache is not None:  # the file's content decides bits too
        try:
            probe_sha256 = file_sha256(scenario.probe_path)
        except OSError:
            cache = None  # no caching; simulate says what is wrong with the file
    what = {"call": "simulate", "scenario": scenario.to_dict(), "probe_sha256": probe_sha256,
            "noise": True, "noise_seed": args.noise_seed, "split": "test"}  # fmt: skip
    key = None if cache is None else dataset_key(what)
    raw = None if cache is None else load_dataset(cache, key)
    if raw is not None:
        progress(
            f"loaded scenario {scenario.name}'s test half ({len(raw)} frames of "
            f"{scenario.N}x{scenario.N}) from the dataset cache"
        )
        return raw, "simulated earlier, loaded from the dataset cache"
    progress(
        f"simulating scenario {scenario.name}'s test half ({scenario.test_count} frames of "
        f"{scenario.N}x{scenario.N}, of {scenario.total_images} simulated)"
    )
    import jax.random as jr

    from .._simulate import simulate

    rng = None if args.noise_seed is None else jr.key(args.noise_seed)
    raw = simulate(scenario, key=rng).test
    if cache is not None and store_dataset(cache, key, raw) is not None:
        return raw, "simulated in this run, stored in the dataset cache"
    return raw, "simulated in this run"


def _chain_params(args, raw, scenario):
    """The report's ChainParams: the chain flags, else the scenario's values, else the data's N and ChainParams' defaults."""
    defaults = {"N": raw.N, **(scenario_defaults(scenario) if scenario is not None else {})}
    return chain_params(args, defaults)


def _run_chain(raw, params, args, progress):
    """The chain, and the notes it announced (`guard.with_mirrored_notes`): the report records
    upstream's mirrored patch positions in its provenance instead of printing a warning."""
    from .._pipeline import run_chain
    from .guard import with_mirrored_notes

    path = chain_path(args.devices, args.chunk_groups)
    return with_mirrored_notes(lambda: run_chain(raw, params, progress=progress, **path))


def _cmd_simulate(args) -> int:
    import dataclasses

    import jax.random as jr

    from .._simulate import get_scenario, simulate, simulate_raw

    overrides = {
        k: v
        for k, v in (("N", args.N), ("nphotons", args.nphotons), ("gridsize", args.gridsize))
        if v is not None
    }
    scenario = get_scenario(args.scenario, **overrides)
    progress = Progress(2, quiet=args.quiet)
    progress(
        f"simulating {scenario.name}: {scenario.total_images} frames of {scenario.N}x{scenario.N}"
    )
    key = None if args.noise_seed is None else jr.key(args.noise_seed)
    if args.split == "all":
        raw = simulate_raw(scenario, key=key, noise=not args.no_noise)
    else:
        raw = getattr(simulate(scenario, key=key, noise=not args.no_noise), args.split)
    progress(f"writing {args.out}")
    raw = dataclasses.replace(raw)  # validated again before writing
    raw.to_npz(args.out)
    if not args.quiet:
        print(f"ptycho-jax: wrote {len(raw)} frames ({args.split}) to {args.out}", file=sys.stderr)
    return ExitCode.OK


def _cmd_scenarios() -> int:
    """One line per preset: its name, then the counts and parameters it simulates with."""
    from .._scenarios import SCENARIOS

    for name, sc in SCENARIOS.items():
        print(
            f"{name}: gridsize {sc.gridsize}, {sc.total_images} frames of {sc.N}x{sc.N} "
            f"({sc.test_count} in the report's test half), {sc.inference_groups} groups of "
            f"{sc.gridsize**2}, K={sc.neighbor_count}, nphotons={sc.nphotons:g}"
            + (" (default)" if name == DEFAULT_SCENARIO else "")
        )
    return ExitCode.OK


def _cmd_report(args) -> int:
    from .._report import chain_report, make_provenance
    from .report_files import write_report

    # input, 4 chain stages, rendering; a streamed run reports two passes per chunk, count unknown
    progress = Progress(None if args.chunk_groups else 6, quiet=args.quiet)
    raw, scenario, source = _load_raw(args, progress)
    params = _chain_params(args, raw, scenario)
    result, notes = _run_chain(raw, params, args, progress)
    progress("rendering the report")
    provenance = make_provenance(
        input_path=args.input,
        parameters=params.to_dict(),
        variant=params.variant,
        scenario=None if scenario is None else scenario.to_dict(),
        devices=args.devices,
        chunk_groups=args.chunk_groups,
        **({} if source is None else {"simulation": source}),
        **({"notes": notes} if notes else {}),
    )
    report = chain_report(result, raw=raw, provenance=provenance)
    paths = write_report(report, args.out, figure=not args.no_figure, raw=raw)
    for kind, path in paths.items():
        if not args.quiet:  # on stderr, as crosscheck's: stdout stays free for what scripts read
            print(f"ptycho-jax: {kind}: {path}", file=sys.stderr)
    if args.json:
        print_json_file(paths["json"])
    return ExitCode.OK


def print_json_file(path: pathlib.Path) -> None:
    """`--json`: the JSON file just written, as written, on stdout (one document, nothing else)."""
    sys.stdout.write(path.read_text(encoding="utf-8").rstrip("\n") + "\n")
    sys.stdout.flush()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `ptycho-jax` console script; returns the exit code."""
    parser = _parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    _refuse_not_installed(argv)
    argv = _with_command(argv)
    args, extra = parser.parse_known_args(argv)
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "crosscheck" and args.mode not in (None, "bisect"):
        parser.error(f"crosscheck: expected the mode 'bisect' or none, got {args.mode!r}")
    _setup_logging(args.verbose, args.quiet)
    from .compile_cache import enable_compile_cache
    from .host_memory import log_last_setup

    log_last_setup()  # what the console script (_launch) did to the host allocator; -v shows it
    from .guard import run_guarded

    def command() -> int:
        if not args.no_compile_cache:  # inside the guard: a warning prints as the command's own do
            enable_compile_cache()  # compile once; PTYCHO_JAX_NO_CACHE=1 or --no-compile-cache: off
        return _dispatch(parser, args)

    return run_guarded(command, verbose=args.verbose)


def _check_flags(args) -> None:
    """Flag values checked before any data are read: chain ranges, the scenario's name."""
    from .chain_flags import check_chain_flags

    if args.command in ("report", "crosscheck"):
        check_chain_flags(args)
    elif args.json:
        raise PtychoInputError(
            f"--json: expected the report or crosscheck command (they write a JSON file), got "
            f"{args.command}"
        )
    name = getattr(args, "scenario", None)
    if name is not None and name not in SCENARIOS:
        raise PtychoInputError(
            f"--scenario: expected one of {list(SCENARIOS)}, got {name!r} (`ptycho-jax scenarios` "
            "lists them)"
        )


def _dispatch(parser: argparse.ArgumentParser, args) -> int:
    """Run the command `args` names (errors and warnings are shaped by `_cli_guard.run_guarded`)."""
    from .guard import preflight

    preflight(args)  # --out: a folder / a file we can write, checked before any work
    _check_flags(args)  # ranges and names, before any data are read
    if args.command == "simulate":
        return int(_cmd_simulate(args))
    if args.command == "scenarios":
        return _cmd_scenarios()
    if args.command == "report":
        return int(_cmd_report(args))
    if args.command == "crosscheck":
        from ptycho_jax.app.crosscheck_cli import run as run_crosscheck

        return int(run_crosscheck(args))
    parser.error(f"unknown command {args.command!r}")
    return int(ExitCode.USAGE)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
