"""What a Trio memory channel holds right now: tests look at what an actor sent once every
task is blocked, without waiting for more."""

from __future__ import annotations

from typing import TypeVar

import trio

T = TypeVar("T")


def pending(receive: trio.MemoryReceiveChannel[T]) -> list[T]:
    """Every message queued on ``receive``, taken off it, oldest first; never waits."""
    out: list[T] = []
    while True:
        try:
            out.append(receive.receive_nowait())
        except trio.WouldBlock:
            return out
