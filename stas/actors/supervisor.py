"""Supervision for actors: restart a crashed actor with capped, jittered exponential backoff.

Erlang-style restart intensity: more than ``intensity`` crashes within ``period`` seconds means
the actor cannot recover on its own, so the supervisor gives up and fails its parent with
``CrashLoop`` (systemd's ``Restart=on-failure`` then takes over). Every timer is a Trio sleep,
so tests drive it with ``MockClock``.
"""

from __future__ import annotations

import logging
import random
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import attrs
import trio

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

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Backoff before restart number ``attempt`` (1-based)."""
        base: float = min(self.initial_backoff * (2 ** (attempt - 1)), self.max_backoff)
        return max(0.0, base * (1.0 + self.jitter * rng.uniform(-1.0, 1.0)))


class CrashLoop(Exception):
    """An actor crashed too often too quickly; raised into the supervisor's parent."""

    def __init__(self, name: str, crashes: int, period: float) -> None:
        super().__init__(f"actor {name!r} crashed {crashes} times within {period:g} s; giving up")
        self.name = name


async def supervise(
    name: str,
    actor: ActorFn,
    *,
    policy: RestartPolicy = RestartPolicy(),
    rng: random.Random | None = None,
) -> None:
    """Run ``actor()`` until it returns normally, restarting it after each crash."""
    rng = rng or random.Random()
    crashes: deque[float] = deque()
    attempt = 0
    while True:
        started = trio.current_time()
        try:
            await actor()
            return
        except Exception as exc:
            now = trio.current_time()
            if now - started >= policy.period:
                attempt = 0  # it ran fine for a while: start the backoff ladder again
            crashes.append(now)
            while crashes and now - crashes[0] > policy.period:
                crashes.popleft()
            log.error("actor %s crashed: %s", name, exc, exc_info=exc)
            if len(crashes) > policy.intensity:
                raise CrashLoop(name, len(crashes), policy.period) from exc
            attempt += 1
            delay = policy.delay(attempt, rng)
            log.info("actor %s restarts in %.1f s (crash %d)", name, delay, len(crashes))
            await trio.sleep(delay)


class Supervisor:
    """Named supervised children inside one nursery; children can be started and stopped."""

    def __init__(
        self, nursery: trio.Nursery, policy: RestartPolicy, rng: random.Random | None
    ) -> None:
        self._nursery = nursery
        self._policy = policy
        self._rng = rng or random.Random()
        self._children: dict[str, tuple[trio.CancelScope, trio.Event]] = {}

    @property
    def running(self) -> frozenset[str]:
        return frozenset(self._children)

    def start(self, name: str, actor: ActorFn) -> None:
        """Start ``actor`` under supervision as ``name`` (names are unique)."""
        if name in self._children:
            raise ValueError(f"actor {name!r} is already running")
        scope = trio.CancelScope()
        done = trio.Event()
        self._children[name] = (scope, done)

        async def child() -> None:
            try:
                with scope:
                    await supervise(name, actor, policy=self._policy, rng=self._rng)
            finally:
                if self._children.get(name, (None,))[0] is scope:
                    del self._children[name]
                done.set()

        self._nursery.start_soon(child, name=f"actor:{name}")

    async def stop(self, name: str) -> None:
        """Cancel ``name`` and wait until it has finished its cleanup."""
        entry = self._children.get(name)
        if entry is None:
            return
        scope, done = entry
        scope.cancel()
        await done.wait()


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
