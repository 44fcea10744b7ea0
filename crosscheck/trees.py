"""Upstream source trees as crosscheck backends: by path, or by git ref of a checkout.

specs/crosscheck.md §2.3.1. A backend spec names the tree:

* `upstream` — the default tree (`PTYCHO_UPSTREAM_PATH`, else `../shared/upstream`);
* `upstream:PATH` — the folder holding `ptycho/` (a checkout, a copy, a branch's work tree);
* `upstream@REF` — a commit, branch or tag of a git checkout (`--upstream-repo` or
  `PTYCHO_UPSTREAM_REPO`), exported once with `git archive` into a cache keyed by the full
  commit hash (`$PTYCHO_JAX_CACHE_DIR/upstream-trees/<commit>`, else
  `~/.cache/ptycho-jax/upstream-trees/<commit>`).

`ptycho_torch` takes the same suffixes. A tree's provenance (path, commit, dirty or not) and its
code digest (what the same-code check compares) are computed here, on the host, with git.
"""

import dataclasses
import hashlib
import os
import pathlib
import shutil
import subprocess
import tempfile

from .errors import HarnessInputError

ENV_REPO = "PTYCHO_UPSTREAM_REPO"
ENV_CACHE = "PTYCHO_JAX_CACHE_DIR"
PACKAGES = ("ptycho", "ptycho_torch")
"""The packages of a tree whose source enters its code digest."""


@dataclasses.dataclass(frozen=True)
class UpstreamTree:
    """One upstream source tree: where it is, which commit it is, whether it is dirty."""

    path: pathlib.Path
    spec: str
    commit: str | None = None
    dirty: bool | None = None
    ref: str | None = None
    repo: pathlib.Path | None = None

    def provenance(self) -> dict[str, object]:
        out: dict[str, object] = {"tree": str(self.path), "commit": self.commit}
        out["dirty"] = self.dirty
        if self.ref is not None:
            out["ref"] = self.ref
            out["repository"] = str(self.repo)
        return out


def _git(repo: pathlib.Path, *args: str) -> str:
    """`git -C repo args...` stdout (stripped); HarnessInputError with git's first line."""
    try:
        proc = subprocess.run(
            ["git", "-C", str(repo), *args], capture_output=True, text=True, check=False
        )
    except OSError as e:
        raise HarnessInputError(f"cannot run git ({e}): needed for upstream@REF") from e
    if proc.returncode != 0:
        first = (proc.stderr.strip().splitlines() or ["(no message)"])[0]
        raise HarnessInputError(f"git -C {repo} {' '.join(args)}: {first}")
    return proc.stdout.strip()


def git_state(path: pathlib.Path) -> tuple[str | None, bool | None]:
    """(HEAD commit, dirty) of the git work tree holding `path`; (None, None) outside git.

    Dirty means tracked or untracked changes under `path` itself (not elsewhere in the repo).
    """
    try:
        top = subprocess.run(
            ["git", "-C", str(path), "rev-parse", "--show-toplevel"],
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError:
        return None, None
    if top.returncode != 0:
        return None, None
    commit = subprocess.run(
        ["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True, check=False
    )
    status = subprocess.run(
        ["git", "-C", str(path), "status", "--porcelain", "--", "."],
        capture_output=True,
        text=True,
        check=False,
    )
    head = commit.stdout.strip() if commit.returncode == 0 else None
    return head, bool(status.stdout.strip()) if status.returncode == 0 else None


def code_digest(path: pathlib.Path, packages: tuple[str, ...] = PACKAGES) -> str:
    """SHA-256 over the relative paths and bytes of every `.py` file of the tree's `packages`
    (a backend digests the packages it runs: `upstream` only `ptycho`)."""
    h = hashlib.sha256()
    for pkg in packages:
        root = path / pkg
        if not root.is_dir():
            continue
        for f in sorted(root.rglob("*.py")):
            if "__pycache__" in f.parts:
                continue
            h.update(str(f.relative_to(path)).encode() + b"\0")
            h.update(f.read_bytes() + b"\0")
    return h.hexdigest()


def check_tree(path: pathlib.Path, spec: str) -> None:
    """HarnessInputError unless `path` holds upstream's `ptycho/params.py`."""
    if not path.is_dir():
        raise HarnessInputError(f"backend {spec!r}: {path} is not a folder")
    if not (path / "ptycho" / "params.py").is_file():
        raise HarnessInputError(
            f"backend {spec!r}: {path} holds no upstream tree (expected ptycho/params.py in it)"
        )


def tree_at(path: str | os.PathLike, spec: str) -> UpstreamTree:
    """The tree at `path`, checked, with its git state."""
    p = pathlib.Path(path).expanduser().resolve()
    check_tree(p, spec)
    commit, dirty = git_state(p)
    return UpstreamTree(path=p, spec=spec, commit=commit, dirty=dirty)


def cache_root() -> pathlib.Path:
    """Where exported commits are kept (beside the console script's other caches)."""
    base = os.environ.get(ENV_CACHE)
    root = pathlib.Path(base) if base else pathlib.Path.home() / ".cache" / "ptycho-jax"
    return root / "upstream-trees"


def upstream_repo(repo: str | os.PathLike | None) -> pathlib.Path:
    """The git checkout `upstream@REF` reads: `repo`, else `PTYCHO_UPSTREAM_REPO`."""
    given = repo if repo is not None else os.environ.get(ENV_REPO)
    if not given:
        raise HarnessInputError(
            f"upstream@REF needs the upstream git checkout: pass --upstream-repo DIR or set "
            f"{ENV_REPO}"
        )
    p = pathlib.Path(given).expanduser().resolve()
    if not p.is_dir():
        raise HarnessInputError(f"--upstream-repo {given}: no such folder")
    return p


def resolve_commit(repo: pathlib.Path, ref: str) -> str:
    """The full commit hash `ref` names in `repo`."""
    return _git(repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")


def export_commit(
    repo: pathlib.Path, commit: str, root: pathlib.Path | None = None
) -> pathlib.Path:
    """The tree of `commit`, exported once into the cache (atomically: a folder appears whole)."""
    root = root or cache_root()
    dest = root / commit
    if (dest / ".complete").is_file():
        return dest
    root.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{commit[:12]}-", dir=root))
    try:
        archive = subprocess.run(
            ["git", "-C", str(repo), "archive", "--format=tar", commit],
            capture_output=True,
            check=False,
        )
        if archive.returncode != 0:
            first = (archive.stderr.decode(errors="replace").strip().splitlines() or ["?"])[0]
            raise HarnessInputError(f"git archive {commit} in {repo}: {first}")
        subprocess.run(["tar", "-x", "-C", str(tmp)], input=archive.stdout, check=True)
        (tmp / ".complete").write_text(commit + "\n")
        if dest.exists():  # a concurrent export won; keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.rename(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def tree_at_ref(ref: str, spec: str, repo: str | os.PathLike | None = None) -> UpstreamTree:
    """The tree of git `ref` in the upstream checkout, exported into the cache."""
    r = upstream_repo(repo)
    try:
        commit = resolve_commit(r, ref)
    except HarnessInputError as e:
        raise HarnessInputError(f"backend {spec!r}: {ref!r} is no commit in {r} ({e})") from e
    if not commit:
        raise HarnessInputError(f"backend {spec!r}: {ref!r} is no commit in {r}")
    path = export_commit(r, commit)
    check_tree(path, spec)
    return UpstreamTree(path=path, spec=spec, commit=commit, dirty=False, ref=ref, repo=r)


def parse_tree_spec(spec: str, *, repo: str | os.PathLike | None = None) -> UpstreamTree | None:
    """The tree a `NAME:PATH` / `NAME@REF` spec names (NAME `upstream` or `ptycho_torch`);
    None for the plain name (the default tree)."""
    for name in ("upstream", "ptycho_torch", "torch"):
        if spec == name:
            return None
        if spec.startswith(name + ":"):
            path = spec[len(name) + 1 :]
            if not path:
                raise HarnessInputError(f"backend {spec!r}: expected {name}:PATH, got no path")
            return tree_at(path, spec)
        if spec.startswith(name + "@"):
            ref = spec[len(name) + 1 :]
            if not ref:
                raise HarnessInputError(f"backend {spec!r}: expected {name}@REF, got no ref")
            return tree_at_ref(ref, spec, repo)
    raise HarnessInputError(f"backend {spec!r}: not an upstream tree spec")


def is_tree_spec(spec: str) -> bool:
    """Whether `spec` names an upstream tree (`upstream`, `upstream:PATH`, `upstream@REF`, and
    the same for `ptycho_torch`)."""
    return any(
        spec == n or spec.startswith(n + ":") or spec.startswith(n + "@")
        for n in ("upstream", "ptycho_torch", "torch")
    )
