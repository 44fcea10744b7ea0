"""Counting XLA compilations through JAX's public monitoring API (no private jit caches).

`jax.monitoring` reports one `/jax/core/compile/backend_compile_duration` event per backend
compile, with the compiled function's name (`fun_name`); the listener is registered once, when
this module is first imported, and records for the process.
"""

import contextlib
from collections.abc import Callable, Iterator

import jax.monitoring

BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
_compiled: list[str] = []


def _on_event(event: str, duration_secs: float, **kwargs: object) -> None:
    if event == BACKEND_COMPILE_EVENT:
        _compiled.append(str(kwargs.get("fun_name", "")))


jax.monitoring.register_event_duration_secs_listener(_on_event)


@contextlib.contextmanager
def count_compiles() -> Iterator[Callable[..., int]]:
    """`with count_compiles() as compiles: ...`; then `compiles()` is the number of XLA compilations
    inside the block and `compiles("name")` the number of those of the jitted function `name`."""
    start = len(_compiled)

    def compiles(name: str | None = None) -> int:
        return sum(1 for n in _compiled[start:] if name is None or n in (name, f"jit({name})"))

    yield compiles
