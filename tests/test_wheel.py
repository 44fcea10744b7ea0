"""The wheel built from the repository (issue 19): one top-level package, `ptycho_jax`, with the
harness inside it as `ptycho_jax.crosscheck` (its tolerance table included), no benchmarks; its
console script runs the main job and a crosscheck from an empty folder, away from the checkout."""

import os
import pathlib
import subprocess
import sys
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (whl,) = out.glob("ptycho_jax-*.whl")
    return whl


def test_the_wheel_has_one_top_level_package(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"ptycho_jax"}
    assert "ptycho_jax/crosscheck/tolerances.toml" in names
    assert "ptycho_jax/crosscheck/examples/numpy_port.py" in names
    assert "ptycho_jax/app/cli.py" in names and "ptycho_jax/py.typed" in names
    assert not any("benchmarks" in n for n in names)
    (entry,) = [n for n in names if n.endswith("entry_points.txt")]
    scripts = zipfile.ZipFile(wheel).read(entry).decode()
    assert "ptycho-jax = ptycho_jax.app.launch:run" in scripts


def test_the_installed_console_script_runs_from_an_empty_folder(wheel, tmp_path):
    # the wheel unpacked into its own folder, first on the path; the dependencies come from this
    # environment. The checkout is nowhere on the path, so nothing can be found there by accident.
    site = tmp_path / "site"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--target",
            str(site),
            str(wheel),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(site)
    env["PTYCHO_JAX_CACHE_DIR"] = str(tmp_path / "cache")
    launch = "import sys; from ptycho_jax.app.launch import run; sys.argv[0] = 'ptycho-jax'; run()"

    def ptycho_jax(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-c", launch, *args],
            cwd=empty,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )

    where = subprocess.run(
        [sys.executable, "-c", "import ptycho_jax.crosscheck as c, ptycho_jax as p; print(p.__file__); print(c.__file__)"],
        cwd=empty, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert where.returncode == 0, where.stderr[-2000:]
    assert all(line.startswith(str(site)) for line in where.stdout.split()), where.stdout
    generic = subprocess.run(
        [sys.executable, "-c", "import crosscheck"],
        cwd=empty,
        env=env,
        capture_output=True,
        text=True,
    )
    assert generic.returncode == 1 and "No module named 'crosscheck'" in generic.stderr

    main_job = ptycho_jax("-q")
    assert main_job.returncode == 0, main_job.stderr[-3000:]
    assert (empty / "report" / "intensity_stats.md").is_file()
    check = ptycho_jax(
        "-q", "crosscheck", "--scenario", "gs1_ideal", "--reference", "tf", "--n-groups", "16"
    )
    assert check.returncode == 0, check.stderr[-3000:]
    assert (empty / "report" / "crosscheck.json").is_file()
