"""The CLI's dataset cache (`_dataset_cache`): entries read back bit for bit, keyed by what decides
their bits, dropped when damaged or foreign, bounded in number; the report from a cached dataset
is the report from a fresh simulation."""

import dataclasses
import json
import logging
import os

import numpy as np
import pytest

from ptycho_jax._rawdata import RawData
from ptycho_jax._simulate import get_scenario, simulate
from ptycho_jax.app import dataset_cache as dc
from ptycho_jax.app.cli import main

SCENARIO = get_scenario("gs1_ideal", N=16)


def _what(**change):
    return {"call": "simulate", "scenario": SCENARIO.to_dict(), "noise": True,
            "noise_seed": None, "split": "test", **change}  # fmt: skip


@pytest.fixture(scope="module")
def raw():
    return simulate(SCENARIO).test


def _assert_same_raw(a: RawData, b: RawData) -> None:
    # every field of RawData is compared: one added later must be stored too
    assert {f.name for f in dataclasses.fields(RawData)} == {
        *dc._ARRAY_FIELDS,
        "norm_Y_I",
        "metadata",
        "diff3d_source_dtype",
    }
    for name in dc._ARRAY_FIELDS:
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            assert (x.dtype, x.shape) == (y.dtype, y.shape), name
            assert x.tobytes() == y.tobytes(), (
                name
            )  # bit for bit, NaN payloads and signed zeros included
    assert a.norm_Y_I == b.norm_Y_I and a.metadata == b.metadata
    assert a.diff3d_source_dtype == b.diff3d_source_dtype


def test_round_trip_is_bit_equal(tmp_path, raw):
    key = dc.dataset_key(_what())
    assert dc.load_dataset(tmp_path, key) is None  # empty folder: a miss
    path = dc.store_dataset(tmp_path, key, raw)
    assert path == dc.entry_path(tmp_path, key) and path.name.startswith("gs1_ideal-")
    back = dc.load_dataset(tmp_path, key)
    assert back is not None
    _assert_same_raw(raw, back)
    assert back.diff3d.size == 256 * 16 * 16 and back.Y is not None


def test_key_covers_what_decides_the_bits(monkeypatch):
    base = dc.entry_path("d", dc.dataset_key(_what(), environ={"HOME": "/a"}))
    assert dc.entry_path("d", dc.dataset_key(_what(), environ={"HOME": "/b"})) == base
    changed = [
        dc.dataset_key(_what(noise_seed=7), environ={}),
        dc.dataset_key(_what(split="train"), environ={}),
        dc.dataset_key(
            _what(scenario=get_scenario("gs1_ideal", N=16, nphotons=1e8).to_dict()), environ={}
        ),
        dc.dataset_key(_what(), environ={"XLA_FLAGS": "--xla_cpu_enable_fast_math=true"}),
        dc.dataset_key(_what(), environ={"JAX_ENABLE_X64": "1"}),
    ]
    monkeypatch.setattr(dc, "source_digest", lambda: "0" * 64)  # an edited checkout
    changed.append(dc.dataset_key(_what(), environ={}))
    paths = {dc.entry_path("d", k) for k in changed}
    assert base not in paths and len(paths) == len(changed)


def test_source_digest_covers_every_module():
    import ptycho_jax

    digest = dc.source_digest()
    assert len(digest) == 64 and int(digest, 16) >= 0
    modules = list(os.scandir(os.path.dirname(ptycho_jax.__file__)))
    assert sum(e.name.endswith(".py") for e in modules) > 20  # the walk found the package's files


def _damage_flip(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # inside diff3d's or Y's bytes: a silent bit flip
    path.write_bytes(bytes(data))


def _damage_truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])


@pytest.mark.parametrize("damage", [_damage_flip, _damage_truncate], ids=["bit-flip", "truncated"])
def test_damaged_entry_is_dropped(tmp_path, raw, caplog, damage):
    key = dc.dataset_key(_what())
    path = dc.store_dataset(tmp_path, key, raw)
    damage(path)
    with caplog.at_level(logging.WARNING, logger="ptycho_jax.app.dataset_cache"):
        assert dc.load_dataset(tmp_path, key) is None
    assert not path.exists()
    assert any("dropping" in m and "simulating again" in m for m in caplog.messages)


def test_entry_of_another_key_is_dropped(tmp_path, raw, caplog):
    key_a, key_b = dc.dataset_key(_what()), dc.dataset_key(_what(noise_seed=3))
    path_a = dc.store_dataset(tmp_path, key_a, raw)
    path_b = dc.entry_path(tmp_path, key_b)
    path_a.rename(path_b)  # what a collision of the file name's 24 hex digits would look like
    with caplog.at_level(logging.WARNING, logger="ptycho_jax.app.dataset_cache"):
        assert dc.load_dataset(tmp_path, key_b) is None
    assert not path_b.exists() and "another key" in caplog.text


def test_at_most_max_entries_least_recently_used_go(tmp_path, raw, monkeypatch):
    monkeypatch.setattr(dc, "MAX_ENTRIES", 2)
    keys = [dc.dataset_key(_what(noise_seed=s)) for s in range(3)]
    paths = [dc.store_dataset(tmp_path, k, raw) for k in keys[:2]]
    os.utime(paths[0], ns=(1, 1))  # entry 0 used long ago ...
    os.utime(paths[1], ns=(2, 2))
    assert dc.load_dataset(tmp_path, keys[0]) is not None  # ... until now: a hit refreshes it
    paths.append(dc.store_dataset(tmp_path, keys[2], raw))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        p.name for p in (paths[0], paths[2])
    )


def test_unwritable_folder_warns_and_goes_on(tmp_path, raw, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with caplog.at_level(logging.WARNING, logger="ptycho_jax.app.dataset_cache"):
        assert dc.store_dataset(blocker / "datasets", dc.dataset_key(_what()), raw) is None
    assert "cannot write" in caplog.text


def _report(out, *extra):
    assert main(["-q", *extra, "report", "--no-figure", "--out", str(out)]) == 0
    payload = json.loads((out / "intensity_stats.json").read_text())
    return payload, payload["provenance"].pop("simulation")


def test_report_from_the_cache_is_the_fresh_report(tmp_path, monkeypatch):
    monkeypatch.setenv("PTYCHO_JAX_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("PTYCHO_JAX_NO_CACHE", raising=False)
    first, how_first = _report(tmp_path / "r1")
    entries = list((tmp_path / "cache" / "datasets").iterdir())
    assert how_first == "simulated in this run, stored in the dataset cache" and len(entries) == 1
    second, how_second = _report(tmp_path / "r2")
    assert how_second == "simulated earlier, loaded from the dataset cache"
    assert second == first  # every statistic, scale and ratio, bit for bit (JSON floats are exact)
    assert first["stages"][0]["stats"]["shape"] == [512, 64, 64]
    fresh, how_fresh = _report(tmp_path / "r3", "--no-dataset-cache")
    assert how_fresh == "simulated in this run" and fresh == first
    assert list((tmp_path / "cache" / "datasets").iterdir()) == entries


def test_no_cache_env_writes_no_dataset(tmp_path, monkeypatch):
    monkeypatch.setenv("PTYCHO_JAX_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PTYCHO_JAX_NO_CACHE", "1")
    _, how = _report(tmp_path / "r")
    assert how == "simulated in this run" and not (tmp_path / "cache" / "datasets").exists()


def test_probe_file_content_enters_the_key(tmp_path, monkeypatch):
    # A scenario whose probe is read from a file: the same path with other content is another dataset.
    import argparse

    from ptycho_jax._simulate import make_idealized_probe
    from ptycho_jax.app.cli import Progress, _simulated

    monkeypatch.setenv("PTYCHO_JAX_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("PTYCHO_JAX_NO_CACHE", raising=False)
    probe_file = tmp_path / "probe.npz"
    scenario = get_scenario("gs1_ideal", N=16, probe_mode="custom", probe_path=str(probe_file))
    args = argparse.Namespace(no_dataset_cache=False, noise_seed=None)
    quiet = Progress(None, quiet=True)
    hows, diffs = [], []
    for scale in (1.0, 1.0, 0.5):
        np.savez(probe_file, probeGuess=make_idealized_probe(16) * scale)
        raw, how = _simulated(scenario, args, quiet)
        hows.append(how)
        diffs.append(raw.diff3d)
    assert hows == [
        "simulated in this run, stored in the dataset cache",
        "simulated earlier, loaded from the dataset cache",
        "simulated in this run, stored in the dataset cache",
    ]
    assert diffs[0].tobytes() == diffs[1].tobytes()
    assert len(list((tmp_path / "cache" / "datasets").iterdir())) == 2
