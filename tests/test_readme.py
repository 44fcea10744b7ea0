"""README's two fresh-machine commands exist, and CI runs exactly the README's test command."""

import pathlib
import re

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
