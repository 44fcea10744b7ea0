"""`ptycho-jax crosscheck`: argument definitions and the command body (wired by `ptycho_jax.app.cli`).

Exit codes: 0 PASS (every required array compared and within tolerance), 1 FAIL (something
compared is out of tolerance, or a backend raised), 3 INCOMPLETE (something required was not
compared), 2 bad input: arguments, input, tolerance file, an unavailable backend, parameters
contradicting the reference's recording.
"""

import argparse
import dataclasses
import logging
import pathlib
import sys
from typing import Any

from ptycho_jax import ExitCode
from ptycho_jax.app.chain_flags import (
    CHAIN_FLAGS,
    add_chain_arguments,
    add_input_arguments,
    add_out_folder_argument,
    chain_params,
    chain_path,
    given_chain_values,
    scenario_defaults,
)
from ptycho_jax.app.cli import DEFAULT_SCENARIO
from ptycho_jax.app.guard import error_line, with_mirrored_notes

logger = logging.getLogger(__name__)

BACKEND_HELP = (
    "jax | tf | upstream (the real PtychoPINN code in its own environment) | upstream:PATH (an "
    "upstream tree: a checkout, copy or worktree) | upstream@REF (a commit, branch or tag of "
    "--upstream-repo) | ptycho_torch[:PATH|@REF] (upstream's PyTorch port, same environment) | "
    "golden:DIR | package.module:Attribute (an "
    "importable module, a colon, then a backend instance, class or zero-argument factory in it, "
    "e.g. my_port.backend:Backend)"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the `crosscheck` options to `parser` (a subcommand parser).

    The groups are added in `--help` order: inputs, backends, stages and tolerances, outputs,
    upstream trees and bisect, then the chain parameters shared with the other commands.
    """
    _add_input_arguments(parser)
    _add_backend_arguments(parser)
    _add_stage_arguments(parser)
    _add_output_arguments(parser)
    _add_tree_arguments(parser)
    add_chain_arguments(parser)


def _add_input_arguments(parser: argparse.ArgumentParser) -> None:
    """The optional `bisect` mode and where the input comes from (`--input` xor `--scenario`)."""
    parser.add_argument(
        "mode",
        nargs="?",
        metavar="bisect",  # no `choices`: an unknown option's value must not read as a bad mode
        help="bisect: walk the upstream history from --good to --bad and name the first commit "
        "whose numbers differ from --good's",
    )
    add_input_arguments(
        parser,
        input_metavar="NPZ",
        input_help="RawData NPZ (upstream layout) to cross-check",
        scenario_help=f"simulate a preset scenario and use its test half (default "
        f"{DEFAULT_SCENARIO} when neither --input nor a golden:DIR reference gives an input)",
    )


def _add_backend_arguments(parser: argparse.ArgumentParser) -> None:
    """The two sides compared: `--port` (under test) and `--reference`."""
    parser.add_argument(
        "--port",
        default="jax",
        metavar="BACKEND",
        help=f"backend under test: {BACKEND_HELP} (default: jax)",
    )
    parser.add_argument(
        "--reference",
        default="tf",
        metavar="BACKEND",
        help=f"reference backend: {BACKEND_HELP} (default: tf); a golden:DIR reference supplies "
        "its recorded parameters (and its input when --input is not given)",
    )


def _add_stage_arguments(parser: argparse.ArgumentParser) -> None:
    """What must be compared and how closely: `--stages`, `--allow-missing`, `--tolerances`."""
    parser.add_argument(
        "--stages",
        metavar="A,B",
        help="only these stages are required (comma-separated; default: every stage)",
    )
    parser.add_argument(
        "--allow-missing",
        action="append",
        default=[],
        metavar="NAME",
        dest="allow_missing",
        help="a stage or stage.array whose absence is a documented exception, not INCOMPLETE "
        "(repeatable)",
    )
    parser.add_argument(
        "--tolerances",
        metavar="TOML",
        help="tolerance overrides (same layout as the shipped table)",
    )


def _add_output_arguments(parser: argparse.ArgumentParser) -> None:
    """`--out` (the report folder), then `--unseeded`, which `--help` has always listed next."""
    add_out_folder_argument(
        parser,
        metavar="DIR",
        help="output folder for crosscheck.md/.json/.png (default ./report, as for report)",
    )
    parser.add_argument(
        "--unseeded",
        action="store_true",
        help="draw groups without a seed (compared by invariants)",
    )


def _add_tree_arguments(parser: argparse.ArgumentParser) -> None:
    """Upstream trees and commits: the repository, each side's interpreter, bisect's refs."""
    trees = parser.add_argument_group("upstream trees and commits")
    trees.add_argument(
        "--upstream-repo",
        metavar="DIR",
        help="the upstream git checkout that upstream@REF / --good / --bad name commits of "
        "(default: $PTYCHO_UPSTREAM_REPO)",
    )
    trees.add_argument(
        "--port-python",
        metavar="PYTHON",
        help="interpreter of the port tree's environment (default: $PTYCHO_UPSTREAM_PYTHON)",
    )
    trees.add_argument(
        "--reference-python",
        metavar="PYTHON",
        help="interpreter of the reference tree's environment (default: $PTYCHO_UPSTREAM_PYTHON)",
    )
    trees.add_argument(
        "--allow-same-code",
        action="store_true",
        help="run even when port and reference are the same code (refused by default: it can "
        "only pass)",
    )
    trees.add_argument(
        "--git-bisect-exit",
        action="store_true",
        help="exit as `git bisect run` expects: 0 PASS (or the reference's code: good without "
        "running), 1 FAIL, 125 INCOMPLETE or a port tree that cannot be imported (skip), 128 any "
        "other bad input (abort)",
    )
    trees.add_argument("--good", metavar="REF", help="bisect: a commit with the good numbers")
    trees.add_argument("--bad", metavar="REF", help="bisect: a later commit whose numbers differ")


_FLAG = {cf.dest: cf.flag for cf in CHAIN_FLAGS}


def _load_input(args: argparse.Namespace, recorded: dict[str, Any], reference: Any):
    """(raw, parameter defaults, description of the input).

    Recorded parameters (a golden reference's) are the defaults whatever the input; without
    `--input` the recording's own input is used when it has one, else the scenario.
    """
    import ptycho_jax as pj

    if args.input:
        return pj.RawData.from_npz(args.input), dict(recorded), str(args.input)
    input_path = getattr(reference, "input_path", None)
    if args.scenario is None and callable(input_path) and input_path().is_file():
        return pj.RawData.from_npz(input_path()), dict(recorded), str(input_path())
    name = args.scenario or DEFAULT_SCENARIO
    from ptycho_jax import get_scenario, simulate

    sc = get_scenario(name)
    sim = simulate(sc)
    return sim.test, {**scenario_defaults(sc), **recorded}, f"scenario {name} (test half)"


def _check_flags(args: argparse.Namespace, recorded: dict[str, Any], who: str) -> None:
    """An explicit flag that contradicts the recording: HarnessInputError naming both values."""
    from ptycho_jax.crosscheck.errors import HarnessInputError
    from ptycho_jax.crosscheck.run import same_value

    given = given_chain_values(args)
    if args.unseeded:
        given["seed"] = None
    bad = []
    for k, v in recorded.items():
        if k in given and not same_value(given[k], v):
            flag = (
                "--unseeded" if (k == "seed" and args.unseeded) else f"{_FLAG.get(k, k)} {given[k]}"
            )
            bad.append(f"{flag} contradicts {who}, recorded with {k}={v!r}")
    if bad:
        raise HarnessInputError(
            "; ".join(bad) + " (leave the flag out: the recorded parameters are used)"
        )


def _params(args: argparse.Namespace, defaults: dict[str, Any]):
    """The chain flags over `defaults` (scenario or golden recording); `--unseeded` drops the seed."""
    params = chain_params(args, defaults)
    return dataclasses.replace(params, seed=None) if args.unseeded else params


def _port(args: argparse.Namespace) -> Any:
    """The port backend; --devices / --chunk-groups put the jax port on the mesh / stream path."""
    import ptycho_jax as pj
    from ptycho_jax.crosscheck.backends import JaxBackend, resolve_backend

    if args.devices is None and args.chunk_groups is None:
        return resolve_backend(args.port, upstream_repo=args.upstream_repo, python=args.port_python)
    if args.port != "jax":
        raise pj.PtychoInputError(
            "crosscheck --devices/--chunk-groups: expected --port jax (the mesh and stream paths "
            f"are the JAX chain's), got {args.port!r}"
        )
    return JaxBackend(**chain_path(args.devices, args.chunk_groups))


def _progress(args: argparse.Namespace, *, total: int | None, what: str = ""):
    """Stage lines on stderr, report's `Progress` (none with -q); logged at INFO as well."""
    from ptycho_jax.app.cli import Progress

    show = Progress(total, quiet=getattr(args, "quiet", False))

    def tick(stage: str) -> None:
        logger.info("%s%s", what, stage)
        show(f"{what}{stage}")

    return tick


def _quiet_tensorflow(args: argparse.Namespace) -> None:
    """TensorFlow's and XLA's C++ log lines only with -v (set before TF is first imported)."""
    import os

    if not getattr(args, "verbose", 0):  # set, not defaulted: importing jax sets it to "1"
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"


def run(args: argparse.Namespace) -> int:
    """Run the cross-check described by `args`, write the outputs, return the exit code.

    Nothing is written on bad input; the outputs are written atomically; stdout carries the
    verdict text only, logs go to stderr.
    """
    import ptycho_jax as pj
    from ptycho_jax.crosscheck.adapt import check_names, parse_stages
    from ptycho_jax.crosscheck.backends import resolve_backend
    from ptycho_jax.crosscheck.compare import ToleranceError, ToleranceTable
    from ptycho_jax.crosscheck.render import write_outputs
    from ptycho_jax.crosscheck.run import recorded_params, run_crosscheck

    _quiet_tensorflow(args)
    if args.mode == "bisect":
        return _run_bisect(args)
    stage_of_error = "arguments"
    try:
        stages = parse_stages(args.stages)
        allow = check_names(args.allow_missing, what="--allow-missing")
        table = ToleranceTable.load(args.tolerances)
        reference = resolve_backend(
            args.reference, upstream_repo=args.upstream_repo, python=args.reference_python
        )
        stage_of_error = "port"
        port = _port(args)
        stage_of_error = "run"
        if args.git_bisect_exit and not args.allow_same_code:
            from ptycho_jax.crosscheck.run import same_code

            same = same_code(port, reference, args.port, args.reference)
            if same:  # the commit under test has the good commit's code: good, nothing to run
                print(
                    f"crosscheck {args.port} vs {args.reference}: PASS (same code: {same})",
                    file=sys.stderr if getattr(args, "json", False) else sys.stdout,
                )
                return ExitCode.OK
        recorded = {}
        for side, b in (("port", port), ("reference", reference)):
            rec = recorded_params(b)
            _check_flags(args, rec, f"the {side}'s recording ({getattr(b, 'name', b)})")
            recorded.update(rec)

        def compare():
            raw, defaults, described = _load_input(args, recorded, reference)
            logger.info("crosscheck %s vs %s on %s", args.port, args.reference, described)
            result = run_crosscheck(
                raw,
                port=port,
                reference=reference,
                params=_params(args, defaults),
                tolerances=table,
                progress=_progress(args, total=7),
                stages=stages,
                allow_missing=allow,
                allow_same_code=args.allow_same_code,
            )
            return result, described

        (result, described), notes = with_mirrored_notes(compare)
        result = _with_provenance_notes(result, described, notes)
        paths = write_outputs(result, pathlib.Path(args.out))
    except (pj.PtychoInputError, pj.BackendUnavailableError, ToleranceError, OSError) as e:
        print(error_line(e), file=sys.stderr)
        if args.git_bisect_exit:  # an untestable port tree is a skip; anything else aborts
            return 125 if stage_of_error == "port" else 128
        return ExitCode.USAGE
    return _print_outcome(args, result, paths)


def _print_outcome(args: argparse.Namespace, result: Any, paths: dict[str, pathlib.Path]) -> int:
    """The verdict text on stdout (on stderr with --json, whose stdout is the JSON file's object),
    where the files went on stderr (not with -q); the exit code of the verdict."""
    from ptycho_jax.app.cli import print_json_file
    from ptycho_jax.crosscheck.compare import EXIT_CODES
    from ptycho_jax.crosscheck.render import format_failure

    as_json = getattr(args, "json", False)
    print(format_failure(result), file=sys.stderr if as_json else sys.stdout)
    if not getattr(args, "quiet", False):  # -q: like report's path lines
        print(f"wrote {', '.join(str(p) for p in paths.values())}", file=sys.stderr)
    if as_json:
        print_json_file(paths["json"])
    if args.git_bisect_exit:
        from ptycho_jax.crosscheck.bisection import GIT_BISECT_EXIT

        return GIT_BISECT_EXIT[result.verdict]
    return EXIT_CODES[result.verdict]


_MIRRORED = "warned (MirroredPatchWarning): "  # how the harness words a backend's mirrored note


def _with_provenance_notes(result: Any, described: str, notes: list[str]) -> Any:
    """`result` with `provenance.input` (what was cross-checked) and `provenance.notes`: the
    mirrored-patch notes, taken out of the stage notes the harness filed them under (a side's
    warnings are stage notes) and out of the warnings caught around the run, as `report` does."""
    stages, found = [], set(notes)
    for s in result.stages:
        mirrored = [n for n in s.notes if _MIRRORED in n]
        found.update(f"MirroredPatchWarning: {n.split(_MIRRORED, 1)[1]}" for n in mirrored)
        kept = tuple(n for n in s.notes if n not in mirrored)
        stages.append(dataclasses.replace(s, notes=kept) if mirrored else s)
    provenance = {**result.provenance, "input": str(described)}
    if found:
        provenance["notes"] = sorted(found)
    return dataclasses.replace(result, stages=tuple(stages), provenance=provenance)


def _run_bisect(args: argparse.Namespace) -> int:
    """`crosscheck bisect --good REF --bad REF`: print the first differing commit, write
    bisect.md / bisect.json (and the cross-check at that commit) under --out."""
    import ptycho_jax as pj
    from ptycho_jax.crosscheck.adapt import parse_stages
    from ptycho_jax.crosscheck.bisection import bisect
    from ptycho_jax.crosscheck.compare import ToleranceError, ToleranceTable
    from ptycho_jax.crosscheck.render import write_outputs
    from ptycho_jax.internal import write_files_atomically

    try:
        if not args.good or not args.bad:
            raise pj.PtychoInputError(
                "crosscheck bisect: expected --good REF and --bad REF, got "
                f"--good {args.good!r} --bad {args.bad!r}"
            )
        stages = parse_stages(args.stages)
        table = ToleranceTable.load(args.tolerances)
        raw, defaults, described = _load_input(args, {}, None)
        params = _params(args, defaults)
        res = bisect(
            raw,
            repo=args.upstream_repo,
            good=args.good,
            bad=args.bad,
            params=params,
            stages=stages,
            tolerances=table,
            python=args.port_python,
            progress=_progress(args, total=None, what="bisect: "),
        )
        out = pathlib.Path(args.out)
        write_files_atomically(
            [
                (out / "bisect.md", res.to_markdown().encode("utf-8")),
                (out / "bisect.json", (res.to_json_str() + "\n").encode("utf-8")),
            ]
        )
        if res.result_at_first_bad is not None:
            write_outputs(res.result_at_first_bad, out / "first_bad")
    except (pj.PtychoInputError, pj.BackendUnavailableError, ToleranceError, OSError) as e:
        print(error_line(e), file=sys.stderr)
        return ExitCode.USAGE
    print(res.summary())
    for s in res.steps:
        print(f"  {s.commit[:12]} {s.verdict:<10} {s.subject}")
    print(f"wrote {out / 'bisect.md'}, {out / 'bisect.json'}", file=sys.stderr)
    return ExitCode.OK


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (`python -m ptycho_jax.app.crosscheck_cli`); the console script is `ptycho-jax crosscheck`."""
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
