"""Shared by the supervision tests of both daemons: crash injection into a tree's children,
a real-time guard, D-Bus calls with virtual time stopped, and waits on the supervision report.

The daemons run in-process under MockClock(autojump_threshold=0) beside a real dbus-daemon;
a thread waiting for the real bus would let the autojump clock run the daemon's timers on, so
calls stop virtual time while they wait, and a hung test is caught by real time instead.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, Protocol

import attrs
import trio
import trio.testing

from stas.actors.tree import Child, Tree
from stas.dbus import connection
from stas.dbus.client import connect

REAL_LIMIT = 120.0  # seconds of real time for a whole test


class Injected(Exception):
    pass


@asynccontextmanager
async def real_time_limit(what: str) -> AsyncIterator[None]:
    """Fail the block after ``REAL_LIMIT`` real seconds (a hung wait, not a slow one). Not a
    Trio timeout: the autojump clock would jump to it whenever the daemon waits for the bus;
    for that reason the bus's own time limit (stas.dbus.connection.BUS_TIMEOUT) is lifted."""

    async def guard() -> None:
        await trio.to_thread.run_sync(time.sleep, REAL_LIMIT, abandon_on_cancel=True)
        raise TimeoutError(f"still waiting for {what} after {REAL_LIMIT:g} s")

    bus_timeout, connection.BUS_TIMEOUT = connection.BUS_TIMEOUT, math.inf
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(guard)
            yield
            nursery.cancel_scope.cancel()
    finally:
        connection.BUS_TIMEOUT = bus_timeout


class Faults:
    """Wraps every child of a tree: counts its starts; ``crash(path)`` makes the running one
    fail as if the actor itself had raised."""

    def __init__(self) -> None:
        self.starts: Counter[str] = Counter()
        self._triggers: dict[str, trio.Event] = {}

    def wrap(self, tree: Tree, prefix: str = "") -> Tree:
        path = prefix + tree.name
        children = tuple(
            self.wrap(c, path + "/") if isinstance(c, Tree) else self._child(c, f"{path}/{c.name}")
            for c in tree.children
        )
        return attrs.evolve(tree, children=children)

    def _child(self, child: Child, path: str) -> Child:
        async def start(task_status: trio.TaskStatus[Any]) -> None:
            self.starts[path] += 1
            trigger = self._triggers[path] = trio.Event()

            async def bomb() -> None:
                await trigger.wait()
                raise Injected(path)

            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(bomb)
                    await child.start(task_status)
                    nursery.cancel_scope.cancel()
            except BaseExceptionGroup as group:
                if group.subgroup(Injected) is not None:
                    raise RuntimeError(f"injected crash in {path}") from None
                raise

        return attrs.evolve(child, start=start)

    def crash(self, path: str) -> None:
        self._triggers[path].set()

    async def until_restarted(self, before: Counter[str], paths: set[str]) -> None:
        """Until each of ``paths`` started again since ``before`` (a group starts in order)."""
        while any(self.starts[p] <= before[p] for p in paths):
            await trio.sleep(0.01)


class CrashInjected:
    """Mixed into a daemon class (``class CrashableStafd(CrashInjected, Stafd)``): its
    supervision tree runs under ``faults``, so a test can crash any child."""

    def __init__(self, *args: Any, faults: Faults) -> None:
        super().__init__(*args)
        self.faults = faults

    def supervision_tree(self) -> Tree:
        return self.faults.wrap(super().supervision_tree())  # type: ignore[misc]


async def call_time_stopped(service: Any, bus: str, method: str, *args: Any) -> Any:
    """One D-Bus call to ``service`` from a thread, with virtual time stopped meanwhile."""

    def call() -> Any:
        with connect(service, address=bus) as proxy:
            return proxy.call(method, *args)

    clock = trio.lowlevel.current_clock()
    assert isinstance(clock, trio.testing.MockClock)
    clock.autojump_threshold = math.inf
    try:
        return await trio.to_thread.run_sync(call)
    finally:
        clock.autojump_threshold = 0


class Reporting(Protocol):
    report: Any  # the daemon's SupervisionReport


async def until_reported(daemon: Reporting, path: str, **want: str) -> dict[str, str]:
    """Until the supervision report's ``path`` shows every ``want`` key with its value."""

    def ok(report: Mapping[str, Any]) -> bool:
        entry = report.get(path)
        return entry is not None and all(entry.as_dict().get(k) == v for k, v in want.items())

    await daemon.report.current.wait_value(ok)
    result: dict[str, str] = daemon.report.as_dict()[path]
    return result
