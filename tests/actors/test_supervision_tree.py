"""Declarative trees (stas.actors.tree): restart policies, strategies, intensity, reporting."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
import trio
import trio.testing

from stas.actors.supervisor import RestartPolicy, SupervisionReport
from stas.actors.tree import (
    Child,
    GaveUp,
    Restart,
    RunningTree,
    Strategy,
    Tree,
    picture,
    run_tree,
)

NO_JITTER = RestartPolicy(initial_backoff=1.0, max_backoff=8.0, jitter=0.0)


class Actors:
    """Scripted children: each start is recorded; ``crash[name]`` makes the running one fail."""

    def __init__(self) -> None:
        self.log: list[tuple[float, str]] = []
        self.crash: dict[str, trio.Event] = {}
        self.returns: set[str] = set()

    def child(self, name: str, restart: Restart = Restart.PERMANENT) -> Child:
        async def start(task_status: trio.TaskStatus[Any]) -> None:
            self.log.append((trio.current_time(), f"start {name}"))
            self.crash[name] = trio.Event()
            task_status.started()
            try:
                await self.crash[name].wait()
            finally:
                self.log.append((trio.current_time(), f"stop {name}"))
            if name in self.returns:
                return
            raise RuntimeError(f"{name} broke")

        return Child(name, start, restart)

    def starts(self, name: str) -> int:
        return sum(1 for _, what in self.log if what == f"start {name}")

    def events(self, since: int = 0) -> list[str]:
        return [what for _, what in self.log[since:]]


async def _running(spec: Tree, nursery: trio.Nursery, report: SupervisionReport) -> RunningTree:
    started: RunningTree = await nursery.start(
        lambda task_status: run_tree(spec, report, task_status=task_status)
    )
    return started


async def test_one_for_one_restarts_the_crashed_child_alone(autojump_clock, nursery) -> None:
    a = Actors()
    spec = Tree("d", (a.child("x"), a.child("y"), a.child("z")), backoff=NO_JITTER)
    report = SupervisionReport()
    await _running(spec, nursery, report)
    mark = len(a.log)
    a.crash["y"].set()
    await trio.sleep(0.5)
    assert report.as_dict()["d/y"]["state"] == "restarting"
    assert report.as_dict()["d/y"]["last error"] == "RuntimeError: y broke"
    await trio.sleep(1)
    assert a.events(mark) == ["stop y", "start y"]
    assert report.as_dict()["d/y"]["state"] == "running"
    assert report.as_dict()["d/y"]["restarts"] == "1"
    assert report.as_dict()["d/x"]["restarts"] == "0"


async def test_rest_for_one_restarts_what_depends_on_the_child(autojump_clock, nursery) -> None:
    a = Actors()
    spec = Tree("d", (a.child("x"), a.child("y"), a.child("z")), Strategy.REST_FOR_ONE,
                backoff=NO_JITTER)  # fmt: skip
    await _running(spec, nursery, SupervisionReport())
    mark = len(a.log)
    a.crash["y"].set()
    await trio.sleep(2)
    # z is stopped first (it depends on y), then both start again in order; x is untouched
    assert a.events(mark) == ["stop y", "stop z", "start y", "start z"]
    mark = len(a.log)
    a.crash["z"].set()  # the last one: only itself
    await trio.sleep(5)
    assert a.events(mark) == ["stop z", "start z"]


async def test_restart_policies(autojump_clock, nursery) -> None:
    a = Actors()
    a.returns = {"perm_ok", "trans_ok"}
    spec = Tree("d", (
        a.child("perm_ok"), a.child("trans_ok", Restart.TRANSIENT),
        a.child("trans_bad", Restart.TRANSIENT), a.child("temp_bad", Restart.TEMPORARY),
    ), backoff=NO_JITTER, intensity=10)  # fmt: skip
    report = SupervisionReport()
    await _running(spec, nursery, report)
    for name in ("perm_ok", "trans_ok", "trans_bad", "temp_bad"):
        a.crash[name].set()
        await trio.sleep(20)
    starts = {n: a.starts(n) for n in ("perm_ok", "trans_ok", "trans_bad", "temp_bad")}
    # permanent: back even after a normal return; transient: only after a crash; temporary: never
    assert starts == {"perm_ok": 2, "trans_ok": 1, "trans_bad": 2, "temp_bad": 1}
    states = {k.split("/")[1]: v["state"] for k, v in report.as_dict().items() if "/" in k}
    assert states == {"perm_ok": "running", "trans_ok": "stopped", "trans_bad": "running",
                      "temp_bad": "crashed"}  # fmt: skip


async def test_intensity_exceeded_stops_everything_and_gives_up(autojump_clock, caplog) -> None:
    caplog.set_level(logging.INFO, logger="stas.supervisor")
    a = Actors()
    spec = Tree("d", (a.child("x"), a.child("y")), intensity=2, period=60, backoff=NO_JITTER)
    report = SupervisionReport()
    with pytest.raises(BaseExceptionGroup) as info:
        async with trio.open_nursery() as nursery:
            await _running(spec, nursery, report)
            for _ in range(3):
                a.crash["x"].set()
                await trio.sleep(10)
    gave_up = info.value.exceptions[0]
    assert isinstance(gave_up, GaveUp)
    assert str(gave_up) == (
        "d: 3 restarts within 60 s (the last: x failed with RuntimeError: x broke); giving up"
    )
    assert a.starts("x") == 3 and a.starts("y") == 1
    assert a.events()[-1] == "stop y"  # the sibling was stopped before giving up
    assert report.as_dict()["d"]["state"] == "gave up"
    assert report.as_dict()["d"]["recent crashes"] == "3"
    text = [r.getMessage() for r in caplog.records]
    assert "d: restarting x in 1.0 s (restart 1 of at most 2 within 60 s)" in text
    assert "d: restarting x in 2.0 s (restart 2 of at most 2 within 60 s)" in text


async def test_slow_crashes_never_add_up(autojump_clock, nursery) -> None:
    a = Actors()
    spec = Tree("d", (a.child("x"),), intensity=1, period=10, backoff=NO_JITTER)
    await _running(spec, nursery, SupervisionReport())
    for _ in range(5):
        a.crash["x"].set()
        await trio.sleep(30)  # one crash per 30 s: never two within 10 s
    assert a.starts("x") == 6


async def test_a_subtree_that_gives_up_is_one_crashed_child_of_its_parent(
    autojump_clock, nursery
) -> None:
    a = Actors()
    inner = Tree("inner", (a.child("x"), a.child("y")), Strategy.REST_FOR_ONE, intensity=1,
                 backoff=NO_JITTER)  # fmt: skip
    spec = Tree("root", (a.child("dbus"), inner), backoff=NO_JITTER)
    report = SupervisionReport()
    await _running(spec, nursery, report)
    a.crash["x"].set()
    await trio.sleep(5)
    a.crash["x"].set()  # the second restart within 60 s: the subtree gives up
    await trio.sleep(5)
    assert a.starts("x") == 3 and a.starts("y") == 3  # subtree restarted whole by the root
    assert a.starts("dbus") == 1
    assert report.as_dict()["root/inner"]["restarts"] == "1"
    assert report.as_dict()["root/inner"]["last error"].startswith("GaveUp: root/inner: 2 restarts")


async def test_a_start_up_failure_is_raised_plain_and_not_restarted(autojump_clock) -> None:
    later: list[str] = []

    async def refuses(task_status: trio.TaskStatus[Any]) -> None:
        raise OSError("cannot own org.nvmexpress.staf")

    async def never(task_status: trio.TaskStatus[Any]) -> None:
        later.append("started")

    spec = Tree("d", (Child("dbus", refuses), Child("after", never)))
    with pytest.raises(OSError, match="cannot own"):
        await run_tree(spec, SupervisionReport())
    assert later == []


async def test_restart_on_purpose_is_not_a_crash(autojump_clock, nursery) -> None:
    a = Actors()
    inner = Tree("discovery", (a.child("finder"), a.child("mdns")), Strategy.REST_FOR_ONE,
                 intensity=0, backoff=NO_JITTER)  # fmt: skip
    root = await _running(Tree("stafd", (inner,), intensity=0), nursery, SupervisionReport())
    for _ in range(3):
        await root.restart_child("discovery/mdns")
    assert a.starts("mdns") == 4 and a.starts("finder") == 1
    with pytest.raises(LookupError, match="no child 'avahi'"):
        await root.restart_child("discovery/avahi")


async def test_restart_failing_to_start_is_retried(autojump_clock, nursery) -> None:
    attempts: list[float] = []
    up = trio.Event()

    async def flaky(task_status: trio.TaskStatus[Any]) -> None:
        attempts.append(trio.current_time())
        if len(attempts) == 1:
            task_status.started()
            raise RuntimeError("crash after start")
        if len(attempts) < 4:
            raise OSError("bus not there yet")
        task_status.started()
        up.set()
        await trio.sleep_forever()

    await _running(Tree("d", (Child("x", flaky),), intensity=5, backoff=NO_JITTER),
                   nursery, SupervisionReport())  # fmt: skip
    await up.wait()
    assert attempts == [0.0, 1.0, 3.0, 7.0]  # backoff 1, 2, 4 s: each failed start a crash


def test_picture_shows_strategies_and_policies() -> None:
    noop: Callable[..., Any] = lambda task_status: trio.sleep(0)  # noqa: E731
    spec = Tree("stacd", (
        Tree("connecting", (Child("connector", noop), Child("stafd client", noop)),
             Strategy.REST_FOR_ONE),
        Child("dbus", noop), Child("feed", noop, Restart.TRANSIENT),
    ))  # fmt: skip
    assert picture(spec) == [
        "stacd (one_for_one, at most 5 restarts in 60 s)",
        "├─ connecting (rest_for_one, at most 5 in 60 s)",
        "│  ├─ connector (permanent)",
        "│  └─ stafd client (permanent)",
        "├─ dbus (permanent)",
        "└─ feed (transient)",
    ]
