"""Declarative supervision trees, as OTP's: each daemon is one ``Tree`` of child specs.

A ``Child`` names an async function taking a ``task_status``; it is called afresh on every
(re)start and must fetch its inputs again there (the daemon keeps the channels; state comes
back from the published snapshots); ``needs`` says what it gets. Its ``restart`` policy:
``permanent`` (always restarted, even after a normal return), ``transient`` (after a crash
only), ``temporary`` (never). A ``Tree`` starts its children in order, each one started before
the next; a failure at start-up ends the tree at once (a daemon that cannot own its bus name
must not report ready). Later, a child that ends is restarted after a short jittered backoff
and, with ``rest_for_one``, so are the children after it (they depend on it); ``one_for_one``
restarts it alone. More than ``intensity`` restarts within ``period`` seconds: the tree stops
its children and raises ``GaveUp`` into its parent, for which it is one crashed child; at the
root, the daemon logs one line and exits 1 (systemd's ``Restart=on-failure`` takes over).

Every restart is logged and published in the ``SupervisionReport`` (D-Bus ``status``).
"""

from __future__ import annotations

import enum
import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio

from stas.actors.supervisor import (
    CrashLoop,
    RestartPolicy,
    SupervisionReport,
    describe,
    reporting_as,
    wall_clock,
)

log = logging.getLogger("stas.supervisor")


class Restart(enum.Enum):
    PERMANENT = "permanent"  # always restarted, even after a normal return
    TRANSIENT = "transient"  # restarted after a crash only
    TEMPORARY = "temporary"  # never restarted


class Strategy(enum.Enum):
    ONE_FOR_ONE = "one_for_one"  # restart the child alone
    REST_FOR_ONE = "rest_for_one"  # restart it and the children after it (they depend on it)


StartFn = Callable[[trio.TaskStatus[Any]], Awaitable[None]]
RESTART_BACKOFF = RestartPolicy(initial_backoff=0.5, max_backoff=10.0, jitter=0.1)


@attrs.frozen
class Child:
    """One actor: how to start it, when to restart it, what it gets back on a restart."""

    name: str
    start: StartFn
    restart: Restart = Restart.PERMANENT
    needs: str = ""


@attrs.frozen
class Tree:
    """A supervisor of ``children`` (actors or trees), started and restarted as one."""

    name: str
    children: tuple[Child | Tree, ...]
    strategy: Strategy = Strategy.ONE_FOR_ONE
    intensity: int = 5  # restarts tolerated within ``period`` seconds
    period: float = 60.0
    restart: Restart = Restart.PERMANENT
    backoff: RestartPolicy = RESTART_BACKOFF  # delay before a restart (initial, max, jitter)
    needs: str = ""


class GaveUp(CrashLoop):
    """A tree restarted its children too often: it stopped them all."""

    def __init__(self, path: str, restarts: int, period: float, child: str, cause: str) -> None:
        text = (f"{path}: {restarts} restarts within {period:g} s (the last: {child} "
                f"failed with {cause}); giving up")  # fmt: skip
        super().__init__(path, restarts, period, text)
        self.child = child


class _Status:
    """The ``task_status`` a child gets: remembers that it started (a failure before that is
    a start-up failure, raised to whoever started it)."""

    def __init__(self, outer: trio.TaskStatus[Any]) -> None:
        self._outer = outer
        self.done = False

    def started(self, value: Any = None) -> None:
        self.done = True
        self._outer.started(value)


@attrs.define
class _Slot:
    spec: Child | Tree
    gen: int = 0  # bumped on each start: a late exit notice of an older run is ignored
    wanted: bool = True  # False once a transient/temporary child has finished for good
    scope: trio.CancelScope | None = None
    done: trio.Event | None = None
    tree: RunningTree | None = None  # the running subtree, when spec is a Tree


Exit = tuple[int, int, Exception | None]  # (slot, generation, crash or None)


class RunningTree:
    """One running ``Tree``; ``restart_child`` restarts a child on purpose (a reload)."""

    def __init__(
        self, spec: Tree, path: str, report: SupervisionReport, rng: random.Random | None = None
    ) -> None:
        self.spec, self.path, self.report = spec, path, report
        self.rng = rng or random.Random()
        self.slots = [_Slot(c) for c in spec.children]
        # one notice per run of a child; a stale one and a fresh one at most per child
        self._exits_send, self._exits = trio.open_memory_channel[Exit](2 * len(self.slots) + 2)
        self._restarts: deque[float] = deque()
        self._lock = trio.Lock()
        self._nursery: trio.Nursery | None = None

    def _child_path(self, i: int) -> str:
        return f"{self.path}/{self.slots[i].spec.name}"

    async def run(self, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        """Start the children in order, then keep them by their policies until cancelled."""
        failure: Exception | None = None
        self.report.set(self.path, state="running", next_start="")
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                for i in range(len(self.slots)):
                    await self._start(i)
            except Exception as exc:  # start-up failure: raised plain, after the nursery
                failure = exc
            else:
                task_status.started(self)
                failure = await self._keep()
            nursery.cancel_scope.cancel()
        if failure is not None:
            raise failure

    async def _keep(self) -> GaveUp | None:
        async for i, gen, exc in self._exits:
            if gen != self.slots[i].gen:
                continue  # an older run's notice: that run was stopped on purpose
            try:
                async with self._lock:
                    await self._ended(i, exc)
            except GaveUp as gave_up:
                return gave_up
        return None

    async def _start(self, i: int) -> None:
        """Start child ``i``; its start-up failure is raised here."""
        assert self._nursery is not None
        slot = self.slots[i]
        slot.gen += 1
        slot.wanted = True
        gen, path = slot.gen, self._child_path(i)
        scope, done = trio.CancelScope(), trio.Event()
        slot.scope, slot.done = scope, done

        async def runner(task_status: trio.TaskStatus[Any]) -> None:
            status = _Status(task_status)
            crash: Exception | None = None
            with reporting_as(self.report, path):
                try:
                    with scope:
                        await self._call(slot, path, status)
                except Exception as exc:
                    if not status.done:
                        raise
                    crash = exc
                finally:
                    done.set()
            if scope.cancel_called:
                return  # stopped on purpose (a restart of what it depends on, a reload)
            self._exits_send.send_nowait((i, gen, crash))

        await self._nursery.start(runner, name=f"actor:{path}")
        old = self.report.get(path)
        self.report.set(path, state="running", next_start="",
                        restarts=old.restarts if old else 0)  # fmt: skip

    async def _call(self, slot: _Slot, path: str, status: _Status) -> None:
        spec = slot.spec
        if isinstance(spec, Tree):
            slot.tree = RunningTree(spec, path, self.report, self.rng)
            await slot.tree.run(task_status=status)
        else:
            await spec.start(status)
            if not status.done:  # returned without ever serving: nothing to start
                status.started()

    async def _stop(self, i: int) -> None:
        slot = self.slots[i]
        if slot.scope is not None:
            slot.scope.cancel()
        if slot.done is not None:
            await slot.done.wait()
        slot.tree = None

    def _group(self, i: int) -> list[int]:
        """Child ``i`` and, in a rest_for_one tree, the wanted children after it."""
        if self.spec.strategy is Strategy.ONE_FOR_ONE:
            return [i]
        return [i] + [j for j in range(i + 1, len(self.slots)) if self.slots[j].wanted]

    async def _ended(self, i: int, crash: Exception | None) -> None:
        slot, path = self.slots[i], self._child_path(i)
        policy = slot.spec.restart
        if crash is None and policy is not Restart.PERMANENT:
            log.info("%s finished", path)
            slot.wanted = False
            self.report.set(path, state="stopped")
            return
        if crash is not None:
            log.error("%s crashed: %s", path, describe(crash), exc_info=crash)
        else:
            log.error("%s returned; restarting it (permanent)", path)
        cause = describe(crash) if crash is not None else "a normal return"
        old = self.report.get(path)
        self.report.set(path, state="crashed", last_error=cause, last_crash=wall_clock(),
                        restarts=(old.restarts if old else 0) + 1)  # fmt: skip
        if policy is Restart.TEMPORARY:
            slot.wanted = False
            return
        now = trio.current_time()
        self._restarts.append(now)
        while self._restarts and now - self._restarts[0] > self.spec.period:
            self._restarts.popleft()
        recent = len(self._restarts)
        self.report.set(self.path, recent_crashes=recent)
        if recent > self.spec.intensity:
            self.report.set(self.path, state="gave up", last_error=f"{slot.spec.name}: {cause}",
                            last_crash=wall_clock())  # fmt: skip
            raise GaveUp(self.path, recent, self.spec.period, slot.spec.name, cause)
        group = self._group(i)
        for j in reversed(group[1:]):
            await self._stop(j)
        delay = self.spec.backoff.delay(recent, self.rng)
        names = ", ".join(self.slots[j].spec.name for j in group)
        log.warning("%s: restarting %s in %.1f s (restart %d of at most %d within %g s)",
                    self.path, names, delay, recent, self.spec.intensity,
                    self.spec.period)  # fmt: skip
        for j in group:
            self.report.set(self._child_path(j), state="restarting", next_start=wall_clock(delay))
        await trio.sleep(delay)
        await self._start_group(group)

    async def _start_group(self, group: list[int]) -> None:
        """Start ``group`` in order; a start-up failure counts as that child's crash (its
        restart starts the rest of the group again)."""
        for j in group:
            try:
                await self._start(j)
            except Exception as exc:
                self._exits_send.send_nowait((j, self.slots[j].gen, exc))
                return

    async def restart_child(self, path: str) -> None:
        """Restart the child at ``path`` (relative: ``discovery/mdns``) on purpose, with what
        depends on it in a rest_for_one tree; not counted as a crash."""
        head, _, rest = path.partition("/")
        i = next((k for k, s in enumerate(self.slots) if s.spec.name == head), None)
        if i is None:
            raise LookupError(f"{self.path} has no child {head!r}")
        if rest:
            sub = self.slots[i].tree
            if sub is None:
                raise LookupError(f"{self._child_path(i)} is not a running tree")
            await sub.restart_child(rest)
            return
        async with self._lock:
            group = self._group(i)
            for j in reversed(group):
                await self._stop(j)
            log.info("%s: restarting %s on purpose", self.path,
                     ", ".join(self.slots[j].spec.name for j in group))  # fmt: skip
            await self._start_group(group)


async def run_tree(
    spec: Tree,
    report: SupervisionReport,
    *,
    rng: random.Random | None = None,
    task_status: trio.TaskStatus[RunningTree] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run ``spec`` as a root (its path is its name); ``started`` hands back the running tree."""
    await RunningTree(spec, spec.name, report, rng).run(task_status=task_status)


def gave_up(group: BaseExceptionGroup[Any]) -> CrashLoop | None:
    """The crash loop inside ``group`` (nested groups unwrapped), if that is what ended it."""
    loops = group.subgroup(CrashLoop)
    leaf: BaseException | None = loops.exceptions[0] if loops is not None else None
    while isinstance(leaf, BaseExceptionGroup):
        leaf = leaf.exceptions[0]
    return leaf if isinstance(leaf, CrashLoop) else None


def picture(spec: Tree, indent: str = "") -> list[str]:
    """The tree as text lines (strategy, intensity, each child's policy): for docs and logs."""
    lines = [] if indent else [f"{spec.name} ({spec.strategy.value}, at most "
                               f"{spec.intensity} restarts in {spec.period:g} s)"]  # fmt: skip
    for n, child in enumerate(spec.children):
        last = n == len(spec.children) - 1
        branch, below = ("└─ ", "   ") if last else ("├─ ", "│  ")
        if isinstance(child, Tree):
            lines.append(f"{indent}{branch}{child.name} ({child.strategy.value}, at most "
                         f"{child.intensity} in {child.period:g} s)")  # fmt: skip
            lines += picture(child, indent + below)
        else:
            lines.append(f"{indent}{branch}{child.name} ({child.restart.value})")
    return lines
