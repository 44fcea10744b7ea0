"""Counting XLA compilations through JAX's public monitoring API (no private jit caches).

`jax.monitoring` reports one `/jax/core/compile/backend_compile_duration` event per backend compile;
the listener is registered once, when this module is first imported, and counts for the process.
"""

import contextlib
from collections.abc import Callable, Iterator

import jax.monitoring

BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
_count = [0]


def _on_event(event: str, duration_secs: float, **kwargs) -> None:
    if event == BACKEND_COMPILE_EVENT:
        _count[0] += 1


jax.monitoring.register_event_duration_secs_listener(_on_event)


@contextlib.contextmanager
def count_compiles() -> Iterator[Callable[[], int]]:
    """`with count_compiles() as compiles: ...; compiles()` is the number of XLA compilations inside the block."""
    start = _count[0]
    yield lambda: _count[0] - start
