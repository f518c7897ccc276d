"""Supervision for actors: restart a crashed actor with capped, jittered exponential backoff.

Two shapes (the daemons' whole trees are declared in ``stas.actors.tree``):

- ``supervise``: one actor, restarted after each crash. Erlang-style restart intensity: more
  than ``intensity`` crashes within ``period`` seconds is a crash loop, raised as ``CrashLoop``
  into the caller, which decides (a tree restarts what depends on the actor, or gives up).
- ``Supervisor`` / ``open_supervisor``: the dynamic children of one reconciler (one DC actor per
  discovery controller, one IOC actor per I/O controller). A child's crash loop never reaches
  the reconciler: the child is marked failed in the supervision report, left alone for a
  cool-off (doubling up to ``max_cooldown``), then started again. One bad controller must not
  end the daemon.

Every timer is a Trio sleep, so tests drive them with ``MockClock``. Crashes are published in a
``SupervisionReport`` (immutable values in an AsyncValue) which the D-Bus ``status`` shows.
"""

from __future__ import annotations

import logging
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar

import attrs
import trio
from trio_util import AsyncValue

from stas.backoff import doubling

log = logging.getLogger("stas.supervisor")

ActorFn = Callable[[], Awaitable[None]]


@attrs.frozen
class RestartPolicy:
    """How a crashed actor is restarted; defaults suit network actors."""

    initial_backoff: float = 0.5
    max_backoff: float = 30.0
    jitter: float = 0.1  # +/- fraction of the delay, so many actors do not restart in lockstep
    intensity: int = 5  # crashes tolerated within ``period``
    period: float = 60.0
    cooldown: float = 300.0  # a dynamic child's crash loop: wait this long, then try again
    max_cooldown: float = 3600.0  # ...doubling on each new loop up to this

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Backoff before restart number ``attempt`` (1-based)."""
        base: float = min(self.initial_backoff * (2 ** (attempt - 1)), self.max_backoff)
        return max(0.0, base * (1.0 + self.jitter * rng.uniform(-1.0, 1.0)))


class CrashLoop(Exception):
    """An actor crashed too often too quickly; raised into the supervisor's parent."""

    def __init__(self, name: str, crashes: int, period: float, text: str = "") -> None:
        super().__init__(text or f"actor {name!r} crashed {crashes} times within {period:g} s; "
                         "giving up")  # fmt: skip
        self.name = name
        self.crashes = crashes


def describe(exc: BaseException) -> str:
    """``Type: message``, the one-line form of a crash used in logs and the report."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def wall_clock(in_seconds: float = 0.0) -> str:
    """A wall-clock time for the report (monotonic and virtual times mean nothing to users)."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(time.time() + in_seconds))


# --- the report ----------------------------------------------------------------------------------


@attrs.frozen
class ChildReport:
    """What the operator sees of one supervised actor or subtree."""

    state: str = "running"  # running | restarting | failed | gave up | stopped | crashed
    restarts: int = 0
    recent_crashes: int = 0  # within the supervisor's period: how close to giving up
    last_error: str = ""
    last_crash: str = ""  # wall clock
    next_start: str = ""  # wall clock, while restarting or failed

    def as_dict(self) -> dict[str, str]:
        out = {"state": self.state, "restarts": str(self.restarts),
               "recent crashes": str(self.recent_crashes)}  # fmt: skip
        if self.last_error:
            out |= {"last error": self.last_error, "last crash": self.last_crash}
        if self.next_start:
            out["next start"] = self.next_start
        return out


class SupervisionReport:
    """The supervision tree's health by path (``stafd/discovery/finder``), published as one
    immutable mapping per change. Static children are always listed; a reconciler's dynamic
    children only once they have crashed (10,000 healthy IOC actors are not news)."""

    def __init__(self) -> None:
        self.current: AsyncValue[Mapping[str, ChildReport]] = AsyncValue({})

    def get(self, path: str) -> ChildReport | None:
        found: ChildReport | None = self.current.value.get(path)
        return found

    def set(self, path: str, **changes: object) -> None:
        old = self.current.value.get(path, ChildReport())
        self.current.value = {**self.current.value, path: attrs.evolve(old, **changes)}

    def remove(self, path: str) -> None:
        if path in self.current.value:
            self.current.value = {k: v for k, v in self.current.value.items() if k != path}

    def as_dict(self) -> dict[str, dict[str, str]]:
        """The D-Bus ``status`` section, sorted by path."""
        return {k: v.as_dict() for k, v in sorted(self.current.value.items())}


# Where the running task sits in the tree: (report, path). Set by the tree for each child's
# task and inherited by what it spawns, so a reconciler's ``open_supervisor()`` reports under
# its own path without being told.
_WHERE: ContextVar[tuple[SupervisionReport, str] | None] = ContextVar("stas_supervision",
                                                                      default=None)  # fmt: skip


@contextmanager
def reporting_as(report: SupervisionReport, path: str) -> Iterator[None]:
    """Run the block (and tasks it spawns) as ``path`` of ``report``."""
    token = _WHERE.set((report, path))
    try:
        yield
    finally:
        _WHERE.reset(token)


def current_place() -> tuple[SupervisionReport, str] | None:
    return _WHERE.get()


# --- one actor -----------------------------------------------------------------------------------

OnCrash = Callable[[BaseException, int, float], None]  # (error, recent crashes, delay)


class _Crashes:
    """Restart intensity: the crash times within the policy's period and the backoff ladder's
    step. The deque is made at the first crash: a supervisor holds 10,000 of these, nearly all
    for actors that never crash (an empty deque is about 600 bytes)."""

    __slots__ = ("attempt", "times")

    def __init__(self) -> None:
        self.times: deque[float] | None = None
        self.attempt = 0

    def crashed(self, started: float, period: float) -> int:
        """Record a crash now of a run begun at ``started``; the crashes within ``period``."""
        now = trio.current_time()
        if now - started >= period:
            self.attempt = 0  # it ran fine for a while: start the backoff ladder again
        times = self.times
        if times is None:
            times = self.times = deque()
        times.append(now)
        while times and now - times[0] > period:
            times.popleft()
        return len(times)

    def forget(self) -> None:
        """A new ``supervise`` after a crash loop: nothing recent, the ladder from the start."""
        self.times = None
        self.attempt = 0


def _after_crash(
    name: str,
    exc: Exception,
    count: int,
    state: _Crashes,
    policy: RestartPolicy,
    rng: random.Random,
) -> float:
    """Log a crash and return the backoff before the restart; ``CrashLoop`` past the
    intensity."""
    log.error("actor %s crashed: %s", name, exc, exc_info=exc)
    if count > policy.intensity:
        raise CrashLoop(name, count, policy.period) from exc
    state.attempt += 1
    delay = policy.delay(state.attempt, rng)
    log.info("actor %s restarts in %.1f s (crash %d)", name, delay, count)
    return delay


async def supervise(
    name: str,
    actor: ActorFn,
    *,
    policy: RestartPolicy = RestartPolicy(),
    rng: random.Random | None = None,
    on_crash: OnCrash | None = None,
) -> None:
    """Run ``actor()`` until it returns normally, restarting it after each crash."""
    rng = rng or random.Random()
    state = _Crashes()
    while True:
        started = trio.current_time()
        try:
            await actor()
            return
        except Exception as exc:
            count = state.crashed(started, policy.period)
            delay = _after_crash(name, exc, count, state, policy, rng)
            if on_crash is not None:
                on_crash(exc, count, delay)
        await trio.sleep(delay)


# --- a reconciler's dynamic children -------------------------------------------------------------


class _Child(_Crashes):
    """One dynamic child, everything it needs in one slotted object (10,000 of them in stacd):
    no closures; the ``done`` event and the cool-off ladder made only when needed."""

    __slots__ = ("actor", "cooldowns", "done", "name", "restarts", "scope")

    def __init__(self, name: str, actor: ActorFn) -> None:
        super().__init__()
        self.name = name
        self.actor = actor
        self.scope = trio.CancelScope()
        self.done: trio.Event | None = None  # made by ``stop``, set when the child has ended
        self.restarts = 0
        self.cooldowns: Iterator[float] | None = None  # made at the first crash loop


class Supervisor:
    """Named supervised children inside one nursery; children can be started and stopped.

    A child whose crashes exceed the policy's intensity is marked failed, waits a cool-off and
    is started again; it stays in ``running`` meanwhile (it is still wanted), and ``stop``
    ends the wait as it would end the actor.
    """

    def __init__(
        self, nursery: trio.Nursery, policy: RestartPolicy, rng: random.Random | None
    ) -> None:
        self._nursery = nursery
        self._policy = policy
        self._rng = rng or random.Random()
        self._children: dict[str, _Child] = {}
        self._place = current_place()

    @property
    def running(self) -> frozenset[str]:
        return frozenset(self._children)

    def _report(self, name: str, **changes: object) -> None:
        if self._place is not None:
            self._place[0].set(f"{self._place[1]}/{name}", **changes)

    async def _run(self, child: _Child) -> None:
        """The child's task: one frame above the actor's. ``supervise`` for ever, a crash loop
        becoming a failed state and a cool-off."""
        try:
            with child.scope:
                while True:
                    started = trio.current_time()
                    try:
                        await child.actor()
                        return
                    except Exception as exc:
                        delay = self._crashed(child, exc, started)
                    await trio.sleep(delay)
                    self._report(child.name, state="running", next_start="")
        finally:
            if self._children.get(child.name) is child:
                del self._children[child.name]
            if self._place is not None:  # a stopped child is no longer news
                self._place[0].remove(f"{self._place[1]}/{child.name}")
            if child.done is not None:
                child.done.set()

    def _crashed(self, child: _Child, exc: Exception, started: float) -> float:
        """Log and report a crash; the delay before the next start (a restart's backoff, or
        the cool-off of a crash loop)."""
        name, policy = child.name, self._policy
        count = child.crashed(started, policy.period)
        child.restarts += 1
        try:
            delay = _after_crash(name, exc, count, child, policy, self._rng)
        except CrashLoop as loop:
            child.forget()
            if child.cooldowns is None:
                child.cooldowns = doubling(policy.cooldown, policy.max_cooldown)
            delay = next(child.cooldowns)
            log.error("actor %s crashed %d times within %g s: marked failed, trying again "
                      "in %.0f s (last error: %s)", name, loop.crashes, policy.period,
                      delay, describe(exc))  # fmt: skip
            self._report(name, state="failed", restarts=child.restarts,
                         recent_crashes=loop.crashes, last_error=describe(exc),
                         last_crash=wall_clock(), next_start=wall_clock(delay))  # fmt: skip
            return delay
        self._report(name, state="restarting", restarts=child.restarts, recent_crashes=count,
                     last_error=describe(exc), last_crash=wall_clock(),
                     next_start=wall_clock(delay))  # fmt: skip
        return delay

    def start(self, name: str, actor: ActorFn) -> None:
        """Start ``actor`` under supervision as ``name`` (names are unique)."""
        if name in self._children:
            raise ValueError(f"actor {name!r} is already running")
        child = self._children[name] = _Child(name, actor)
        # The task is named by the child's own string (no "actor:" copy: 1 MB at 10,000).
        self._nursery.start_soon(self._run, child, name=name)

    async def stop(self, name: str) -> None:
        """Cancel ``name`` and wait until it has finished its cleanup."""
        child = self._children.get(name)
        if child is None:
            return
        if child.done is None:
            child.done = trio.Event()
        child.scope.cancel()
        await child.done.wait()


@asynccontextmanager
async def open_supervisor(
    policy: RestartPolicy = RestartPolicy(), rng: random.Random | None = None
) -> AsyncIterator[Supervisor]:
    """A supervisor whose children are cancelled when the block exits."""
    async with trio.open_nursery() as nursery:
        sup = Supervisor(nursery, policy, rng)
        try:
            yield sup
        finally:
            nursery.cancel_scope.cancel()
