"""The host-allocator tuning (`_host_memory`), the light `import ptycho_jax`, and the console entry
point that applies the tuning before numpy or jax is imported. Every check runs in a new process:
the tuning is per process and must precede numpy's and jax's import."""

import json
import os
import pathlib
import platform
import subprocess
import sys

import pytest

from ptycho_jax.app import host_memory as _host_memory

ENV = _host_memory.NO_MALLOC_TUNING_ENV
ROOT = pathlib.Path(__file__).resolve().parents[1]


def _run(code: str, *, env: dict[str, str] | None = None) -> dict:
    """Run `code` in a new interpreter (this venv) and return the JSON on its last stdout line."""
    environ = {k: v for k, v in os.environ.items() if k not in (ENV, "GLIBC_TUNABLES")}
    environ.update(env or {})
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=environ
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.splitlines()[-1])


def test_import_ptycho_jax_imports_neither_numpy_nor_jax():
    doc = _run(
        "import json, sys\n"
        "import ptycho_jax\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('numpy', 'jax', 'jaxlib'))\n"
        "setup = ptycho_jax.reuse_freed_host_memory\n"
        "print(json.dumps({'heavy': heavy, 'setup': setup.__module__}))\n"
    )
    assert doc == {"heavy": [], "setup": "ptycho_jax.app.host_memory"}


def test_public_names_load_on_first_use_and_unknown_names_are_attribute_errors():
    doc = _run(
        "import json, sys\n"
        "import ptycho_jax as pj\n"
        "from ptycho_jax import ChainParams, group\n"
        "names = [n for n in pj.__all__ if getattr(pj, n) is None]\n"
        "print(json.dumps({'numpy': 'numpy' in sys.modules, 'none': names,\n"
        "    'group': group.__module__, 'params': ChainParams.__name__,\n"
        "    'hasattr': hasattr(pj, 'no_such_name'), 'in_dir': 'run_chain' in dir(pj)}))\n"
    )
    assert doc == {
        "numpy": True,
        "none": [],
        "group": "ptycho_jax._pipeline",
        "params": "ChainParams",
        "hasattr": False,
        "in_dir": True,
    }


# Allocate, touch and free a 256 MiB block twice; report the minor page faults of the second
# round. THP is switched off for the process (prctl PR_SET_THP_DISABLE) so that every page is
# 4 KiB whatever the kernel's setting: 256 MiB = 65,536 pages, each faulted in on a fresh mapping.
FAULTS = """
import ctypes, json, resource, sys
import ptycho_jax
setup = ptycho_jax.reuse_freed_host_memory()
assert ctypes.CDLL(None).prctl(41, 1, 0, 0, 0) == 0  # PR_SET_THP_DISABLE
import numpy as np

def round_trip():
    a = np.empty(256 * 2**20, np.uint8)
    a.fill(1)
    del a

round_trip()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
round_trip()
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps({"applied": setup.applied, "reason": setup.reason, "faults": faults}))
"""


@pytest.mark.skipif(
    platform.libc_ver()[0] != "glibc", reason="the allocator tuning applies to glibc malloc only"
)
def test_tuning_reuses_freed_memory_without_page_faults():
    tuned = _run(FAULTS)
    default = _run(FAULTS, env={ENV: "1"})
    assert tuned["applied"] is True, tuned["reason"]
    assert tuned["faults"] < 1000, tuned  # the freed block stayed in the heap: reused, no faults
    assert default["applied"] is False and ENV in default["reason"]
    assert default["faults"] > 60_000, default  # munmap'd, then a fresh mmap faulted page by page


def test_refuses_after_numpy_is_imported():
    doc = _run(
        "import json\n"
        "import numpy\n"
        "from ptycho_jax import reuse_freed_host_memory\n"
        "first = reuse_freed_host_memory()\n"
        "again = reuse_freed_host_memory()\n"
        "print(json.dumps({'applied': first.applied, 'reason': first.reason,\n"
        "    'same': again is first, 'note': first.describe()}))\n"
    )
    assert doc["applied"] is False and doc["same"] is True
    assert "numpy" in doc["reason"] and "before importing numpy or jax" in doc["reason"]
    assert doc["note"] == f"default ({doc['reason']})"


@pytest.mark.parametrize("value", ["1", "yes", "TRUE"])
def test_environment_variable_turns_it_off(value):
    setup = _host_memory._apply({ENV: value})
    assert setup == _host_memory.HostMemorySetup(False, f"{ENV} is set")


@pytest.mark.parametrize("value", ["", "0", "false", "No"])
def test_environment_variable_off_values_leave_it_on(value):
    assert _host_memory.tuning_disabled({ENV: value}) is False
    assert _host_memory.tuning_disabled({}) is False


def test_environment_variable_in_a_new_process():
    doc = _run(
        "import json, ptycho_jax\n"
        "s = ptycho_jax.reuse_freed_host_memory()\n"
        "print(json.dumps([s.applied, s.reason, s.describe()]))\n",
        env={ENV: "1"},
    )
    assert doc == [False, f"{ENV} is set", f"default ({ENV} is set)"]


def test_console_entry_point_help_exits_0():
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys\nfrom ptycho_jax.app.launch import main\nsys.exit(main(['--help']))",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "usage: ptycho-jax" in out.stdout


def test_console_entry_point_logs_the_setup_with_v(tmp_path):
    # a missing input: exit 2 after the setup line, nothing computed
    argv = ["-v", "--no-compile-cache", "report", "--input", str(tmp_path / "missing.npz")]
    argv += ["--out", str(tmp_path / "out")]
    code = f"import sys\nfrom ptycho_jax.app.launch import main\nsys.exit(main({argv!r}))"
    environ = {k: v for k, v in os.environ.items() if k != ENV}
    tuned = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=environ
    )
    off = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env={**environ, ENV: "1"},
    )
    assert (tuned.returncode, off.returncode) == (2, 2), tuned.stderr + off.stderr
    assert f"host malloc: {_host_memory.APPLIED_NOTE}" in tuned.stderr
    assert f"host malloc: default ({ENV} is set)" in off.stderr


def test_log_last_setup_logs_once_called_and_nothing_before(caplog, monkeypatch):
    import logging

    with caplog.at_level(logging.INFO, logger="ptycho_jax.app.host_memory"):
        monkeypatch.setattr(_host_memory, "_setup", None)
        _host_memory.log_last_setup()
        monkeypatch.setattr(_host_memory, "_setup", _host_memory.HostMemorySetup(True, "test"))
        _host_memory.log_last_setup()
    assert caplog.messages == [f"host malloc: {_host_memory.APPLIED_NOTE}"]


def test_bench_entry_point_tunes_before_its_imports_and_its_notes_say_so():
    # `python -m benchmarks` with a stand-in for benchmarks.cli: the real __main__ runs, in order
    code = (
        "import json, runpy, sys, types\n"
        "import benchmarks\n"
        "def main():\n"
        "    from benchmarks.machine import host_malloc_note\n"
        "    print(json.dumps(host_malloc_note()))\n"
        "    return 0\n"
        "sys.modules['benchmarks.cli'] = types.SimpleNamespace(main=main)\n"
        "try:\n"
        "    runpy.run_module('benchmarks', run_name='__main__')\n"
        "except SystemExit as e:\n"
        "    assert e.code == 0, e.code\n"
    )
    environ = {k: v for k, v in os.environ.items() if k != ENV}
    for env, note in [
        (environ, _host_memory.APPLIED_NOTE),
        ({**environ, ENV: "1"}, f"default ({ENV} is set)"),
    ]:
        out = subprocess.run(
            [sys.executable, "-c", code],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
        )
        assert out.returncode == 0, out.stderr[-3000:]
        assert json.loads(out.stdout.splitlines()[-1]) == note


def test_bench_markdown_states_the_host_malloc_line(monkeypatch):
    from benchmarks import machine, report
    from benchmarks.result import BenchResult

    monkeypatch.setattr(_host_memory, "_setup", None)  # a process that never called it
    assert machine.host_malloc_note().startswith("default (not tuned")
    doc = json.loads((ROOT / "benchmarks" / "results" / "cpu-large.json").read_text())
    result = BenchResult.from_json(doc)
    result.machine.pop("host_malloc", None)
    assert "- Host malloc:" not in report.to_markdown(result)  # results from before the field
    result.machine["host_malloc"] = _host_memory.APPLIED_NOTE
    md = report.to_markdown(result)
    assert f"- Host malloc: {_host_memory.APPLIED_NOTE}\n" in md


@pytest.mark.skipif(
    platform.libc_ver()[0] != "glibc", reason="the allocator tuning applies to glibc malloc only"
)
def test_release_gives_the_freed_heap_back():
    # After the tuned process frees its block, malloc_trim returns the pages: the next round faults again.
    code = FAULTS.replace(
        "print(json.dumps(",
        "released = ptycho_jax.release_freed_host_memory()\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "round_trip()\n"
        "again = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before\n"
        "print(json.dumps({'released': released, 'again': again, **",
    ).replace('"faults": faults}))', '"faults": faults}}))')
    doc = _run(code)
    assert doc["applied"] and doc["faults"] < 1000, doc  # kept and reused
    assert doc["released"] and doc["again"] > 60_000, doc  # given back, faulted in anew


def test_lazy_table_matches_the_type_checking_imports():
    # The package lists every public name twice (for type checkers, and for `__getattr__`): the same.
    import ast

    import ptycho_jax

    tree = ast.parse((ROOT / "src" / "ptycho_jax" / "__init__.py").read_text())
    block = next(
        n for n in tree.body if isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test)
    )
    imported = {
        alias.asname or alias.name: node.module.lstrip(".")
        for node in block.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    assert imported == ptycho_jax._MODULE_OF
    assert set(ptycho_jax.__all__) == {*imported, "__version__"}


def test_console_script_exits_fast_with_its_code_output_and_atexit(tmp_path):
    # `_launch.run` skips the interpreter's teardown, but not what a normal exit guarantees: the
    # exit code, buffered stdout (a pipe: block-buffered), and the atexit handlers.
    argv = ["ptycho-jax", "--no-compile-cache", "report", "--input", str(tmp_path / "missing.npz")]
    argv += ["--out", str(tmp_path / "out")]
    code = (
        "import atexit, sys\n"
        "atexit.register(lambda: print('atexit handler ran'))\n"
        "print('buffered before the run')\n"
        f"sys.argv = {argv!r}\n"
        "from ptycho_jax.app.launch import run\n"
        "run()\n"
        "print('never reached')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stderr[-3000:]
    assert out.stdout.splitlines() == ["buffered before the run", "atexit handler ran"]
    assert "ptycho-jax: error: RawData file" in out.stderr
    assert not (tmp_path / "out").exists()


def test_console_script_is_the_fast_exit_entry_point():
    import tomllib

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"ptycho-jax": "ptycho_jax.app.launch:run"}
