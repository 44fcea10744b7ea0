"""How the console script meets bad input: one-line errors and warnings on stderr, exit codes, output pre-flight.

Every error a user can cause ends as one line `ptycho-jax: error: ...` on stderr and exit code 2,
before anything is written where possible; every warning as one line `ptycho-jax: warning: ...`
(no source line). `-q` silences progress lines only. specs/bad-input.md lists every check.
"""

import contextlib
import errno
import logging
import os
import pathlib
import sys
import warnings
from collections.abc import Callable, Iterator
from typing import TypeVar

from .._errors import BackendUnavailableError, ExitCode, OutputPathError, PtychoInputError

PROG = "ptycho-jax"
T = TypeVar("T")
LOGGERS = ("ptycho_jax", "crosscheck")


def one_line(text: object) -> str:
    """`text` on one line: line breaks and runs of blanks become single spaces."""
    return " ".join(str(text).split())


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(
        f"{PROG}: warning: {one_line(message)} [{category.__name__}]", file=sys.stderr, flush=True
    )


class _OneLineFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        level = "warning" if record.levelno == logging.WARNING else record.levelname.lower()
        name = "" if record.levelno >= logging.WARNING else f" {record.name}"
        return f"{PROG}: {level}{name}: {one_line(record.getMessage())}"


def one_line_formatter() -> logging.Formatter:
    """`ptycho-jax: info NAME: message` (lower-case level words, one line)."""
    return _OneLineFormatter()


class _StderrHandler(logging.Handler):
    """Writes to the `sys.stderr` of the moment (so a test's capture, or a redirected stream, sees it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            print(self.format(record), file=sys.stderr, flush=True)
        except Exception:  # pragma: no cover - logging must never raise
            self.handleError(record)


@contextlib.contextmanager
def cli_messages(verbose: int) -> Iterator[None]:
    """Python warnings and log records of our loggers as one line each on stderr, for one command.

    Warnings print once per distinct message; log records at WARNING and above always, INFO with
    `-v`, DEBUG with `-vv` (`-q` does not change this: it only silences progress lines).
    """
    level = logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING
    handler = _StderrHandler(level)
    handler.setFormatter(_OneLineFormatter())
    saved = []
    for name in LOGGERS:
        lg = logging.getLogger(name)
        saved.append((lg, lg.level, lg.propagate))
        lg.addHandler(handler)
        lg.setLevel(level)
        lg.propagate = False
    with warnings.catch_warnings():
        if not sys.warnoptions:  # the CLI decides (the user's -W / PYTHONWARNINGS win): Python's defaults, once per message
            warnings.resetwarnings()
            warnings.simplefilter("default")
            for quiet in (
                DeprecationWarning,
                PendingDeprecationWarning,
                ImportWarning,
                ResourceWarning,
            ):
                warnings.simplefilter("ignore", quiet)
        warnings.showwarning = _show_warning
        try:
            yield
        finally:
            for lg, lvl, prop in saved:
                lg.removeHandler(handler)
                lg.setLevel(lvl)
                lg.propagate = prop


def with_mirrored_notes(command: Callable[[], T]) -> tuple[T, list[str]]:
    """`(command(), notes)`: upstream's mirrored patch positions (the default for gridsize > 1,
    `MirroredPatchWarning`) are the documented convention, not a fault, so a command records them
    as provenance notes (`"MirroredPatchWarning: …"`, each once) instead of printing a warning;
    every other warning goes out as usual."""
    from .._grouping import MirroredPatchWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", MirroredPatchWarning)
        value = command()
    notes = []
    for w in caught:
        if issubclass(w.category, MirroredPatchWarning):
            notes.append(f"{w.category.__name__}: {w.message}")
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return value, sorted(set(notes))


def _nearest_existing(path: pathlib.Path) -> pathlib.Path:
    p = path
    while not p.exists() and not p.is_symlink():
        if p.parent == p:
            break
        p = p.parent
    return p


def _check_creatable(path: pathlib.Path, what: str) -> None:
    """`path` (absent) can be created: its nearest existing ancestor is a writable folder."""
    anc = _nearest_existing(path)
    if not anc.is_dir():
        raise OutputPathError(
            f"--out {str(path)!r}: cannot create the {what}: {str(anc)!r} is a file, not a folder"
        )
    if not os.access(anc, os.W_OK | os.X_OK):
        raise OutputPathError(
            f"--out {str(path)!r}: cannot create the {what}: folder {str(anc)!r} is not writable"
        )


def check_output_dir(path: str | os.PathLike) -> None:
    """Pre-flight of an output folder: a folder (or absent and creatable), writable.

    Raises:
        OutputPathError: `path` is an existing file, or cannot be created or written.
    """
    path = pathlib.Path(path)
    if path.exists() or path.is_symlink():
        if not path.is_dir():
            raise OutputPathError(
                f"--out {str(path)!r}: expected a folder for the output files, got an existing file; "
                "name a folder (it is created if absent)"
            )
        if not os.access(path, os.W_OK | os.X_OK):
            raise OutputPathError(f"--out {str(path)!r}: folder is not writable")
        return
    _check_creatable(path, "folder")


def check_output_file(path: str | os.PathLike) -> None:
    """Pre-flight of an output file: not a folder, in a folder that exists or can be created, writable.

    Raises:
        OutputPathError: `path` is a folder, or its folder cannot be created or written.
    """
    text = os.fspath(path)
    path = pathlib.Path(path)
    if path.is_dir():
        raise OutputPathError(f"--out {str(path)!r}: expected a file name, got an existing folder")
    if text.endswith(("/", os.sep)) or path.suffix.lower() != ".npz":
        raise OutputPathError(
            f"--out {text!r}: expected a .npz file name (simulate writes one RawData NPZ), got "
            + ("a folder path" if text.endswith(("/", os.sep)) else f"suffix {path.suffix!r}")
            + f"; e.g. --out {str(path.with_suffix('.npz')) if path.name else 'scan.npz'!r}"
        )
    parent = path.parent
    if parent.exists():
        if not parent.is_dir():
            raise OutputPathError(
                f"--out {str(path)!r}: cannot create the file: {str(parent)!r} is a file, not a folder"
            )
        if not os.access(parent, os.W_OK | os.X_OK):
            raise OutputPathError(f"--out {str(path)!r}: folder {str(parent)!r} is not writable")
        return
    _check_creatable(path, "file")


def preflight(args) -> None:
    """Check `--out` before any work: a folder for `report`/`crosscheck`, a file for `simulate`."""
    out = getattr(args, "out", None)
    if out is None or args.command not in ("simulate", "report", "crosscheck"):
        return
    (check_output_file if args.command == "simulate" else check_output_dir)(out)


def os_error_message(e: OSError) -> str:
    """One line for an OS error: what failed, on which path, and why."""
    reason = e.strerror or errno.errorcode.get(e.errno or 0, "") or str(e)
    where = f" {str(e.filename)!r}" if e.filename is not None else ""
    if e.errno == errno.ENOSPC:
        reason += " (no file was left half-written; earlier files at that path are unchanged)"
    return f"cannot access{where}: {reason}"


def error_line(e: BaseException) -> str:
    """The one line a user error prints: `ptycho-jax: error: …`, API names in flag terms."""
    from .chain_flags import in_flag_terms

    return f"{PROG}: error: {one_line(in_flag_terms(str(e)))}"


def run_guarded(command: Callable[[], int], *, verbose: int = 0) -> int:
    """Run one command: messages on one line each; bad input (ours, or the OS's) exits 2 with one line.

    Errors that are not caused by input (bugs) keep their traceback.
    """
    with cli_messages(verbose):
        try:
            return int(command())
        except (PtychoInputError, BackendUnavailableError) as e:
            print(error_line(e), file=sys.stderr, flush=True)
        except OSError as e:  # unreadable input, unwritable output, a full disk
            print(f"{PROG}: error: {one_line(os_error_message(e))}", file=sys.stderr, flush=True)
    return ExitCode.USAGE
