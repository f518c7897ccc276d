"""One bound on the log page entries stafd caches across all its discovery controllers.

Each DC's page is already capped by ``Limits`` (8,192 records), and the finder caps how many
DCs referrals can add; but 256 referred DCs x 8,192 entries is still two million entries
(about 1 GB). The DC actors of one stafd share an ``EntryBudget``: an actor keeps only the
entries the budget grants it, so what peers send cannot grow the cache (nor the state file
and the D-Bus replies built from it) past ``limit`` entries, whatever the fan-out.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable

log = logging.getLogger("stas.actors.dc")

# About 500-800 bytes per cached entry: 20,000 entries stay near 15 MB however long the NQNs.
MAX_CACHED_ENTRIES = 20_000
MAX_LOGGED = 1024  # owners remembered for "logged once"; forgotten wholesale past this


class EntryBudget:
    """Entries held per owner (a DC), never more than ``limit`` in total."""

    def __init__(self, limit: int = MAX_CACHED_ENTRIES) -> None:
        if limit < 0:
            raise ValueError(f"entry budget {limit} must be >= 0")
        self.limit = limit
        self.total = 0
        self._held: dict[Hashable, int] = {}
        self._logged: set[Hashable] = set()

    def held(self, owner: Hashable) -> int:
        return self._held.get(owner, 0)

    def grant(self, owner: Hashable, wanted: int, *, name: str = "") -> int:
        """How many of ``wanted`` entries ``owner`` may keep; replaces what it held before.

        The first time an owner is cut short, one WARNING names it (``name``) and the cap.
        """
        previous = self._held.get(owner, 0)
        free = self.limit - (self.total - previous)
        granted = max(0, min(wanted, free))
        self.total += granted - previous
        self._held[owner] = granted
        if granted < wanted and owner not in self._logged:
            if len(self._logged) >= MAX_LOGGED:
                self._logged.clear()
            self._logged.add(owner)
            log.warning(
                "%s: the cache of discovery log page entries is full (%d entries across all "
                "discovery controllers); keeping %d of its %d entries",
                name or owner,
                self.limit,
                granted,
                wanted,
            )
        return granted

    def release(self, owner: Hashable) -> None:
        """The owner is gone: what it held is free again."""
        self.total -= self._held.pop(owner, 0)
