"""Retry delays, written once: a doubling sequence and the retry ladder of the actors.

Every reconnect and retry loop in the daemons waits by one of these two rules, so a change to
the policy (a cap, jitter) is made in one place and every loop gets it.
"""

from __future__ import annotations

import random
from collections.abc import Iterator


def doubling(initial: float, maximum: float) -> Iterator[float]:
    """``initial``, twice that, ... up to ``maximum``, then ``maximum`` for ever."""
    delay = initial
    while True:
        yield delay
        delay = min(delay * 2, maximum)


def ladder_delay(
    failures: int,
    *,
    fast: float,
    initial: float,
    maximum: float,
    jitter: float,
    rng: random.Random,
) -> float:
    """Delay after failure number ``failures`` (1-based): ``fast`` once, then ``initial``
    doubling up to ``maximum`` (e.g. 3, 5, 10, 20, 40, 60, 60 s), each spread by +-``jitter``."""
    if failures <= 1:
        return fast
    base = min(initial * 2.0 ** min(failures - 2, 60), maximum)
    return max(0.0, base * (1.0 + jitter * rng.uniform(-1.0, 1.0)))


class LadderRetry:
    """The retry ladder as a method, for the actors' settings classes (DcSettings,
    IocSettings), which carry the four fields under these names."""

    __slots__ = ()
    fast_retry: float
    backoff_initial: float
    backoff_max: float
    jitter: float

    def retry_delay(self, failures: int, rng: random.Random) -> float:
        """Delay after failure number ``failures`` (1-based): 3, 5, 10, 20, 40, 60, 60, ..."""
        return ladder_delay(
            failures,
            fast=self.fast_retry,
            initial=self.backoff_initial,
            maximum=self.backoff_max,
            jitter=self.jitter,
            rng=rng,
        )
