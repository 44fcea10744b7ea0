"""The report's progress line names the same frames on a first and on a cached run (issue 21
item 11: "1024 frames of 64x64" on a first run, "512 frames" on a cached one)."""

import re

from ptycho_jax import get_scenario
from ptycho_jax.app.cli import main

FRAMES = re.compile(r"scenario (\w+)'s test half \((\d+) frames of (\d+)x(\d+)")


def _frames_line(tmp_path, capsys, out: str) -> tuple[str, tuple[str, ...]]:
    argv = ["report", "--scenario", "gs1_ideal", "--no-figure", "--out", str(tmp_path / out)]
    assert main(argv) == 0
    (line,) = [ln for ln in capsys.readouterr().err.splitlines() if "test half (" in ln]
    return line, FRAMES.search(line).groups()


def test_first_and_cached_runs_name_the_same_frames(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PTYCHO_JAX_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("PTYCHO_JAX_NO_CACHE", raising=False)
    first, counted_first = _frames_line(tmp_path, capsys, "r1")
    cached, counted_cached = _frames_line(tmp_path, capsys, "r2")
    assert "simulating scenario gs1_ideal" in first, first
    assert "from the dataset cache" in cached, cached
    sc = get_scenario("gs1_ideal")
    assert (
        counted_first == counted_cached == ("gs1_ideal", str(sc.test_count), str(sc.N), str(sc.N))
    )
