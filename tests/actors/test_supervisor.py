"""Supervisor: restart timings, give-up on crash loops, stop, clean exit."""

import itertools
import logging
import random

import pytest
import trio
import trio.testing

from stas.actors.supervisor import CrashLoop, RestartPolicy, open_supervisor, supervise

NO_JITTER = RestartPolicy(
    initial_backoff=1.0, max_backoff=8.0, jitter=0.0, intensity=10, period=600
)


async def test_restart_backoff_doubles_and_caps(autojump_clock) -> None:
    starts: list[float] = []

    async def flaky() -> None:
        starts.append(trio.current_time())
        if len(starts) < 6:
            raise RuntimeError("boom")

    await supervise("flaky", flaky, policy=NO_JITTER)
    gaps = [round(b - a, 3) for a, b in itertools.pairwise(starts)]
    assert gaps == [1.0, 2.0, 4.0, 8.0, 8.0]


async def test_jitter_stays_within_bounds(autojump_clock) -> None:
    policy = RestartPolicy(initial_backoff=10.0, max_backoff=10.0, jitter=0.2, intensity=50)
    rng = random.Random(7)
    delays = [policy.delay(1, rng) for _ in range(200)]
    assert all(8.0 <= d <= 12.0 for d in delays)
    assert len({round(d, 6) for d in delays}) > 100  # really jittered


async def test_crash_loop_fails_parent_and_logs_each_crash_once(autojump_clock, caplog) -> None:
    policy = RestartPolicy(initial_backoff=0.1, max_backoff=0.1, jitter=0.0, intensity=3, period=10)
    calls = 0

    async def broken() -> None:
        nonlocal calls
        calls += 1
        raise ValueError(f"bad {calls}")

    caplog.set_level(logging.ERROR, logger="stas.supervisor")
    with pytest.raises(CrashLoop, match="'broken' crashed 4 times"):
        await supervise("broken", broken, policy=policy)
    assert calls == 4
    crash_lines = [r for r in caplog.records if "crashed:" in r.getMessage()]
    assert [r.getMessage() for r in crash_lines] == [
        f"actor broken crashed: bad {i}" for i in range(1, 5)
    ]
    assert all(r.exc_info for r in crash_lines)


async def test_slow_crashes_are_not_a_loop(autojump_clock) -> None:
    policy = RestartPolicy(initial_backoff=1, max_backoff=1, jitter=0.0, intensity=2, period=10)
    calls = 0

    async def crashes_every_20s() -> None:
        nonlocal calls
        calls += 1
        if calls == 6:
            return
        await trio.sleep(20)
        raise RuntimeError("periodic")

    await supervise("periodic", crashes_every_20s, policy=policy)
    assert calls == 6


async def test_supervisor_start_stop_and_names(autojump_clock) -> None:
    cleaned: list[str] = []

    async def forever(tag: str) -> None:
        try:
            await trio.sleep_forever()
        finally:
            cleaned.append(tag)

    async with open_supervisor(NO_JITTER) as sup:
        sup.start("a", lambda: forever("a"))
        sup.start("b", lambda: forever("b"))
        await trio.testing.wait_all_tasks_blocked()
        assert sup.running == {"a", "b"}
        with pytest.raises(ValueError, match="already running"):
            sup.start("a", lambda: forever("a"))
        await sup.stop("a")
        assert cleaned == ["a"]
        assert sup.running == {"b"}
    assert sorted(cleaned) == ["a", "b"]


async def test_crash_loop_in_child_propagates(autojump_clock) -> None:
    policy = RestartPolicy(initial_backoff=0.1, jitter=0.0, intensity=1, period=10)

    async def broken() -> None:
        raise OSError("no")

    with pytest.raises(BaseExceptionGroup) as info:
        async with open_supervisor(policy) as sup:
            sup.start("x", broken)
            await trio.sleep_forever()
    assert info.group_contains(CrashLoop)
