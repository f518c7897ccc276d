"""Supervisor: restart timings, give-up on crash loops, stop, clean exit."""

import itertools
import logging
import random

import pytest
import trio
import trio.testing

from stas.actors.supervisor import (
    CrashLoop,
    RestartPolicy,
    SupervisionReport,
    open_supervisor,
    reporting_as,
    supervise,
)

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


async def test_a_childs_crash_loop_fails_it_then_retries_never_the_parent(autojump_clock) -> None:
    """One DC's (or IOC's) crash loop is its own: marked failed, left alone for the cool-off,
    started again; its siblings and the reconciler run on (it ended stafd before)."""
    policy = RestartPolicy(initial_backoff=0.1, max_backoff=0.1, jitter=0.0, intensity=1,
                           period=10, cooldown=100, max_cooldown=400)  # fmt: skip
    report = SupervisionReport()
    starts: list[float] = []
    sibling_starts: list[float] = []
    seen: list[str] = []

    async def broken() -> None:
        starts.append(trio.current_time())
        if len(starts) <= 4:
            raise OSError(f"no {len(starts)}")
        await trio.sleep_forever()

    async def sibling() -> None:
        sibling_starts.append(trio.current_time())
        await trio.sleep_forever()

    with reporting_as(report, "stafd/finder"):
        async with open_supervisor(policy) as sup:
            sup.start("x", broken)
            sup.start("y", sibling)
            await trio.sleep(1)
            seen.append(report.as_dict()["stafd/finder/x"]["state"])
            await trio.sleep(150)
            assert sup.running == {"x", "y"}
            seen.append(report.as_dict()["stafd/finder/x"]["state"])
    # crash 1, retry after 0.1 s, crash 2 = loop: failed; 100 s later crashes 3, 4: failed
    # again, next try 200 s later (doubled); then it stays up
    assert [round(t, 1) for t in starts] == [0.0, 0.1, 100.1, 100.2]
    assert seen == ["failed", "failed"]
    assert sibling_starts == [0.0]
    assert "stafd/finder/x" not in report.as_dict()  # a stopped child is no longer listed


async def test_failed_child_comes_back_and_reports_running(autojump_clock) -> None:
    policy = RestartPolicy(initial_backoff=0.1, max_backoff=0.1, jitter=0.0, intensity=1,
                           period=10, cooldown=50)  # fmt: skip
    report = SupervisionReport()
    calls = 0

    async def twice_broken() -> None:
        nonlocal calls
        calls += 1
        if calls <= 2:
            raise ValueError("bad state")
        await trio.sleep_forever()

    with reporting_as(report, "stacd/connector"):
        async with open_supervisor(policy) as sup:
            sup.start("ioc", twice_broken)
            await trio.sleep(10)
            entry = report.as_dict()["stacd/connector/ioc"]
            assert entry["state"] == "failed"
            assert entry["last error"] == "ValueError: bad state"
            assert "next start" in entry
            await trio.sleep(60)
            entry = report.as_dict()["stacd/connector/ioc"]
            assert (entry["state"], entry["restarts"]) == ("running", "2")
            assert "next start" not in entry
            await sup.stop("ioc")
    assert calls == 3
