"""Structure of the code base: the library imports neither harness nor benchmarks, its import graph
has no cycle, every chain subcommand takes the same chain flags, errors come from the project's
hierarchy, public functions are annotated, and ruff (lint and format) is clean."""

import argparse
import ast
import dataclasses
import inspect
import json
import pathlib
import subprocess
import sys

import pytest

import ptycho_jax as pj
from ptycho_jax.app import chain_flags as _cli_chain
from ptycho_jax.app import cli as _cli

ROOT = pathlib.Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "ptycho_jax"
LINTED = ("src", "crosscheck", "benchmarks", "tests")

CHAIN_FLAGS = [
    "--N", "--gridsize", "--K", "--n-groups", "--seed", "--sequential", "--oversample",
    "--neighbor-pool-size", "--nphotons", "--variant", "--engine", "--neighbour-search",
    "--patch-positions", "--devices", "--chunk-groups",
]  # fmt: skip


def _library_modules() -> list[str]:
    return [
        "ptycho_jax",
        *sorted(
            f"ptycho_jax.{p.stem}"
            for p in SRC.glob("*.py")
            if p.stem not in ("__init__", "__main__")
        ),
    ]


# --- the library is free of the harness and the benchmarks --------------------------------------


def test_library_modules_import_without_crosscheck_or_benchmarks():
    code = (
        "import importlib, json, sys\n"
        f"for name in {_library_modules()!r}:\n"
        "    importlib.import_module(name)\n"
        "above = ('benchmarks', 'crosscheck', 'ptycho_jax.app', 'ptycho_jax.crosscheck')\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith(above))))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.splitlines()[-1]) == []


def test_benchmarks_are_not_in_the_library_and_no_pytest_plugin_is_installed():
    assert not (SRC / "_bench.py").exists()
    assert (ROOT / "benchmarks" / "__main__.py").is_file()
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert (
        "pytest11" not in pyproject
    )  # no plugin that loads into every pytest run of the environment


def _import_edges(path: pathlib.Path, modules: set[str]) -> set[str]:
    """Modules of the library that `path` imports (module level and inside functions alike)."""
    this = "ptycho_jax" if path.stem == "__init__" else f"ptycho_jax.{path.stem}"
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in modules}
        elif isinstance(node, ast.ImportFrom):
            base = "ptycho_jax" if node.level == 1 else node.module or ""
            if node.level == 1 and node.module:
                base = f"ptycho_jax.{node.module}"
            if base not in modules:
                continue
            subs = (
                {f"{base}.{a.name}" for a in node.names} & modules
                if base == "ptycho_jax"
                else set()
            )
            out |= subs or {base}
    return out - {this}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                return [*stack[stack.index(m) :], m]
            if m not in state and (found := visit(m)):
                return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (found := visit(n)):
            return found
    return None


def test_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_library_import_graph_has_no_cycle():
    modules = set(_library_modules())
    files = {
        ("ptycho_jax" if p.stem == "__init__" else f"ptycho_jax.{p.stem}"): p
        for p in SRC.glob("*.py")
    }
    graph = {name: _import_edges(path, modules) for name, path in files.items()}
    assert graph["ptycho_jax"]  # the package imports its modules: the graph is not empty
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


# --- one set of chain flags -------------------------------------------------------------------


def _chain_group(parser: argparse.ArgumentParser) -> list[tuple]:
    (group,) = [g for g in parser._action_groups if g.title == _cli_chain.CHAIN_GROUP_TITLE]
    return [
        (tuple(a.option_strings), a.dest, a.default, a.type, a.choices, type(a).__name__)
        for a in group._group_actions
    ]


def _subparser(name: str) -> argparse.ArgumentParser:
    (sub,) = [a for a in _cli._parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return sub.choices[name]


def test_report_crosscheck_and_bench_take_the_same_chain_flags():
    from benchmarks.cli import add_arguments as add_bench_arguments
    from ptycho_jax.app.crosscheck_cli import add_arguments as add_crosscheck_arguments

    report = _chain_group(_subparser("report"))
    crosscheck = _chain_group(_subparser("crosscheck"))
    standalone = argparse.ArgumentParser()
    add_crosscheck_arguments(standalone)
    bench = argparse.ArgumentParser()
    add_bench_arguments(bench)
    assert crosscheck == report
    assert _chain_group(standalone) == report
    assert _chain_group(bench) == report
    assert [opts[0] for opts, *_ in report] == CHAIN_FLAGS
    assert all(default is None for _, _, default, *_ in report)  # "not given": one rule fills it


def test_chain_flags_name_chain_params_fields_one_to_one():
    fields = {f.name for f in dataclasses.fields(pj.ChainParams)}
    dests = [cf.dest for cf in _cli_chain.CHAIN_FLAGS if cf.dest not in _cli_chain.PATH_FIELDS]
    assert set(dests) == fields - {"trainable"}
    for cf in _cli_chain.CHAIN_FLAGS:
        assert cf.flag == "--" + cf.dest.replace("_", "-")


def test_chain_params_resolution_flag_then_defaults_then_chain_params():
    parser = argparse.ArgumentParser()
    _cli_chain.add_chain_arguments(parser)
    defaults = {"gridsize": 1, "K": 7, "n_groups": 9, "nphotons": 1e6, "not_a_field": 3}
    p = _cli_chain.chain_params(
        parser.parse_args(["--K", "5", "--no-sequential", "--variant", "seed"]), defaults
    )
    assert (p.gridsize, p.K, p.n_groups, p.nphotons, p.sequential, p.variant) == (
        1,
        5,
        9,
        1e6,
        False,
        "seed",
    )
    assert p.seed == pj.ChainParams().seed and p.engine == pj.ChainParams().engine
    assert _cli_chain.chain_params(parser.parse_args([])) == pj.ChainParams()


def _oversampling_input(tmp_path) -> pathlib.Path:
    from helpers import make_raw

    path = tmp_path / "small.npz"
    make_raw(m=20, n=8).to_npz(path)
    return path


OVERSAMPLE = [
    "--gridsize",
    "2",
    "--K",
    "6",
    "--n-groups",
    "30",
    "--oversample",
    "--neighbor-pool-size",
    "6",
    "--seed",
    "3",
]


def test_oversampling_runs_from_report(tmp_path):
    data = _oversampling_input(tmp_path)
    out = tmp_path / "report"
    assert (
        _cli.main(
            ["-q", "report", "--input", str(data), *OVERSAMPLE, "--no-figure", "--out", str(out)]
        )
        == 0
    )
    payload = json.loads((out / "intensity_stats.json").read_text())
    params = payload["provenance"]["parameters"]
    assert (params["oversample"], params["neighbor_pool_size"], params["n_groups"]) == (True, 6, 30)
    assert payload["stages"][1]["stats"]["shape"] == [30, 8, 8, 4]  # 30 groups from 20 positions


def test_oversampling_runs_from_crosscheck(tmp_path, capsys):
    pytest.importorskip("tensorflow")
    data = _oversampling_input(tmp_path)
    out = tmp_path / "xc"
    code = _cli.main(
        [
            "-q",
            "crosscheck",
            "--input",
            str(data),
            "--reference",
            "tf",
            *OVERSAMPLE,
            "--out",
            str(out),
        ]
    )
    assert code == 0, capsys.readouterr()
    assert (out / "crosscheck.json").is_file()
    doc = json.loads((out / "crosscheck.json").read_text())
    assert "oversample" in json.dumps(doc) and '"neighbor_pool_size": 6' in json.dumps(doc)


# --- contracts --------------------------------------------------------------------------------


def _raised_names(path: pathlib.Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Raise) and node.exc is not None:
            exc = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            if isinstance(exc, ast.Name):
                out.add(exc.id)
    return out


def _exception_class(module, name: str):
    """The class `raise name(...)` raises in `module`: a class, or the return type of a factory function."""
    import builtins
    import typing

    from ptycho_jax import _errors

    obj = (
        getattr(module, name, None) or getattr(_errors, name, None) or getattr(builtins, name, None)
    )
    if inspect.isfunction(obj):
        obj = typing.get_type_hints(obj).get("return")
    return obj


def test_library_raises_only_the_projects_errors():
    import importlib

    offenders = []
    for name in _library_modules():
        module = importlib.import_module(name)
        path = SRC / ("__init__.py" if name == "ptycho_jax" else f"{name.split('.')[1]}.py")
        for exc in sorted(_raised_names(path)):
            cls = _exception_class(module, exc)
            if not (isinstance(cls, type) and issubclass(cls, pj.PtychoJaxError)):
                offenders.append(f"{name}: raise {exc}")
    assert offenders == []


def test_public_functions_are_annotated():
    missing = []
    for name in sorted(n for n in dir(pj) if not n.startswith("_")):
        obj = getattr(pj, name)
        funcs = [(name, obj)] if inspect.isfunction(obj) else []
        if inspect.isclass(obj) and obj.__module__.startswith("ptycho_jax"):
            funcs += [
                (f"{name}.{m}", f)
                for m, f in vars(obj).items()
                if not m.startswith("_") and inspect.isfunction(f)
            ]
            funcs += [
                (f"{name}.{m}", f.__func__)
                for m, f in vars(obj).items()
                if isinstance(f, (classmethod, staticmethod))
            ]
        for qual, f in funcs:
            if not f.__module__.startswith("ptycho_jax"):
                continue
            sig = inspect.signature(f)
            params = [p for p in sig.parameters.values() if p.name not in ("self", "cls")]
            unannotated = [p.name for p in params if p.annotation is inspect.Parameter.empty]
            if unannotated or sig.return_annotation is inspect.Signature.empty:
                missing.append(
                    f"{qual}({', '.join(unannotated)}){' -> ?' if sig.return_annotation is inspect.Signature.empty else ''}"
                )
    assert missing == []


def test_runtime_type_checking_is_on_in_the_test_run():
    # jaxtyping's import hook (pyproject addopts --jaxtyping-packages) wraps the library's functions
    # with beartype: a wrong argument type fails at the call, before any code of ours runs.
    from jaxtyping import TypeCheckError

    with pytest.raises(TypeCheckError):
        pj.array_stats("not an array")  # type: ignore[arg-type]


# --- ruff, as CI runs it ----------------------------------------------------------------------


@pytest.mark.parametrize("command", [["check"], ["format", "--check"]], ids=["lint", "format"])
def test_ruff_is_clean(command):
    out = subprocess.run(
        [sys.executable, "-m", "ruff", *command, *LINTED],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]


def test_compile_counts_use_the_public_monitoring_api():
    import jax
    import jax.numpy as jnp
    from _compile_count import count_compiles

    @jax.jit
    def doubled(x):
        return x * 2

    x3, x4 = jnp.ones(3), jnp.ones(4)
    with count_compiles() as compiles:
        doubled(x3)
        doubled(x3)
        doubled(x4)
    assert compiles("doubled") == 2  # one per input shape, the repeated call hits the jit cache
    this = pathlib.Path(__file__).name
    readers = [
        p.name
        for p in ROOT.glob("tests/**/*.py")
        if p.name != this and "_cache_size(" in p.read_text()
    ]
    assert readers == []  # no test reads a jitted function's private cache


def _lint_imports(env_path: str | None = None) -> subprocess.CompletedProcess:
    import os

    exe = pathlib.Path(sys.executable).with_name("lint-imports")
    env = dict(os.environ)
    if env_path:
        env["PYTHONPATH"] = env_path + os.pathsep + str(ROOT)
    return subprocess.run(
        [str(exe), "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env=env,
    )


def test_import_contracts_hold():
    proc = _lint_imports()
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "5 kept, 0 broken" in proc.stdout, proc.stdout[-2000:]


def test_the_core_contracts_list_every_core_module():
    # The `core` and `private` contracts name the core's modules one by one (import-linter has no
    # "every module but these" form): a new module must be added there, or this fails.
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    contracts = {c["id"]: c for c in config["contracts"]}
    core = {
        f"ptycho_jax.{p.stem}" for p in SRC.glob("_*.py") if p.stem not in ("__init__", "__main__")
    }
    assert len(core) > 20
    assert set(contracts["core"]["source_modules"]) == core | {"ptycho_jax.internal"}
    assert set(contracts["private"]["forbidden_modules"]) == core
    assert contracts["layers"]["layers"] == ["app", "crosscheck", "internal"]
    # the folder layout is the layering: every file of src/ptycho_jax is core, app/ or the harness
    others = {p.name for p in SRC.iterdir()} - {p.name for p in SRC.glob("_*.py")}
    assert others == {"__pycache__", "app", "crosscheck", "internal.py", "py.typed"} - (
        {"__pycache__"} - others
    )


def _copy_package(tmp_path: pathlib.Path) -> pathlib.Path:
    import shutil

    pkg = tmp_path / "ptycho_jax"  # the symlinked harness is copied as a folder
    shutil.copytree(ROOT / "src" / "ptycho_jax", pkg, ignore=shutil.ignore_patterns("__pycache__"))
    return pkg


@pytest.mark.parametrize(
    ("module", "line", "broken", "edge"),
    [
        # a core module importing the CLI inside a function
        ("_normalize.py", "    from .app import cli  # noqa: F401", "core", "ptycho_jax._normalize -> ptycho_jax.app.cli"),
        # the harness importing the application (the layers contract)
        ("crosscheck/compare.py", "    from ..app import guard  # noqa: F401", "layers", "ptycho_jax.crosscheck.compare -> ptycho_jax.app.guard"),
        # the harness importing a private core module instead of the public package
        ("crosscheck/run.py", "    from .._grouping import gather_frames  # noqa: F401", "private", "ptycho_jax.crosscheck.run -> ptycho_jax._grouping"),
    ],
)  # fmt: skip
def test_import_contracts_catch_a_wrong_function_level_import(tmp_path, module, line, broken, edge):
    pkg = _copy_package(tmp_path)
    with open(pkg / module, "a") as f:
        f.write(f"\n\ndef _wrong():\n{line}\n")
    proc = _lint_imports(str(tmp_path))
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "4 kept, 1 broken" in proc.stdout, proc.stdout[-2000:]
    names = {
        c["id"]: c["name"]
        for c in __import__("tomllib").loads((ROOT / "pyproject.toml").read_text())["tool"][
            "importlinter"
        ]["contracts"]
    }
    assert f"{names[broken]} BROKEN" in " ".join(proc.stdout.split()), proc.stdout[-2000:]
    assert edge in proc.stdout, proc.stdout[-2000:]


def _top_level_definitions(name: str) -> list[str]:
    """The file of every class named `name` and every module-level assignment to `name` in
    src/ and crosscheck/ (the AST, so a comment or a string naming it does not count)."""
    found = []
    for path in sorted([*(ROOT / "src").rglob("*.py"), *(ROOT / "crosscheck").rglob("*.py")]):
        if path.relative_to(ROOT).parts[:3] == ("src", "ptycho_jax", "crosscheck"):
            continue  # src/ptycho_jax/crosscheck is the symlink to crosscheck/: counted once
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = []
            if isinstance(node, ast.ClassDef):
                targets = [node.name]
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                for t in node.targets if isinstance(node, ast.Assign) else [node.target]:
                    targets += [t.id] if isinstance(t, ast.Name) else []
            if name in targets:
                found.append(str(path.relative_to(ROOT)))
    return found


def test_one_exit_code_enum_for_every_command():
    # issue 19: two ExitCode enums plus EXIT_BAD_INPUT became one enum in the core
    assert _top_level_definitions("ExitCode") == ["src/ptycho_jax/_errors.py"]
    assert _top_level_definitions("EXIT_BAD_INPUT") == []
    from ptycho_jax.app import crosscheck_cli, guard
    from ptycho_jax.crosscheck.compare import EXIT_CODES, Verdict

    assert [(m.name, int(m)) for m in pj.ExitCode] == [
        ("OK", 0),
        ("MISMATCH", 1),
        ("USAGE", 2),
        ("INCOMPLETE", 3),
    ]
    assert _cli.ExitCode is crosscheck_cli.ExitCode is guard.ExitCode is pj.ExitCode
    assert EXIT_CODES == {
        Verdict.PASS: pj.ExitCode.OK,
        Verdict.FAIL: pj.ExitCode.MISMATCH,
        Verdict.INCOMPLETE: pj.ExitCode.INCOMPLETE,
    }
    assert all(type(v) is pj.ExitCode for v in EXIT_CODES.values())


def _imported_modules(tree: ast.Module) -> set[str]:
    """Top-level names of every module a file imports (at any level: functions included)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_no_test_module_imports_another_test_module():
    # shared helpers live in tests/helpers.py (and `_golden`, `_invariants`, ...), not in test_* modules
    tests = ROOT / "tests"
    offenders = {
        str(path.relative_to(tests)): sorted(m for m in _imported_modules(ast.parse(path.read_text())) if m.startswith("test_"))
        for path in sorted(tests.rglob("*.py"))
    }  # fmt: skip
    assert {k: v for k, v in offenders.items() if v} == {}
    tree = ast.parse(
        "import test_rawdata\nfrom test_sharding import HERE\ndef f():\n    import helpers\n"
    )
    assert _imported_modules(tree) == {
        "test_rawdata",
        "test_sharding",
        "helpers",
    }  # the check sees both forms
