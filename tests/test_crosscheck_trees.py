"""Upstream trees other than `../shared/upstream`, as an upstream developer gates a branch.

Each test builds its own trees: copies of the shared upstream `ptycho/` with one asserted edit (a
summation changed, a method renamed, a signature changed, an import failing, a scaler inverted, a
log-scale layout the harness does not know), and a git history made from such trees for the
`upstream@REF`, bisect and `git bisect run` routes. Every run goes through the CLI in a
subprocess, as CI would run it: the exit code, stdout (the verdict only) and the JSON report are
checked. Needs the upstream environment (see tests/_upstream.py).
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest
from _upstream import GOLDEN, ROOT, require_upstream

pytestmark = pytest.mark.filterwarnings("ignore::ptycho_jax.crosscheck.upstream.UpstreamOutput")

SHARED_TREE = pathlib.Path(os.environ.get("PTYCHO_UPSTREAM_PATH", ROOT.parent / "shared/upstream"))
INPUT = GOLDEN / "gs1_ideal" / "input_rawdata.npz"
SMALL = ["--input", str(INPUT), "--gridsize", "1", "--n-groups", "128"]
# what upstream prints when it fails or imports (tracebacks, TF's device probing, the doctest
# run of ptycho/autotest/serializer.py): never on our stdout
NOISE = ("Traceback", 'File "', "Trying:", "Expecting", "cuda", "DEBUG:", "INFO:", "WARNING:")

SUMMATION = (  # the branch that sums normalize_data's energies in float32
    "ptycho/raw_data.py",
    "np.square(dset['diffraction'].astype(np.float64))",
    "np.square(dset['diffraction'].astype(np.float32))",
)
EDITS = {
    "summation": [SUMMATION],
    "no_method": [
        ("ptycho/raw_data.py", "_generate_dataset_from_groups", "_dataset_from_groups_v0"),
    ],
    "no_seed": [
        (
            "ptycho/raw_data.py",
            "dataset_path: Optional[str] = None, seed: Optional[int] = None,",
            "dataset_path: Optional[str] = None,",
        ),
        ("ptycho/raw_data.py", "seed=seed,", "seed=None,"),
    ],
    "no_import": [
        (
            "ptycho/params.py",
            "\ndef ",
            "\nraise RuntimeError('params.py is broken on this branch')\ndef ",
        ),
    ],
    "missing_dependency": [
        ("ptycho/model.py", "\nimport ", "\nimport ptycho_missing_dependency_xyz\nimport "),
    ],
    "inverted_scaler": [
        ("ptycho/model.py", "return x / tf.math.exp(self.w)", "return x * tf.math.exp(self.w)"),
    ],
    "unknown_layout": [
        ("ptycho/model.py", "_lazy_cache", "_cache_v0"),
        ("ptycho/model.py", "_get_log_scale", "_log_scale_v0"),
        ("ptycho/model_manager.py", "_get_log_scale", "_log_scale_v0"),
    ],
}


def make_tree(dst: pathlib.Path, edits=()) -> pathlib.Path:
    """A copy of the shared upstream `ptycho/` at `dst`, each (file, old, new) edit asserted to apply."""
    shutil.copytree(
        SHARED_TREE / "ptycho",
        dst / "ptycho",
        dirs_exist_ok=True,
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    for rel, old, new in edits:
        p = dst / rel
        text = p.read_text()
        assert old in text, (rel, old)
        if old.startswith("\n"):  # insert once, at the first match
            text = text.replace(old, new, 1)
        else:
            text = text.replace(old, new)
        p.write_text(text)
    return dst


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    require_upstream()
    base = tmp_path_factory.mktemp("trees")
    made = {name: make_tree(base / name, edits) for name, edits in EDITS.items()}
    made["pristine"] = make_tree(base / "pristine")
    return made


def crosscheck(*args, out: pathlib.Path, cwd=ROOT, env=None) -> subprocess.CompletedProcess:
    e = dict(os.environ, **(env or {}))
    proc = subprocess.run(
        [sys.executable, "-m", "ptycho_jax.app.cli", "crosscheck", *args, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=cwd,
        env=e,
    )
    for noise in NOISE:
        assert noise not in proc.stdout, (noise, proc.stdout)
    return proc


def report(out: pathlib.Path) -> dict:
    return json.loads((out / "crosscheck.json").read_text())


def stage(data: dict, name: str) -> dict:
    return next(s for s in data["stages"] if s["name"] == name)


# ---------------------------------------------------------------------------------------------
# one tree against the shared one


def test_summation_change_fails_with_one_root_cause(trees, tmp_path):
    proc = crosscheck(
        "--port", f"upstream:{trees['summation']}", "--reference", "upstream", *SMALL, out=tmp_path
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert lines[0] == f"crosscheck upstream:{trees['summation']} vs upstream: FAIL"
    roots = [line for line in lines if line.startswith("root cause")]
    assert len(roots) == 1, proc.stdout
    assert roots[0].startswith(
        "root cause (1 independent, first diverging stage normalize): normalize.normalize_gain ×"
    ), roots[0]
    assert "follow from it" in roots[0] and "variant `seed`" in roots[0], roots[0]
    data = report(tmp_path)
    rc = data["root_cause"]
    assert [c["array"] for c in rc["causes"]] == ["normalize.normalize_gain"]
    failing = {
        f"{s['name']}.{a['name']}"
        for s in data["stages"]
        for a in s["arrays"]
        if a["status"] == "compared" and not a["passed"]
    }
    assert failing and failing <= set(rc["causes"][0]["explains"]) | {"normalize.normalize_gain"}
    assert set(rc["follows"]) == failing - {"normalize.normalize_gain"}
    for name in ("grouping", "grouped", "patches", "scaler"):
        assert stage(data, name)["verdict"] == "PASS", name
    # provenance of each side: the tree, its code, the interpreter and the worker's libraries
    prov = data["provenance"]
    assert prov["port"]["tree"] == str(trees["summation"])
    assert prov["reference"]["tree"] == str(SHARED_TREE.resolve())
    assert prov["port"]["code_sha256"] != prov["reference"]["code_sha256"]
    for side in ("port", "reference"):
        assert prov[side]["versions"]["tensorflow"] and prov[side]["versions"]["numpy"], side
        assert pathlib.Path(prov[side]["interpreter"]).is_file(), side
    md = (tmp_path / "crosscheck.md").read_text()
    assert str(trees["summation"]) in md and "root cause" in md.lower()


@pytest.mark.parametrize(
    "tree, stage_name, words",
    [
        ("no_method", "grouped", "_generate_dataset_from_groups"),
        ("no_seed", "grouping", "seed"),
        ("missing_dependency", "scaler", "ptycho_missing_dependency_xyz"),
        ("unknown_layout", "scaler", "_lazy_cache"),
    ],
)
def test_api_break_is_incomplete_naming_what_is_missing(trees, tmp_path, tree, stage_name, words):
    proc = crosscheck(
        "--port", f"upstream:{trees[tree]}", "--reference", "upstream", *SMALL, out=tmp_path
    )
    assert proc.returncode == 3, proc.stdout + proc.stderr[-2000:]
    assert proc.stdout.splitlines()[0].endswith(": INCOMPLETE"), proc.stdout
    assert "FAIL" not in proc.stdout.splitlines()[1], proc.stdout
    data = report(tmp_path)
    s = stage(data, stage_name)
    assert s["verdict"] == "INCOMPLETE", s
    whys = [u["why"] for u in s["uncompared"]]
    assert any(words in w for w in whys), whys
    assert all("\n" not in w for w in whys), whys  # one line, not a flattened traceback
    # nothing compared fails, and what the tree can answer is still compared
    assert not any(
        not a["passed"] for st in data["stages"] for a in st["arrays"] if a["status"] == "compared"
    )
    if tree == "no_method":  # the method is gone, normalize_data (module level) still runs
        assert stage(data, "normalize")["verdict"] == "PASS"
    if stage_name == "scaler":
        assert stage(data, "container")["verdict"] == "PASS"


def test_unimportable_tree_is_exit_2_naming_tree_and_error(trees, tmp_path):
    out = tmp_path / "out"
    proc = crosscheck(
        "--port", f"upstream:{trees['no_import']}", "--reference", "upstream", *SMALL, out=out
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr[-2000:]
    assert proc.stdout == ""
    err = proc.stderr.strip().splitlines()
    assert str(trees["no_import"]) in proc.stderr
    assert any("params.py is broken on this branch" in line for line in err), proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists() or not any(out.iterdir())


def test_inverted_scaler_fails_with_the_scaler_as_its_cause(trees, tmp_path):
    proc = crosscheck(
        "--port",
        f"upstream:{trees['inverted_scaler']}",
        "--reference",
        "upstream",
        *SMALL,
        out=tmp_path,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr[-2000:]
    data = report(tmp_path)
    rc = data["root_cause"]
    assert rc["first_diverging_stage"] == "scaler", rc
    assert len(rc["causes"]) == 1, rc
    assert rc["causes"][0]["array"].startswith("scaler."), rc
    for name in ("grouping", "grouped", "normalize", "patches", "intensity_scales"):
        assert stage(data, name)["verdict"] == "PASS", name


def test_same_code_is_refused_unless_allowed(trees, tmp_path):
    args = ("--port", f"upstream:{trees['pristine']}", "--reference", "upstream", *SMALL)
    proc = crosscheck(*args, out=tmp_path / "a")
    assert proc.returncode == 2, proc.stdout + proc.stderr[-2000:]
    assert "same code" in proc.stderr and "--allow-same-code" in proc.stderr, proc.stderr
    proc = crosscheck(*args, "--allow-same-code", out=tmp_path / "b")
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
    assert proc.stdout.splitlines()[0].endswith(": PASS")


def test_two_trees_side_by_side(trees, tmp_path):
    proc = crosscheck(
        "--port",
        f"upstream:{trees['summation']}",
        "--reference",
        f"upstream:{trees['pristine']}",
        *SMALL,
        out=tmp_path,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr[-2000:]
    prov = report(tmp_path)["provenance"]
    assert (prov["port"]["tree"], prov["reference"]["tree"]) == (
        str(trees["summation"]),
        str(trees["pristine"]),
    )


# ---------------------------------------------------------------------------------------------
# a git history: upstream@REF, bisect, git bisect run


def _git(repo, *args):
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    """Nine commits: good, then eight — one untestable (params.py raises), one numeric change."""
    require_upstream()
    repo = tmp_path_factory.mktemp("upstream-repo")
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "config", "user.email", "ci@example.org")
    _git(repo, "config", "user.name", "ci")
    make_tree(repo)
    commits = {}

    def commit(name, edits=(), touch=None):
        for rel, old, new in edits:
            p = repo / rel
            text = p.read_text()
            assert old in text, (rel, old)
            p.write_text(
                text.replace(old, new, 1) if old.startswith("\n") else text.replace(old, new)
            )
        if touch:
            (repo / touch).write_text(f"{name}\n")
        _git(repo, "add", "-A")
        _git(repo, "commit", "-q", "-m", name)
        commits[name] = _git(repo, "rev-parse", "HEAD")

    commit("good: the shared tree")
    commit("docs only", touch="NOTES.md")
    commit("comment in raw_data", [("ptycho/raw_data.py", "\ndef ", "\n# a comment\ndef ")])
    commit("another comment", [("ptycho/loader.py", "\ndef ", "\n# another comment\ndef ")])
    commit("params.py broken", EDITS["no_import"])
    commit(
        "params.py fixed",
        [
            (
                "ptycho/params.py",
                "\nraise RuntimeError('params.py is broken on this branch')\n",
                "\n",
            )
        ],
    )
    commit("sum normalize_data in float32", [SUMMATION])
    commit("more docs", touch="NOTES.md")
    commit("a last comment", [("ptycho/loader.py", "\n# another comment\n", "\n# changed\n")])
    assert len(commits) == 9
    return repo, commits


def test_two_commits_side_by_side(history, tmp_path):
    repo, c = history
    env = {"PTYCHO_JAX_CACHE_DIR": str(tmp_path / "cache")}
    bad = c["sum normalize_data in float32"]
    proc = crosscheck(
        "--port",
        f"upstream@{bad[:10]}",
        "--reference",
        "upstream@main~8",
        "--upstream-repo",
        str(repo),
        *SMALL,
        out=tmp_path / "out",
        env=env,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr[-2000:]
    data = report(tmp_path / "out")
    assert data["root_cause"]["causes"][0]["array"] == "normalize.normalize_gain"
    prov = data["provenance"]
    assert prov["port"]["commit"] == bad
    assert prov["reference"]["commit"] == c["good: the shared tree"]
    assert prov["port"]["dirty"] is False
    # exported once into the cache keyed by the commit
    assert (tmp_path / "cache" / "upstream-trees" / bad / "ptycho" / "params.py").is_file()


def test_bisect_names_the_numeric_commit(history, tmp_path):
    repo, c = history
    env = {"PTYCHO_JAX_CACHE_DIR": str(tmp_path / "cache")}
    out = tmp_path / "out"
    proc = crosscheck(
        "bisect",
        "--good",
        c["good: the shared tree"],
        "--bad",
        "main",
        "--upstream-repo",
        str(repo),
        *SMALL,
        out=out,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
    first = c["sum normalize_data in float32"]
    assert proc.stdout.splitlines()[0].startswith(
        f"first commit whose numbers differ from {c['good: the shared tree'][:12]}: {first[:12]} "
        "sum normalize_data in float32 — root cause"
    ), proc.stdout
    data = json.loads((out / "bisect.json").read_text())
    assert data["first_bad"] == first
    assert "normalize.normalize_gain" in data["root_cause"]
    verdicts = {s["commit"]: s["verdict"] for s in data["steps"]}
    assert verdicts[first] == "FAIL"
    assert verdicts.get(c["params.py broken"]) == "UNTESTABLE"  # tested and skipped
    assert all(
        v in ("PASS", "SAME-CODE", "UNTESTABLE")
        for k, v in verdicts.items()
        if k not in (first, c["more docs"], c["a last comment"])
    )
    assert report(out / "first_bad")["provenance"]["port"]["commit"] == first


def test_git_bisect_run_finds_the_same_commit(history, tmp_path):
    repo, c = history
    work = tmp_path / "work"
    _git(repo, "worktree", "add", "-q", "--detach", str(work), "main")
    env = dict(os.environ, PTYCHO_JAX_CACHE_DIR=str(tmp_path / "cache"))
    good = c["good: the shared tree"]
    script = tmp_path / "check.sh"
    script.write_text(
        f"exec {sys.executable} -m ptycho_jax.app.cli -q crosscheck --port upstream:{work} "
        f"--reference upstream@{good} --upstream-repo {repo} --git-bisect-exit "
        f"{' '.join(SMALL)} --out {tmp_path / 'out'}\n"
    )
    _git(work, "bisect", "start", "main", good)
    proc = subprocess.run(
        ["git", "-C", str(work), "bisect", "run", "bash", str(script)],
        capture_output=True,
        text=True,
        timeout=1500,
        env=env,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"{c['sum normalize_data in float32']} is the first bad commit" in proc.stdout, (
        proc.stdout
    )
