"""What a backend declares about itself, and the conversions the harness makes from it.

specs/crosscheck.md §2.5. A backend (any object with stage methods) may declare:

* `array_names`: `{stage: {their_name: our_name}}` (stage `"*"` applies to every stage) — its
  arrays are renamed to ours before comparing.
* `layouts`: `{our_name | "stage.our_name" | "images": "B C H W"}` — the axis layout of its
  arrays, in the tokens of `OUR_LAYOUTS`; the harness transposes (and squeezes/inserts the `1`
  axes) into ours before comparing, and converts the scaler's input `x` into its layout.
* `not_computed`: a collection of `"stage"` or `"stage.array"` names (or a callable
  `not_computed(params)` returning one) — documented absences, reported and counted, never a
  failure and never blocking PASS.

Everything here is host NumPy and raises `HarnessInputError` (a bad declaration: exit 2) or
`OutputError` (a stage returned something unusable: that stage fails).
"""

import difflib
from collections.abc import Collection, Iterable, Mapping
from typing import Any

import numpy as np

from .backends import REQUIRED, STAGES
from .errors import HarnessInputError, OutputError

IMAGE = "B H W C"
COORD = "B 1 xy C"
OFFSET = "B 1 xy 1"

OUR_LAYOUTS: Mapping[str, str] = {
    **{
        k: IMAGE
        for k in ("diffraction", "X_full", "Y", "Y_member", "X", "Y_I", "Y_phi", "Y_complex")
    },
    **{k: IMAGE for k in ("scaler_out", "scaler_inv_out")},
    **{
        k: COORD
        for k in (
            "coords_nn",
            "coords_relative",
            "coords_start_nn",
            "coords_start_relative",
            "coords_nominal",
            "coords_true",
            "local_offsets",
        )
    },
    **{k: OFFSET for k in ("coords_offsets", "coords_start_offsets", "global_offsets")},
    "nn_indices": "B C",
    "probe": "H W",
}
"""Our axis layout of every array that has axes (`1` marks an axis of size 1)."""

SCALER_LABELS = ("seed_era", "main_head")

__all__ = ["Declarations", "HarnessInputError", "OutputError", "OUR_LAYOUTS", "to_ours"]


# ---------------------------------------------------------------------------------------------
# names


def check_names(names: Iterable[str], *, what: str) -> frozenset[str]:
    """`names` as a frozenset, or `HarnessInputError` naming the bad one and the valid ones."""
    if isinstance(names, str):
        names = [names]
    out = set()
    for n in names:
        if not isinstance(n, str):
            raise HarnessInputError(f"{what}: expected stage or stage.array names, got {n!r}")
        stage, _, array = n.partition(".")
        if stage not in STAGES:
            raise HarnessInputError(
                f"{what}: unknown stage {stage!r} in {n!r}; stages: {', '.join(STAGES)}"
            )
        if array:
            base = array
            if stage == "scaler":
                label, _, rest = array.partition(".")
                if label in SCALER_LABELS and rest:
                    base = rest
            if base not in REQUIRED[stage]:
                raise HarnessInputError(
                    f"{what}: stage {stage!r} has no array {array!r} in {n!r}; its arrays: "
                    f"{', '.join(REQUIRED[stage])}"
                )
        out.add(n)
    return frozenset(out)


def parse_stages(spec: "str | Iterable[str] | None") -> tuple[str, ...]:
    """`--stages a,b` as a tuple in run order; None means every stage."""
    if spec is None:
        return STAGES
    items = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else list(spec)
    items = [s for s in items if s]
    if not items:
        raise HarnessInputError(f"--stages: expected at least one of {', '.join(STAGES)}, got none")
    bad = [s for s in items if s not in STAGES]
    if bad:
        raise HarnessInputError(
            f"--stages: unknown stage {bad[0]!r}; valid stages: {', '.join(STAGES)}"
        )
    return tuple(s for s in STAGES if s in items)


def excepted_by(
    stage: str, array: str | None, declared: Mapping[str, Collection[str]]
) -> str | None:
    """Who declared `stage` (or `stage.array`) a documented absence, else None.

    `declared` maps a description ("declared not computed by port 'x'", "--allow-missing") to
    its names; scaler arrays match with or without their `seed_era.` / `main_head.` prefix.
    """
    keys = {stage}
    if array is not None:
        keys.add(f"{stage}.{array}")
        if stage == "scaler":
            label, _, rest = array.partition(".")
            if label in SCALER_LABELS and rest:
                keys.add(f"{stage}.{rest}")
    for who, names in declared.items():
        if keys & set(names):
            return who
    return None


# ---------------------------------------------------------------------------------------------
# declarations


class Declarations:
    """A backend's `array_names`, `layouts` and `not_computed`, checked once per run."""

    def __init__(self, backend: Any, params: Any, *, side: str):
        self.side = side
        self.label = f"{side} {getattr(backend, 'name', type(backend).__name__)!r}"
        names = getattr(backend, "array_names", None) or {}
        if not isinstance(names, Mapping) or not all(
            isinstance(v, Mapping) for v in names.values()
        ):
            raise HarnessInputError(
                f"{self.label}: array_names must map a stage (or '*') to {{their_name: our_name}}, "
                f"got {names!r}"
            )
        for st, m in names.items():
            if st != "*" and st not in STAGES:
                raise HarnessInputError(
                    f"{self.label}: array_names has unknown stage {st!r}; stages: {', '.join(STAGES)}"
                )
            ours = list(m.values())
            if len(set(ours)) != len(ours):
                raise HarnessInputError(
                    f"{self.label}: array_names[{st!r}] maps two names onto one: {dict(m)}"
                )
        self.array_names: Mapping[str, Mapping[str, str]] = names

        layouts = getattr(backend, "layouts", None) or {}
        if not isinstance(layouts, Mapping):
            raise HarnessInputError(
                f"{self.label}: layouts must map an array name to a layout string, got {layouts!r}"
            )
        for key, spec in layouts.items():
            arr = key.partition(".")[2] if "." in key else key
            ours = IMAGE if arr == "images" else OUR_LAYOUTS.get(arr)
            if ours is None:
                raise HarnessInputError(
                    f"{self.label}: layouts has {key!r}, which has no axes to reorder; arrays with "
                    f"axes: images, {', '.join(OUR_LAYOUTS)}"
                )
            _check_layout_pair(spec, ours, what=f"{self.label} layouts[{key!r}]")
        self.layouts: Mapping[str, str] = layouts

        nc = getattr(backend, "not_computed", None) or ()
        if callable(nc):
            nc = nc(params) or ()
        self.not_computed = check_names(nc, what=f"{self.label} not_computed")

    def layout(self, stage: str, array: str) -> str | None:
        """Their layout of our `array` of `stage`, or None when it is ours."""
        for key in (f"{stage}.{array}", array):
            if key in self.layouts:
                return self.layouts[key]
        if OUR_LAYOUTS.get(array) == IMAGE and "images" in self.layouts:
            return self.layouts["images"]
        return None

    def scaler_input_layout(self) -> str | None:
        for key in ("scaler.scaler_out", "scaler_out", "images"):
            if key in self.layouts:
                return self.layouts[key]
        return None

    def adapt(self, stage: str, value: Any) -> tuple[dict[str, Any], list[str]]:
        """Their stage output → ours: a dict of NumPy arrays / scalars under our names, plus notes."""
        if not isinstance(value, Mapping):
            raise OutputError(
                f"{self.label} {stage}() returned {type(value).__name__}, expected a mapping of "
                f"array name → array (e.g. {{{', '.join(repr(k) for k in REQUIRED[stage][:2])}: ...}})"
            )
        rename = {**self.array_names.get("*", {}), **self.array_names.get(stage, {})}
        out: dict[str, Any] = {}
        notes = []
        for k, v in value.items():
            if not isinstance(k, str):
                raise OutputError(f"{self.label} {stage}() returned a non-string key {k!r}")
            ours = rename.get(k, k)
            if ours in out:
                raise OutputError(
                    f"{self.label} {stage}() returned {ours!r} twice (directly and via array_names)"
                )
            if v is None:
                continue
            a = v if isinstance(v, (float, int, complex)) and not isinstance(v, bool) else _host(v)
            if isinstance(a, np.ndarray):
                if a.dtype == object or not (
                    np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_
                ):
                    raise OutputError(
                        f"{self.label} {stage}()[{k!r}]: expected a numeric array, got dtype {a.dtype}"
                    )
                spec = self.layout(stage, ours)
                if spec is not None:
                    a = to_ours(
                        a, spec, OUR_LAYOUTS.get(ours, IMAGE), what=f"{self.label} {stage}.{k}"
                    )
            out[ours] = a
        expected = REQUIRED.get(stage, ())
        for k in sorted(set(out) - set(expected)):
            close = difflib.get_close_matches(k, expected, n=1)
            if close and close[0] not in out:
                notes.append(
                    f"{self.label} {stage}() returned {k!r}, which is not one of our names; "
                    f"did you mean {close[0]!r}? (declare array_names = "
                    f"{{{stage!r}: {{{k!r}: {close[0]!r}}}}})"
                )
        return out, notes


def _host(v: Any) -> Any:
    try:
        a = np.asarray(v)
    except Exception as e:  # noqa: BLE001 - any conversion failure is the port's output error
        raise OutputError(f"cannot convert {type(v).__name__} to a NumPy array ({e})") from e
    return a


# ---------------------------------------------------------------------------------------------
# layouts


def _tokens(spec: Any, *, what: str) -> list[str]:
    if not isinstance(spec, str) or not spec.split():
        raise HarnessInputError(f"{what}: expected a layout string like 'B C H W', got {spec!r}")
    return spec.split()


def _check_layout_pair(theirs: str, ours: str, *, what: str) -> None:
    t, o = _tokens(theirs, what=what), _tokens(ours, what=what)
    tn, on = [x for x in t if x != "1"], [x for x in o if x != "1"]
    if sorted(tn) != sorted(on) or len(set(tn)) != len(tn):
        raise HarnessInputError(
            f"{what}: layout {theirs!r} must name the axes of ours, {ours!r}, each once "
            f"(in any order; '1' marks a size-1 axis)"
        )


def to_ours(a: np.ndarray, theirs: str, ours: str, *, what: str = "array") -> np.ndarray:
    """Reorder `a` from layout `theirs` to `ours` (tokens; `1` = an axis of size 1)."""
    t, o = theirs.split(), ours.split()
    if a.ndim != len(t):
        raise OutputError(
            f"{what}: declared layout {theirs!r} has {len(t)} axes, got an array of shape {a.shape}"
        )
    ones = [i for i, x in enumerate(t) if x == "1"]
    if any(a.shape[i] != 1 for i in ones):
        raise OutputError(
            f"{what}: declared layout {theirs!r} has size-1 axes, got shape {a.shape}"
        )
    a = np.squeeze(a, axis=tuple(ones)) if ones else a
    named = [x for x in t if x != "1"]
    order = [named.index(x) for x in o if x != "1"]
    a = np.transpose(a, order)
    for i, x in enumerate(o):
        if x == "1":
            a = np.expand_dims(a, i)
    return a


def from_ours(a: np.ndarray, ours: str, theirs: str) -> np.ndarray:
    """The inverse of `to_ours`."""
    return to_ours(a, ours, theirs, what="scaler input")
