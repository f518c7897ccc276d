"""The two retry rules every loop uses (stas/backoff.py)."""

import itertools
import random

from stas.backoff import doubling, ladder_delay


def test_doubling_stops_at_the_maximum() -> None:
    assert list(itertools.islice(doubling(0.5, 3.0), 6)) == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]


def test_ladder_is_fast_once_then_doubles_to_the_cap() -> None:
    rng = random.Random(1)
    steps = [
        ladder_delay(n, fast=3.0, initial=5.0, maximum=60.0, jitter=0.0, rng=rng)
        for n in range(1, 9)
    ]
    assert steps == [3.0, 5.0, 10.0, 20.0, 40.0, 60.0, 60.0, 60.0]


def test_ladder_jitter_stays_within_its_spread_and_huge_counts_do_not_overflow() -> None:
    rng = random.Random(7)
    for n in (2, 10, 10**6):
        d = ladder_delay(n, fast=3.0, initial=5.0, maximum=60.0, jitter=0.1, rng=rng)
        cap = 5.0 if n == 2 else 60.0
        assert 0.9 * cap <= d <= 1.1 * cap
