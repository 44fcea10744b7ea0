"""`python -m benchmarks`: the command line of the benchmark suite."""

import argparse
import json
import logging
import pathlib
import sys
import time
from collections.abc import Sequence

from ptycho_jax.app.chain_flags import CHAIN_FLAGS, add_chain_arguments, given_chain_values

from .plan import IMPLS, apply_chain_values, build_plan
from .report import evaluate_targets, render_plot, to_markdown, write_outputs
from .result import BenchResult, json_default
from .suite import run_suite


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the `bench` options to `parser`."""
    size = parser.add_mutually_exclusive_group()
    size.add_argument(
        "--quick",
        action="store_true",
        help="gs2_ideal, one medium case, neighbours up to 1e5 positions (< 3 min on 2 cores)",
    )
    size.add_argument(
        "--tiny", action="store_true", help="smallest sizes, to check that the harness runs (tests)"
    )
    parser.add_argument(
        "--out",
        type=pathlib.Path,
        help="output folder (default ./bench-results; with --render, beside the JSON)",
    )
    parser.add_argument(
        "--device",
        choices=("cpu", "gpu"),
        default="cpu",
        help="JAX device for the port (default cpu)",
    )
    parser.add_argument(
        "--stem", help="output file name stem (default: the device, plus -quick / -tiny)"
    )
    parser.add_argument(
        "--repeats", type=int, help="warm rounds per figure (default: per case, 2-7)"
    )
    parser.add_argument(
        "--impls",
        default=",".join(IMPLS),
        help=f"comma-separated implementations (default {','.join(IMPLS)})",
    )
    parser.add_argument(
        "--port",
        help="also time this crosscheck backend (package.module:Attribute, or tf for the TF reference) beside ours",
    )
    parser.add_argument(
        "--budget-gib",
        type=float,
        help="host memory budget for the size cuts (default 24, capped at 80%% of available)",
    )
    parser.add_argument(
        "--time-budget-s",
        type=float,
        help="stop starting new cases after this many seconds (the rest is cut)",
    )
    parser.add_argument(
        "--figure-budget-s",
        type=float,
        help="max seconds of warm rounds per figure (default 120 full, 60 otherwise)",
    )
    parser.add_argument(
        "--cases", help="comma-separated case names of the preset to run (default: all), e.g. large"
    )
    parser.add_argument(
        "--no-compile-time",
        action="store_true",
        help="skip the default report's compile-time measurement (three new processes)",
    )
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG")
    parser.add_argument(
        "--json", action="store_true", help="print the JSON document instead of the Markdown table"
    )
    parser.add_argument(
        "--render",
        type=pathlib.Path,
        metavar="JSON",
        help="measure nothing: re-render the Markdown and PNG of a results JSON (into --out if given, else beside it)",
    )
    add_chain_arguments(parser)


def _select_device(name: str):
    import jax

    from ptycho_jax import BackendUnavailableError

    try:
        devices = jax.devices(name)
    except RuntimeError as e:
        raise BackendUnavailableError(f"bench --device {name}: no JAX {name} backend ({e})") from e
    if not devices:
        raise BackendUnavailableError(f"bench --device {name}: no JAX {name} device found")
    return devices[0]


def run(args: argparse.Namespace) -> int:
    """Run the suite the arguments select, write JSON/Markdown/PNG to --out, print the Markdown (or JSON); returns 0."""
    from ptycho_jax import PtychoInputError

    if getattr(args, "render", None) is not None:
        return _render_only(args)
    preset = "tiny" if args.tiny else "quick" if args.quick else "full"
    impls = tuple(i.strip() for i in args.impls.split(",") if i.strip())
    unknown = sorted(set(impls) - set(IMPLS))
    if unknown or "jax" not in impls:
        raise PtychoInputError(
            f"bench --impls: expected a comma-separated subset of {IMPLS} including 'jax', got {args.impls!r}"
        )
    if args.repeats is not None and args.repeats < 1:
        raise PtychoInputError(f"bench --repeats: expected an int >= 1, got {args.repeats}")
    device = _select_device(args.device)
    if args.out is None:
        args.out = pathlib.Path("bench-results")
    quiet = getattr(args, "quiet", False)
    t0 = time.perf_counter()

    def progress(msg: str) -> None:
        if not quiet:
            print(
                f"benchmarks [{time.perf_counter() - t0:6.1f} s] {msg}", file=sys.stderr, flush=True
            )

    given = given_chain_values(args)
    plan = apply_chain_values(
        build_plan(preset, device=args.device),
        given,
        devices=args.devices,
        chunk_groups=args.chunk_groups,
    )
    if getattr(args, "cases", None):
        wanted = [n.strip() for n in args.cases.split(",") if n.strip()]
        names = [c.name for c in plan]
        missing = [n for n in wanted if n not in names]
        if missing:
            raise PtychoInputError(f"bench --cases: expected names among {names}, got {missing}")
        plan = [c for c in plan if c.name in wanted]
    command = "python -m benchmarks " + " ".join(_argv_of(args))
    stem = args.stem or args.device + ("" if preset == "full" else f"-{preset}")

    def checkpoint(partial: "BenchResult") -> None:  # complete JSON and Markdown after every case
        write_outputs(partial, args.out, stem=stem, plot=False)

    result = run_suite(
        plan, device=device, preset=preset, command=command.strip(), impls=impls, repeats=args.repeats,
        budget_gib=args.budget_gib, time_budget_s=args.time_budget_s, progress=progress, checkpoint=checkpoint,
        figure_budget_s=args.figure_budget_s or (120.0 if preset == "full" else 60.0),
        compile_time=not getattr(args, "no_compile_time", False), port=getattr(args, "port", None),
    )  # fmt: skip
    files = write_outputs(result, args.out, stem=stem, plot=not args.no_plot)
    print(
        json.dumps(result.to_json(), indent=1, default=json_default)
        if args.json
        else to_markdown(result)
    )
    for kind, path in files.items():
        progress(f"wrote {kind}: {path}")
    return 0


def _render_only(args: argparse.Namespace) -> int:
    from ptycho_jax.internal import write_files_atomically

    result = BenchResult.from_json(json.loads(pathlib.Path(args.render).read_text()))
    result.targets = evaluate_targets(result)
    out = args.out if args.out is not None else args.render.parent
    stem = args.stem or args.render.stem
    payload = [(out / f"{stem}.md", to_markdown(result).encode())]
    png = None if args.no_plot else render_plot(result)
    if png is not None:
        payload.append((out / f"{stem}.png", png))
    write_files_atomically(payload)
    print(
        json.dumps(result.to_json(), indent=1, default=json_default)
        if args.json
        else to_markdown(result)
    )
    return 0


def _argv_of(args: argparse.Namespace) -> list[str]:
    out = []
    for flag in ("quick", "tiny", "no_plot", "json", "no_compile_time"):
        if getattr(args, flag, False):
            out.append("--" + flag.replace("_", "-"))
    out += ["--device", args.device, "--out", str(args.out)]
    for key in ("stem", "repeats", "budget_gib", "time_budget_s", "cases", "port"):
        val = getattr(args, key, None)
        if val is not None:
            out += ["--" + key.replace("_", "-"), str(val)]
    if args.impls != ",".join(IMPLS):
        out += ["--impls", args.impls]
    for cf in CHAIN_FLAGS:
        val = getattr(args, cf.dest, None)
        if isinstance(val, bool):
            out.append(cf.flag if val else "--no-" + cf.flag[2:])
        elif val is not None:
            out += [cf.flag, str(val)]
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m benchmarks [options]` (from the repository root; not in the installed package)."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="The JAX port, the TF reference and upstream-style baselines, stage by stage (specs/benchmarks.md).",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING,
        format="ptycho-jax: %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    from ptycho_jax import BackendUnavailableError, PtychoInputError

    try:
        return run(args)
    except (PtychoInputError, BackendUnavailableError) as e:
        print(f"benchmarks: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
