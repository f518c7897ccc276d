"""The sans-IO cores (finder, connector) answer a message with a list of effects; their tests
pick out the effects of one kind."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

E = TypeVar("E")


def of(kind: type[E], effects: Iterable[object]) -> list[E]:
    """The effects that are ``kind``, in order."""
    return [e for e in effects if isinstance(e, kind)]
