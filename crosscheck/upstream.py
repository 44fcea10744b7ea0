"""The `upstream` backend: the real PtychoPINN `ptycho` package, run in its own environment.

specs/crosscheck.md §2.3. Upstream needs TensorFlow 2.18 with tf-keras and NumPy 2.0, which
cannot share a process with ours (JAX, TF 2.21); the backend therefore starts one worker process
(`crosscheck/_upstream_worker.py`) under the upstream environment's Python and exchanges NPZ
files with it. Located by:

* `PTYCHO_UPSTREAM_PYTHON`: the interpreter (default: `.venv-upstream/bin/python` in the
  repository root, when present);
* `PTYCHO_UPSTREAM_PATH`: the folder holding the `ptycho` package (default: `../shared/upstream`
  next to the repository root).

Everything upstream prints is captured and reported as notes of the stage that ran it
(`UpstreamOutput` warnings, which the harness records), never written to our stdout.
"""

import atexit
import contextlib
import json
import os
import pathlib
import shutil
import subprocess
import tempfile
import threading
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

from ptycho_jax import BackendUnavailableError, frames_as_given

from . import _upstream_worker as _w
from . import trees as _trees
from .backends import (
    CONTAINER_KEYS,
    GROUPED_KEYS,
    SCALE_KEYS,
    StageUnsupported,
    array_digest,
    params_key,
)
from .trees import UpstreamTree

upstream_cfg = _w.upstream_cfg
"""Set keys of upstream's `params.cfg` for a scope, restore them and the global RNG afterwards."""

REPO = pathlib.Path(__file__).resolve().parents[1]
WORKER = pathlib.Path(_w.__file__).resolve()
ENV_PYTHON = "PTYCHO_UPSTREAM_PYTHON"
ENV_PATH = "PTYCHO_UPSTREAM_PATH"
MAX_NOTE = 4000


class UpstreamOutput(UserWarning):
    """Text upstream printed while a stage ran (recorded by the harness as a stage note)."""


class StageNote(UpstreamOutput):
    """A one-line remark of the worker about how it answered a stage (e.g. a fallback used)."""


def upstream_python() -> pathlib.Path | None:
    """The interpreter of the upstream environment, or None when there is none."""
    env = os.environ.get(ENV_PYTHON)
    if env:
        return pathlib.Path(env)
    cand = REPO / ".venv-upstream" / "bin" / "python"
    return cand if cand.exists() else None


def upstream_path() -> pathlib.Path:
    """The folder that holds upstream's `ptycho` package."""
    env = os.environ.get(ENV_PATH)
    return pathlib.Path(env) if env else (REPO.parent / "shared" / "upstream")


def availability(
    *, python: pathlib.Path | None = None, path: pathlib.Path | None = None
) -> str | None:
    """None when the upstream environment and code are found, else why not (one line).

    `python` / `path` override the environment's defaults (each is checked, not the default)."""
    py = python if python is not None else upstream_python()
    if py is None:
        return (
            f"no upstream environment: set {ENV_PYTHON} to a Python with tensorflow-cpu==2.18.1 "
            f"tf-keras==2.18.0 tensorflow-probability==0.25.0 numpy==2.0.2 (see .ci/run), or "
            f"create {REPO / '.venv-upstream'}"
        )
    if not pathlib.Path(py).exists():
        return f"{ENV_PYTHON if python is None else 'python'}={py}: no such interpreter"
    path = path if path is not None else upstream_path()
    if not (pathlib.Path(path) / "ptycho" / "params.py").is_file():
        return (
            f"no upstream code: expected the PtychoPINN source folder (with ptycho/params.py) at "
            f"{path}; set {ENV_PATH}"
        )
    return None


class WorkerError(RuntimeError):
    """The worker reported an error for a request (its message, upstream's traceback in notes)."""

    def __init__(self, message: str, traceback: str | None = None):
        super().__init__(message)
        self.traceback = traceback


class TreeImportError(WorkerError):
    """The tree's `ptycho` package cannot be imported at all."""


class UpstreamWorker:
    """One worker process under the upstream environment; requests are serialised."""

    def __init__(
        self,
        *,
        python: pathlib.Path | None = None,
        path: pathlib.Path | None = None,
        label: str = "upstream",
    ):
        why = availability(
            python=None if python is None else pathlib.Path(python),
            path=None if path is None else pathlib.Path(path),
        )
        if why:
            raise BackendUnavailableError(f"backend {label!r}: {why}")
        self.label = label
        self.python = pathlib.Path(python or upstream_python())
        self.path = pathlib.Path(path or upstream_path()).resolve()
        self._probe: dict[str, Any] | None = None
        self.tmp = pathlib.Path(tempfile.mkdtemp(prefix="ptycho-upstream-"))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(self.path)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
        )
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
        env.setdefault("CUDA_VISIBLE_DEVICES", "")
        env["PYTHONUNBUFFERED"] = "1"
        # the worker redirects upstream's output itself; what reaches this file is the worker's
        # own crash (before its redirection is in place), quoted when it exits unexpectedly
        self._stderr_path = self.tmp / "worker-stderr.txt"
        self._stderr = open(self._stderr_path, "w")  # noqa: SIM115 - closed by close()
        try:
            self.proc = subprocess.Popen(
                [str(self.python), "-u", str(WORKER)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._stderr,
                env=env,
                cwd=str(self.tmp),
                text=True,
            )
        except OSError as e:
            self._stderr.close()
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise BackendUnavailableError(
                f"backend 'upstream': cannot start {self.python} ({e})"
            ) from e
        self._lock = threading.Lock()
        self._n = 0
        atexit.register(self.close)

    def _crash(self) -> str:
        """`: <last line the worker wrote to stderr>`, or '' when it wrote none."""
        try:
            lines = self._stderr_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return f": {lines[-1].strip()}" if lines else ""

    def file(self, stem: str) -> pathlib.Path:
        self._n += 1
        return self.tmp / f"{stem}-{self._n}.npz"

    def request(self, op: str, **fields: Any) -> dict[str, Any]:
        """Send one request, wait for its reply; upstream's output becomes an `UpstreamOutput`."""
        with self._lock:
            if self.proc.poll() is not None:
                raise WorkerError(
                    f"upstream worker exited (code {self.proc.returncode}){self._crash()}"
                )
            self.proc.stdin.write(json.dumps({"op": op, **fields}) + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        if not line:
            code = self.proc.wait()
            raise WorkerError(f"upstream worker exited (code {code}) during {op!r}{self._crash()}")
        reply = json.loads(line)
        text = (reply.get("output") or "").strip()
        if text:
            if len(text) > MAX_NOTE:
                text = text[: MAX_NOTE // 2] + "\n[...]\n" + text[-MAX_NOTE // 2 :]
            warnings.warn(UpstreamOutput(f"{op}: upstream printed:\n{text}"), stacklevel=2)
        if not reply.get("ok"):
            if reply.get("kind") == "unsupported":
                raise StageUnsupported(reply.get("error", op))
            cls = TreeImportError if reply.get("kind") == "import_error" else WorkerError
            raise cls(reply.get("error", f"{op} failed"), reply.get("traceback"))
        for note in reply.get("notes") or ():
            warnings.warn(StageNote(f"{self.label}: {note}"), stacklevel=2)
        return reply

    def probe(self, stages: tuple[str, ...] = (), params: Any = None) -> dict[str, Any]:
        """The worker's versions and, per stage, None or why the tree cannot answer it.

        Raises:
            BackendUnavailableError: the tree cannot be imported (`import ptycho.params` fails):
                names the tree and the first error line.
        """
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UpstreamOutput)
            try:
                return self.request("probe", stages=list(stages), params=params or {})
            except TreeImportError as e:
                raise BackendUnavailableError(
                    f"backend {self.label!r}: the tree at {self.path} cannot be imported: {e}"
                ) from e
            except WorkerError as e:
                raise BackendUnavailableError(
                    f"backend {self.label!r}: the worker under {self.python} failed: {e}"
                ) from e

    def close(self) -> None:
        proc = getattr(self, "proc", None)
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                proc.stdin.close()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc is not None and proc.stdout is not None:
            with contextlib.suppress(OSError, ValueError):
                proc.stdout.close()
        err = getattr(self, "_stderr", None)
        if err is not None:
            err.close()
        if getattr(self, "tmp", None) is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def __del__(self):
        with contextlib.suppress(Exception):
            self.close()


def params_json(params: Any, N: int) -> dict[str, Any]:
    """The chain parameters as the worker reads them."""
    return {
        "N": N,
        "gridsize": int(params.gridsize),
        "K": int(params.K),
        "n_groups": int(params.n_groups),
        "seed": None if params.seed is None else int(params.seed),
        "sequential": bool(params.sequential),
        "oversample": bool(params.oversample),
        "neighbor_pool_size": None
        if params.neighbor_pool_size is None
        else int(params.neighbor_pool_size),
        "nphotons": float(params.nphotons),
        "variant": str(params.variant),
        "patch_positions": str(params.patch_positions),
        "trainable": bool(params.trainable),
    }


def raw_arrays(raw: Any) -> dict[str, np.ndarray]:
    """The RawData fields upstream's `RawData` takes, as NumPy arrays."""
    out = {
        k: np.asarray(getattr(raw, k))
        for k in (
            "xcoords",
            "ycoords",
            "xcoords_start",
            "ycoords_start",
            "diff3d",
            "probeGuess",
            "scan_index",
        )
    }
    for k in ("objectGuess", "Y"):
        v = getattr(raw, k, None)
        if v is not None:
            out[k] = np.asarray(v)
    # frames go to upstream in the dtype they were given in (exact): a branch's uint16 / float64
    # handling is what it is asked to show
    out["diff3d"] = frames_as_given(raw)
    return out


class UpstreamTraceback(UpstreamOutput):
    """Upstream's traceback for a request that raised (recorded once in the run's notes)."""


class WorkerBackend:
    """Shared plumbing: the worker, raw-input files, a memo of stage runs, provenance."""

    name = "worker"
    kind = "worker"
    packages: tuple[str, ...] = _trees.PACKAGES  # the tree's packages this backend runs
    PACKAGE = "ptycho"

    def __init__(
        self,
        worker: UpstreamWorker | None = None,
        *,
        tree: UpstreamTree | None = None,
        python: pathlib.Path | None = None,
    ):
        if tree is not None:
            self.name = tree.spec
        self.tree = tree
        self.worker = worker or UpstreamWorker(
            python=python, path=None if tree is None else tree.path, label=self.name
        )
        self._raw_files: list[tuple[Any, pathlib.Path]] = []
        self._runs: dict[tuple, dict[str, np.ndarray]] = {}
        self.capabilities = self.worker.probe(self.PROBED, {}).get("stages", {})
        self._provenance: dict[str, Any] | None = None

    PROBED: tuple[str, ...] = ()

    def _raw_file(self, raw: Any) -> pathlib.Path:
        for r, path in self._raw_files:
            if r is raw:
                return path
        path = self.worker.file("raw")
        np.savez(path, **raw_arrays(raw))
        self._raw_files.append((raw, path))
        return path

    @staticmethod
    def _N(raw: Any, params: Any) -> int:
        if getattr(params, "N", None) is not None:
            return int(params.N)
        return int(np.shape(raw.diff3d)[-1])

    def _load(self, path: pathlib.Path) -> dict[str, np.ndarray]:
        with np.load(path, allow_pickle=False) as z:
            out = {k: z[k] for k in z.files}
        path.unlink(missing_ok=True)
        return out

    def _request(self, op: str, **fields: Any) -> dict[str, Any]:
        """A worker request; upstream's traceback of a failure becomes one note, the error one line."""
        try:
            return self.worker.request(op, **fields)
        except WorkerError as e:
            if e.traceback:
                warnings.warn(
                    UpstreamTraceback(
                        f"{self.name}: {op} raised; upstream's traceback:\n{e.traceback}"
                    ),
                    stacklevel=2,
                )
            raise WorkerError(f"{self.name}: {e}") from None

    def _run(
        self, op: str, raw: Any, params: Any, nn_indices: Any, **extra: Any
    ) -> dict[str, np.ndarray]:
        nn = None if nn_indices is None else np.asarray(nn_indices)
        key = (op, tuple(sorted(extra.items())), id(raw), params_key(params))
        key += (None if nn is None else array_digest(nn),)
        if key in self._runs:
            return self._runs[key]
        nn_path = None
        if nn is not None:
            nn_path = self.worker.file("nn")
            np.savez(nn_path, nn_indices=nn)
        out_path = self.worker.file("out")
        try:
            self._request(
                op,
                raw=str(self._raw_file(raw)),
                params=params_json(params, self._N(raw, params)),
                nn=None if nn_path is None else str(nn_path),
                out=str(out_path),
                **extra,
            )
        finally:
            if nn_path is not None:
                nn_path.unlink(missing_ok=True)
        res = self._load(out_path)
        self._runs[key] = res
        return res

    @staticmethod
    def _stage(res: Mapping[str, np.ndarray], stage: str, keys=None) -> dict[str, Any]:
        pre = stage + "."
        out = {k[len(pre) :]: v for k, v in res.items() if k.startswith(pre)}
        if keys is not None:
            out = {k: out[k] for k in keys if k in out} | {
                k: v for k, v in out.items() if k not in keys
            }
        return out

    def _scaler(self, op: str, x, scale, trainable) -> dict[str, Any]:
        x_path, out_path = self.worker.file("x"), self.worker.file("scaler")
        np.savez(x_path, x=np.asarray(x, np.float32))
        try:
            self._request(
                op, x=str(x_path), scale=float(scale), trainable=bool(trainable), out=str(out_path)
            )
        finally:
            x_path.unlink(missing_ok=True)
        return self._load(out_path)

    # -- provenance and identity (specs/crosscheck.md §2.3.3)
    def code_identity(self) -> tuple[str, str, str]:
        """(kind, digest of the tree's source, interpreter): equal for the same code."""
        return (
            self.kind,
            _trees.code_digest(self.worker.path, self.packages),
            str(self.worker.python),
        )

    def provenance(self) -> dict[str, Any]:
        """Backend, tree path, commit and dirtiness, interpreter and the worker's library versions."""
        if self._provenance is None:
            tree = self.tree or _trees.tree_at(self.worker.path, self.name)
            versions = dict(self.worker.probe((), {}).get("versions") or {})
            self._provenance = {
                "backend": self.kind,
                "spec": self.name,
                **tree.provenance(),
                "code_sha256": self.code_identity()[1],
                "interpreter": str(self.worker.python),
                "versions": versions,
                "unsupported_stages": {k: v for k, v in self.capabilities.items() if v},
            }
        return self._provenance

    def close(self) -> None:
        self.worker.close()


class UpstreamBackend(WorkerBackend):
    """Drives a real upstream PtychoPINN `ptycho` tree (pipeline.md §1–§9), one stage at a time.

    Each stage is one worker request, checked first against what the tree has (methods,
    signatures, log-scale layout; `_upstream_worker._check_stage`): a stage the tree cannot
    answer raises `StageUnsupported` with one line saying what is missing, and costs only that
    stage. Upstream's own code runs every stage: `RawData.generate_grouped_data` (own groups) or
    `RawData._generate_dataset_from_groups` (injected `nn_indices`), `raw_data.normalize_data` /
    `loader.normalize_data` (variant `seed`), `get_image_patches`, `loader.load`,
    `train_pinn.calculate_intensity_scale`; the scaler stage drives `ptycho.model.IntensityScaler`
    / `IntensityScaler_inv` on the tree's shared `log_scale` variable. `params.cfg`, the global
    NumPy RNG and the variable are restored after each request.

    Args:
        worker: an existing worker (tests); else one is started for `tree` under `python`.
        tree: the tree (`ptycho_jax.crosscheck.trees`); None for the default (`PTYCHO_UPSTREAM_PATH`).
        python: the interpreter of the tree's environment (default `PTYCHO_UPSTREAM_PYTHON`).

    Raises:
        BackendUnavailableError: no environment, or the tree cannot be imported.
    """

    name = "upstream"
    kind = "upstream"
    packages = ("ptycho",)
    not_computed: frozenset[str] = frozenset()
    PROBED = ("grouping", "grouped", "normalize", "patches", "container", "scaler")

    def _one(self, stage: str, raw, params, nn_indices) -> dict[str, Any]:
        res = self._run("stage", raw, params, nn_indices, stage=stage)
        return self._stage(res, stage)

    def grouping(self, raw, params):
        return {"nn_indices": self._one("grouping", raw, params, None)["nn_indices"]}

    def grouped(self, raw, params, *, nn_indices=None):
        return {
            k: v
            for k, v in sorted(
                self._one("grouped", raw, params, nn_indices).items(),
                key=lambda kv: GROUPED_KEYS.index(kv[0]) if kv[0] in GROUPED_KEYS else 99,
            )
        }

    def normalize(self, raw, params, *, nn_indices=None):
        return self._one("normalize", raw, params, nn_indices)

    def patches(self, raw, params, *, nn_indices=None):
        out = self._one("patches", raw, params, nn_indices)
        if not out:
            raise StageUnsupported("upstream: no patches (the input has neither Y nor objectGuess)")
        return out

    def intensity_scales(self, raw, params, *, nn_indices=None):
        res = self._one("intensity_scales", raw, params, nn_indices)
        return {k: float(res[k]) for k in SCALE_KEYS if k in res}

    def scaler(self, x, *, scale, trainable=True):
        return self._scaler("scaler", x, scale, trainable)

    def container(self, raw, params, *, nn_indices=None):
        out = self._one("container", raw, params, nn_indices)
        return {k: out[k] for k in CONTAINER_KEYS if k in out} | {
            k: v for k, v in out.items() if k not in CONTAINER_KEYS
        }

    def state(self) -> dict[str, Any]:
        """Upstream's global state in the worker (`params.cfg`, RNG digest, `log_scale`)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UpstreamOutput)
            reply = self.worker.request("state")
        return {k: reply[k] for k in ("cfg", "cfg_id", "rng", "log_scale")}


def is_available() -> bool:
    """Whether the upstream environment and code are found (tests skip or fail on this)."""
    return availability() is None


__all__ = [
    "StageNote",
    "UpstreamBackend",
    "UpstreamOutput",
    "UpstreamTraceback",
    "UpstreamWorker",
    "availability",
    "is_available",
    "upstream_cfg",
    "upstream_path",
    "upstream_python",
]
