"""Walk an upstream history and name the first commit whose numbers differ from a good one.

specs/crosscheck.md §8.1. The commits on the first-parent path from `good` (exclusive) to `bad`
(inclusive) are searched by halving. Each tested commit is exported (`ptycho_jax.crosscheck.trees`) and
cross-checked, as the port, against the good commit as the reference (one worker kept for it):
PASS = same numbers as good, FAIL = its numbers differ, INCOMPLETE or a tree that cannot be
imported = untestable, skipped as `git bisect skip` would (exit 125 under `git bisect run`). A
commit whose `ptycho/` source is byte-identical to good's is good without running. The answer
is the first FAIL commit after the last PASS; when skipped commits lie between them, all of them
are named. The root cause at the first differing commit comes from its cross-check.
"""

import dataclasses
import json
from collections.abc import Callable, Collection
from typing import Any

from ptycho_jax import BackendUnavailableError

from . import trees
from .compare import CrosscheckResult, Verdict
from .errors import HarnessInputError

GIT_BISECT_EXIT = {Verdict.PASS: 0, Verdict.FAIL: 1, Verdict.INCOMPLETE: 125}
"""`git bisect run` exit statuses: good, bad, skip (an untestable commit)."""


@dataclasses.dataclass(frozen=True)
class Step:
    """One tested commit."""

    commit: str
    subject: str
    verdict: str  # PASS, FAIL, INCOMPLETE, UNTESTABLE, SAME-CODE
    why: str = ""


@dataclasses.dataclass(frozen=True)
class BisectResult:
    """The first commit whose numbers differ from good (or the candidates, when skips hide it)."""

    good: str
    bad: str
    first_bad: str | None
    candidates: tuple[str, ...]
    steps: tuple[Step, ...]
    subjects: dict[str, str]
    root_cause: str | None = None
    result_at_first_bad: CrosscheckResult | None = dataclasses.field(default=None, repr=False)

    def summary(self) -> str:
        if self.first_bad is not None:
            line = (
                f"first commit whose numbers differ from {self.good[:12]}: {self.first_bad[:12]} "
                f"{self.subjects.get(self.first_bad, '')}"
            )
            return line + (f" — {self.root_cause}" if self.root_cause else "")
        names = ", ".join(f"{c[:12]} {self.subjects.get(c, '')}" for c in self.candidates)
        return f"the first differing commit is one of (untestable commits between): {names}"

    def to_json(self) -> dict[str, Any]:
        return {
            "good": self.good,
            "bad": self.bad,
            "first_bad": self.first_bad,
            "candidates": list(self.candidates),
            "root_cause": self.root_cause,
            "summary": self.summary(),
            "steps": [dataclasses.asdict(s) for s in self.steps],
        }

    def to_json_str(self) -> str:
        return json.dumps(self.to_json(), indent=2, ensure_ascii=False)

    def to_markdown(self) -> str:
        lines = [
            f"# Bisect {self.good[:12]}..{self.bad[:12]}",
            "",
            f"**{self.summary()}**",
            "",
            "| commit | subject | verdict | why |",
            "| --- | --- | --- | --- |",
        ]
        for s in self.steps:
            why = s.why.replace("|", "\\|")
            lines.append(f"| `{s.commit[:12]}` | {s.subject} | {s.verdict} | {why} |")
        return "\n".join(lines) + "\n"


def first_parent_path(repo, good: str, bad: str) -> list[str]:
    """Commits after `good` up to `bad` on bad's first-parent line, oldest first."""
    g, b = trees.resolve_commit(repo, good), trees.resolve_commit(repo, bad)
    try:
        trees._git(repo, "merge-base", "--is-ancestor", g, b)
    except HarnessInputError as e:
        raise HarnessInputError(f"--good {good} is not an ancestor of --bad {bad} in {repo}") from e
    out = trees._git(repo, "rev-list", "--first-parent", "--reverse", f"{g}..{b}")
    return [c for c in out.splitlines() if c]


def _subject(repo, commit: str) -> str:
    return trees._git(repo, "log", "-1", "--format=%s", commit)


def bisect(
    raw: Any,
    *,
    repo,
    good: str,
    bad: str,
    params: Any,
    stages: "str | Collection[str] | None" = None,
    tolerances: Any = None,
    python=None,
    progress: Callable[[str], None] | None = None,
) -> BisectResult:
    """The first commit between `good` and `bad` whose cross-check against `good` FAILs.

    Raises:
        HarnessInputError: refs git does not know, `good` not an ancestor of `bad`, or `bad`
            whose numbers do not differ from good's (nothing to find).
        BackendUnavailableError: the good commit's tree cannot be imported.
    """
    from .run import run_crosscheck
    from .upstream import UpstreamBackend

    tick = progress or (lambda msg: None)
    repo = trees.upstream_repo(repo)
    path = first_parent_path(repo, good, bad)
    if not path:
        raise HarnessInputError(f"--bad {bad} is --good {good}: no commits to search")
    g = trees.resolve_commit(repo, good)
    subjects = {c: _subject(repo, c) for c in [g, *path]}
    good_tree = trees.tree_at_ref(g, f"upstream@{g[:12]}", repo)
    good_digest = trees.code_digest(good_tree.path, UpstreamBackend.packages)
    reference = UpstreamBackend(tree=good_tree, python=python)
    tester = _CommitTester(
        raw=raw,
        repo=repo,
        path=path,
        subjects=subjects,
        good_digest=good_digest,
        reference=reference,
        params=params,
        stages=stages,
        tolerances=tolerances,
        python=python,
        tick=tick,
        crosscheck=run_crosscheck,
        backend=UpstreamBackend,
    )
    try:
        lo, hi, verdicts = _halve(tester, good=good, bad=bad)
    finally:
        reference.close()
    return _bisect_result(tester, g, lo, hi, verdicts)


@dataclasses.dataclass
class _CommitTester:
    """Cross-checks one commit of the path, as the port, against the good tree (one reference
    worker kept for every test); each test appends its `Step` and keeps its result."""

    raw: Any
    repo: Any
    path: list[str]
    subjects: dict[str, str]
    good_digest: Any
    reference: Any
    params: Any
    stages: Any
    tolerances: Any
    python: Any
    tick: Callable[[str], None]
    crosscheck: Callable[..., CrosscheckResult]
    backend: Any  # UpstreamBackend (imported lazily by `bisect`)
    steps: list[Step] = dataclasses.field(default_factory=list)
    results: dict[int, CrosscheckResult] = dataclasses.field(default_factory=dict)

    def __call__(self, i: int) -> str:
        """PASS, FAIL or SKIP (untestable) for `path[i]`."""
        c, subjects = self.path[i], self.subjects
        tree = trees.tree_at_ref(c, f"upstream@{c[:12]}", self.repo)
        self.tick(f"testing {c[:12]} {subjects[c]}")
        if trees.code_digest(tree.path, self.backend.packages) == self.good_digest:
            self.steps.append(Step(c, subjects[c], "SAME-CODE", "ptycho/ identical to good's"))
            return "PASS"
        try:
            port = self.backend(tree=tree, python=self.python)
        except (BackendUnavailableError, HarnessInputError) as e:
            self.steps.append(Step(c, subjects[c], "UNTESTABLE", str(e).splitlines()[0]))
            return "SKIP"
        try:
            res = self.crosscheck(
                self.raw,
                port=port,
                reference=self.reference,
                params=self.params,
                stages=self.stages,
                tolerances=self.tolerances,
                allow_same_code=True,
            )
        finally:
            port.close()
        self.results[i] = res
        why = (res.root_cause or {}).get("summary", "") if res.verdict == Verdict.FAIL else ""
        if res.verdict == Verdict.INCOMPLETE:
            why = "; ".join(f"{s.name}: {w}" for s in res.stages for _, w in s.uncompared[:1])[:300]
        self.steps.append(Step(c, subjects[c], str(res.verdict), why))
        return {"PASS": "PASS", "FAIL": "FAIL"}.get(str(res.verdict), "SKIP")


def _halve(test: _CommitTester, *, good: str, bad: str) -> tuple[int, int, dict[int, str]]:
    """(last known good index, first known bad index, every verdict): `bad` is tested first (it
    must FAIL, else there is nothing to find), then the untested commit nearest the middle of
    the open range, as git bisect picks, until no untested commit lies between the two."""
    verdicts: dict[int, str] = {}
    last = len(test.path) - 1
    verdicts[last] = test(last)
    if verdicts[last] != "FAIL":
        steps = test.steps
        raise HarnessInputError(
            f"--bad {bad} does not differ from --good {good} "
            f"({steps[-1].verdict}: {steps[-1].why or 'same numbers'}): nothing to bisect"
        )
    lo, hi = -1, last  # lo: last known good index (-1 = good itself), hi: first known bad
    while True:
        open_ = [i for i in range(lo + 1, hi) if i not in verdicts]
        if not open_:
            break
        # the untested commit nearest the middle, as git bisect picks
        mid = (lo + hi) // 2
        i = min(open_, key=lambda j: (abs(j - mid), j))
        verdicts[i] = test(i)
        if verdicts[i] == "PASS":
            lo = i
        elif verdicts[i] == "FAIL":
            hi = i
    return lo, hi, verdicts


def _bisect_result(
    test: _CommitTester, g: str, lo: int, hi: int, verdicts: dict[int, str]
) -> BisectResult:
    """The answer: the first FAIL after the last PASS, or every candidate when skipped
    (untestable) commits lie between them; the root cause from the first bad commit's check."""
    path, results = test.path, test.results
    skipped = tuple(path[i] for i in range(lo + 1, hi) if verdicts.get(i) == "SKIP")
    first_bad = path[hi] if not skipped else None
    cause = None
    if first_bad is not None and hi in results:
        cause = (results[hi].root_cause or {}).get("summary")
    return BisectResult(
        good=g,
        bad=path[-1],
        first_bad=first_bad,
        candidates=(*skipped, path[hi]),
        steps=tuple(test.steps),
        subjects=test.subjects,
        root_cause=cause,
        result_at_first_bad=results.get(hi),
    )
