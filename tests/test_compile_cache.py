"""The CLI's persistent compilation cache: where it lives, how it turns off, that it is written."""

import os
import pathlib
import subprocess
import sys

from ptycho_jax.app import compile_cache as cc

_PROBE = """
import sys
import jax, jax.numpy as jnp
from ptycho_jax.app.compile_cache import enable_compile_cache
path = enable_compile_cache()
print(path)
jax.jit(lambda x: jnp.sin(x) * 3 + 1)(jnp.arange(7.0)).block_until_ready()
"""


def test_default_dir_follows_xdg(tmp_path):
    assert (
        cc.default_cache_dir({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "ptycho-jax" / "jax"
    )
    assert cc.default_cache_dir({"HOME": "/nowhere"}).parts[-3:] == (".cache", "ptycho-jax", "jax")
    explicit = {"PTYCHO_JAX_CACHE_DIR": str(tmp_path / "c"), "XDG_CACHE_HOME": "/x"}
    assert cc.default_cache_dir(explicit) == tmp_path / "c" / "jax"
    assert cc.cache_root(explicit) == tmp_path / "c"


def test_disable_values():
    for v in ("1", "yes", "true", "TRUE"):
        assert cc.cache_disabled({"PTYCHO_JAX_NO_CACHE": v})
    for v in ("", "0", "false", "no"):
        assert not cc.cache_disabled({"PTYCHO_JAX_NO_CACHE": v})
    assert not cc.cache_disabled({})
    assert cc.enable_compile_cache(environ={"PTYCHO_JAX_NO_CACHE": "1"}) is None


def _run(env_extra: dict[str, str]) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PTYCHO_JAX_", "XDG_CACHE"))}
    env.update(env_extra, JAX_PLATFORMS="cpu")
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


def test_cache_written_in_xdg_dir_and_off_by_env(tmp_path):
    printed = _run({"XDG_CACHE_HOME": str(tmp_path / "xdg")})
    where = tmp_path / "xdg" / "ptycho-jax" / "jax"
    assert pathlib.Path(printed) == where
    entries = [p for p in where.iterdir() if not p.name.endswith("-atime")]
    assert len(entries) >= 1  # even a sub-millisecond program is cached (thresholds at zero)
    printed = _run({"XDG_CACHE_HOME": str(tmp_path / "off"), "PTYCHO_JAX_NO_CACHE": "1"})
    assert printed == "None"
    assert not (tmp_path / "off").exists()


def test_unwritable_dir_leaves_cache_off(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert cc.enable_compile_cache(blocker / "sub") is None


def _cli(args: list[str], env_extra: dict[str, str]) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PTYCHO_JAX_", "XDG_CACHE"))}
    env.update(env_extra, JAX_PLATFORMS="cpu")
    code = "import sys; from ptycho_jax.app.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=300
    )


def test_cli_flag_turns_the_cache_off(tmp_path):
    sim = ["simulate", "--scenario", "gs1_ideal", "--N", "16", "--split", "test"]
    out = _cli(["-q", "--no-compile-cache", *sim, "--out", str(tmp_path / "a.npz")],
               {"XDG_CACHE_HOME": str(tmp_path / "off")})  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "a.npz").is_file() and not (tmp_path / "off").exists()
    out = _cli(
        ["-q", *sim, "--out", str(tmp_path / "b.npz")], {"XDG_CACHE_HOME": str(tmp_path / "on")}
    )
    assert out.returncode == 0, out.stderr
    where = tmp_path / "on" / "ptycho-jax" / "jax"
    assert len([p for p in where.iterdir() if not p.name.endswith("-atime")]) >= 1


def test_unwritable_cache_root_warns_in_the_cli_format_and_the_report_goes_on(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    out = _cli(["report", "--no-figure", "--out", str(tmp_path / "r")],
               {"PTYCHO_JAX_CACHE_DIR": str(blocker / "cache")})  # fmt: skip
    assert out.returncode == 0, out.stderr
    warnings = [ln for ln in out.stderr.splitlines() if "warning" in ln.lower()]
    assert len(warnings) == 2, out.stderr
    assert warnings[0].startswith(
        "ptycho-jax: warning: persistent compilation cache off: cannot create"
    )
    assert warnings[1].startswith("ptycho-jax: warning: dataset cache: cannot write")
    assert (tmp_path / "r" / "intensity_stats.json").is_file()
