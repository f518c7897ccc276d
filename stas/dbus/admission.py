"""Per-caller shares of the object server's concurrent calls.

One shared limit let any local user starve root (issue 13 item 6): a flood of slow calls from
one uid filled every slot and root's stafctl got "server busy". Each caller key (a uid, or a
connection whose uid is unknown) now has its own share, so a flood only busies the flooder.
Pure bookkeeping, no I/O: the server decides what a key is.
"""

from __future__ import annotations

from collections.abc import Hashable


class CallShares:
    """In-flight call counts per caller key, each capped at ``per_caller``."""

    def __init__(self, per_caller: int) -> None:
        if per_caller < 1:
            raise ValueError(f"per_caller must be at least 1, not {per_caller}")
        self.per_caller = per_caller
        self._in_flight: dict[Hashable, int] = {}

    def try_enter(self, key: Hashable) -> bool:
        """Take one of ``key``'s slots; False (nothing taken) when its share is used up."""
        used = self._in_flight.get(key, 0)
        if used >= self.per_caller:
            return False
        self._in_flight[key] = used + 1
        return True

    def leave(self, key: Hashable) -> None:
        """Give back a slot taken by ``try_enter``; keys with no calls left are forgotten."""
        used = self._in_flight.get(key, 0)
        if used <= 1:
            self._in_flight.pop(key, None)
        else:
            self._in_flight[key] = used - 1

    def in_flight(self, key: Hashable) -> int:
        return self._in_flight.get(key, 0)

    def __len__(self) -> int:
        """How many keys have calls in flight (bounded memory: idle keys are dropped)."""
        return len(self._in_flight)
