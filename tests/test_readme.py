"""README's two fresh-machine commands exist, and CI runs exactly the README's test command."""

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Fresh machine: the two commands", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", section, flags=re.S)


def test_two_commands():
    install_and_run, install_and_test = _commands()
    assert "pip install" in install_and_run and "ptycho-jax" in install_and_run
    assert "pip install" in install_and_test and "pytest" in install_and_test


def test_ci_runs_the_readme_test_command():
    _, install_and_test = _commands()
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert install_and_test in ci


# --- every `bash` command of the README, as written, in order, in a fresh clone ----------------


def _readme_commands(text: str) -> list[tuple[str, int]]:
    """(command, expected exit code) for each command line of each ```bash block, in order."""
    out = []
    for block in re.findall(r"```bash\n(.+?)\n```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            command, _, comment = line.strip().partition(" #")
            if command and not command.startswith("#"):
                code = re.search(r"\bexit (\d+)", comment)
                out.append((command.strip(), int(code.group(1)) if code else 0))
    return out


def _as_run_here(command: str) -> str | None:
    """The command without its environment set-up: the virtual environments it creates exist
    already (CI created them with exactly these commands; here they are linked in), and the test
    command is the run this test is part of."""
    parts = [p.strip() for p in command.split("&&")]
    kept = [p for p in parts if not p.startswith("python3 -m venv") and "pip install" not in p]
    if not kept or any("pytest" in p for p in kept):
        return None
    return " && ".join(kept)


def test_readme_commands_are_parsed_with_their_exit_codes():
    cmds = _readme_commands((ROOT / "README.md").read_text())
    assert len(cmds) >= 8
    assert cmds[0][0].endswith(".venv/bin/ptycho-jax")
    assert ("ptycho-jax simulate --scenario gs1_ideal", 0) in cmds
    assert any(c.startswith("ptycho-jax crosscheck") and code == 1 for c, code in cmds)
    assert [_as_run_here(c) for c, _ in cmds[:2]] == [".venv/bin/ptycho-jax", None]


def _upstream_venv() -> pathlib.Path | None:
    import os

    python = os.environ.get("PTYCHO_UPSTREAM_PYTHON")
    if python and pathlib.Path(python).is_file():
        return pathlib.Path(python).parent.parent
    return None


def test_readme_commands_run_in_order_from_a_fresh_clone(tmp_path):
    import os
    import shutil
    import subprocess
    import sys

    shared = ROOT.parent / "shared"
    upstream = _upstream_venv()
    if not (shared / "golden").is_dir() or upstream is None:
        if os.environ.get("PTYCHO_REQUIRE_UPSTREAM") == "1":
            pytest.fail("the README's commands need ../shared and the upstream environment")
        pytest.skip(
            "the README's commands need ../shared (goldens, upstream) and the upstream venv"
        )
    clone = tmp_path / "ptycho-jax"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True, timeout=300)
    (tmp_path / "shared").symlink_to(shared)
    (clone / ".venv").symlink_to(pathlib.Path(sys.prefix))
    (clone / ".venv-upstream").symlink_to(upstream)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env["PATH"] = f"{clone / '.venv' / 'bin'}{os.pathsep}{env['PATH']}"
    env.pop("PTYCHO_UPSTREAM_PYTHON", None)  # the README's default: .venv-upstream in the checkout
    env.pop("PTYCHO_UPSTREAM_PATH", None)  # the README's default: ../shared/upstream
    ran = []
    for command, expected in _readme_commands((clone / "README.md").read_text()):
        here = _as_run_here(command)
        if here is None:
            continue
        proc = subprocess.run(
            ["bash", "-c", here], cwd=clone, env=env, capture_output=True, text=True, timeout=900
        )
        assert proc.returncode == expected, (here, proc.stdout[-2000:], proc.stderr[-3000:])
        assert "Traceback" not in proc.stderr and "Warning" not in proc.stderr, (here, proc.stderr)
        ran.append(here)
    assert ran[0] == ".venv/bin/ptycho-jax" and (clone / "report" / "intensity_stats.md").is_file()
    assert (clone / "scan.npz").is_file() and (clone / "out" / "crosscheck.json").is_file()
    assert len(ran) >= 7
    # and the Python snippet, which must print no warning either
    snippet = re.search(r"```python\n(.+?)\n```", (clone / "README.md").read_text(), re.S)
    proc = subprocess.run(
        [sys.executable, "-c", snippet.group(1)],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr == "" and proc.stdout == "", proc.stderr[-3000:]
    shutil.rmtree(clone / "out", ignore_errors=True)
