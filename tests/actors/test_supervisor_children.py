"""A reconciler's dynamic children (``Supervisor``): what one child costs, and stop() at every
moment of a child's life (issue 12 bench 4: stacd supervises 10,000 IOC actors)."""

from __future__ import annotations

import trio
import trio.testing

from stas.actors.supervisor import RestartPolicy, SupervisionReport, open_supervisor, reporting_as
from tests.helpers.memory import Traced, traced

QUICK = RestartPolicy(initial_backoff=1.0, max_backoff=1.0, jitter=0.0, intensity=1, period=10,
                      cooldown=100, max_cooldown=400)  # fmt: skip


async def idle() -> None:
    await trio.sleep_forever()


async def _kept_per_task(memory: Traced, supervised: bool, n: int) -> float:
    """Bytes that stay allocated per idle child, started under the supervisor or bare."""
    async with open_supervisor() as sup:
        await trio.testing.wait_all_tasks_blocked()
        memory.mark(collect=True)
        async with trio.open_nursery() as bare:
            for i in range(n):
                name = f"nqn.2026-01.io.t:sub{i:05d}"
                if supervised:
                    sup.start(name, idle)
                else:
                    bare.start_soon(idle, name=name)
            await trio.testing.wait_all_tasks_blocked()
            kept = memory.held(collect=True)
            bare.cancel_scope.cancel()
            sup._nursery.cancel_scope.cancel()
    return kept / n


def test_an_idle_child_costs_the_supervisor_under_2_kb() -> None:
    """Beyond the task and the actor's own frame: one slotted record and a cancel scope (was
    4.5 KB: a crash deque, a cool-off generator, two closures, an Event, four frames)."""
    n = 1000
    with traced() as memory:
        bare = trio.run(_kept_per_task, memory, False, n)
        supervised = trio.run(_kept_per_task, memory, True, n)
    assert supervised - bare < 2000, f"{supervised - bare:.0f} bytes per child"


async def test_stop_during_the_restart_backoff_ends_the_child(autojump_clock) -> None:
    starts: list[float] = []

    async def crashes() -> None:
        starts.append(trio.current_time())
        raise OSError("refused")

    async with open_supervisor(QUICK) as sup:
        sup.start("x", crashes)
        await trio.sleep(0.5)  # crashed once, waiting 1 s to restart
        await sup.stop("x")
        assert sup.running == frozenset()
        await trio.sleep(10)
    assert starts == [0.0]


async def test_stop_during_the_cool_off_ends_the_child_and_its_report(autojump_clock) -> None:
    report = SupervisionReport()
    starts: list[float] = []

    async def crashes() -> None:
        starts.append(trio.current_time())
        raise OSError("refused")

    with reporting_as(report, "stacd/connector"):
        async with open_supervisor(QUICK) as sup:
            sup.start("x", crashes)
            await trio.sleep(5)  # crash, 1 s, crash: a loop, failed for 100 s
            assert report.as_dict()["stacd/connector/x"]["state"] == "failed"
            assert sup.running == {"x"}  # still wanted while it cools off
            await sup.stop("x")
            assert sup.running == frozenset()
            assert "stacd/connector/x" not in report.as_dict()
            await trio.sleep(500)
    assert starts == [0.0, 1.0]


async def test_cool_offs_double_up_to_the_cap_and_the_backoff_starts_afresh(autojump_clock):
    starts: list[float] = []

    async def crashes() -> None:
        starts.append(trio.current_time())
        raise OSError("refused")

    async with open_supervisor(QUICK) as sup:
        sup.start("x", crashes)
        await trio.sleep(1500)
        await sup.stop("x")
    # pairs 1 s apart (a crash, its restart, a loop), then 100, 200, 400, 400 s of cool-off
    assert starts == [0.0, 1.0, 101.0, 102.0, 302.0, 303.0, 703.0, 704.0, 1104.0, 1105.0]


async def test_two_stops_of_one_child_both_wait_for_its_cleanup(autojump_clock) -> None:
    cleaned: list[float] = []
    returned: list[str] = []

    async def slow_cleanup() -> None:
        try:
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True):
                await trio.sleep(3)
                cleaned.append(trio.current_time())

    async def stop(sup, tag: str) -> None:  # type: ignore[no-untyped-def]
        await sup.stop("x")
        assert cleaned == [3.0]
        returned.append(tag)

    async with open_supervisor(QUICK) as sup:
        sup.start("x", slow_cleanup)
        await trio.testing.wait_all_tasks_blocked()
        async with trio.open_nursery() as n:
            n.start_soon(stop, sup, "first")
            n.start_soon(stop, sup, "second")
    assert sorted(returned) == ["first", "second"]


async def test_stop_right_after_start_and_a_name_reused(autojump_clock) -> None:
    runs: list[str] = []

    async def actor() -> None:
        try:
            await trio.sleep_forever()
        finally:
            runs.append("ended")

    async with open_supervisor(QUICK) as sup:
        sup.start("x", actor)
        await sup.stop("x")  # before its task ever ran: cancelled at its first checkpoint
        assert runs == ["ended"]
        assert sup.running == frozenset()
        sup.start("x", actor)
        await trio.testing.wait_all_tasks_blocked()
        assert sup.running == {"x"}
        await sup.stop("x")
        await sup.stop("x")  # gone: nothing to do
    assert runs == ["ended", "ended"]
