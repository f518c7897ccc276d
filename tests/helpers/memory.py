"""What code keeps in memory, by tracemalloc: the memory tests' bounds (issue 12 bench 4's
10,000 controllers) are per-object byte counts, measured the same way everywhere."""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")


class Traced:
    """Bytes allocated since the start (or the last ``mark``) and still held, while traced."""

    def __init__(self) -> None:
        self.base = 0

    def now(self, *, collect: bool = False) -> int:
        """Bytes traced now; ``collect``: after a full collection, so garbage is not counted."""
        if collect:
            gc.collect()
        return tracemalloc.get_traced_memory()[0]

    def mark(self, *, collect: bool = False) -> None:
        """Count from here on."""
        self.base = self.now(collect=collect)

    def held(self, *, collect: bool = False) -> int:
        return self.now(collect=collect) - self.base

    def peak(self) -> int:
        """The most held at once since tracing started, less the mark."""
        return tracemalloc.get_traced_memory()[1] - self.base


@contextmanager
def traced() -> Iterator[Traced]:
    """Trace allocations for the block (garbage collected first, so none is freed inside)."""
    meter = Traced()
    gc.collect()
    tracemalloc.start()
    try:
        meter.mark()
        yield meter
    finally:
        tracemalloc.stop()


def held_after(fn: Callable[[], T]) -> tuple[T, int]:
    """``fn()``'s result and the bytes it allocated that are still held (the result's)."""
    with traced() as meter:
        result = fn()
        return result, meter.held()


def peak_during(fn: Callable[[], T]) -> tuple[T, int]:
    """``fn()``'s result and the most bytes it held at once while it ran."""
    with traced() as meter:
        result = fn()
        return result, meter.peak()
