"""stafd's per-discovery-controller actor: connect, keep connected, keep the log page current.

One actor per DC. It owns the DC's state machine and every timer (so MockClock drives it in
tests); the backend (``stas.actors.dc_backend``) only opens connections and reads pages, so
the same actor serves a userspace session or a kernel controller.

What it improves on upstream (§5.4, §8): ``log_page_changed`` is only set when the content
really changed (upstream fires on every fetch, making stacd reconcile everything); AENs are
coalesced without a fixed soak delay; failures back off exponentially instead of hammering a
dead DC every 60 s forever at full rate, and are logged once instead of on every retry; the
cached log page survives connection loss so stacd keeps its I/O controllers.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, suppress

import attrs
import trio

from stas.actors.dc_backend import (
    ConnectionLostEvent,
    DcBackend,
    DcConnection,
    LogPageChangedEvent,
    ReconnectedEvent,
)
from stas.messages import DcStatus, DcUpdate, DcWanted
from stas.nvme.errors import ConnectionLost, DiscoveryError, NvmeStatusError, ProtocolError

log = logging.getLogger(__name__)

NO_DEVICE = "nvme?"  # upstream's device name for a controller that is not connected
STILL_FAILING_EVERY = 10  # attempts between INFO reminders while a DC stays unreachable
# What a misbehaving or absent peer can make a backend raise; anything else is a bug.
PEER_ERRORS = (DiscoveryError, ProtocolError, NvmeStatusError, OSError)

_Lose = Callable[[str], None]  # ends the current connection, giving the reason


@attrs.frozen
class DcSettings:
    """Timers of one DC actor (seconds); the defaults follow upstream where it has a value."""

    fast_retry: float = 3.0  # first retry after a failure or a loss (upstream)
    backoff_initial: float = 5.0
    backoff_max: float = 60.0
    jitter: float = 0.1  # +/- fraction, so many hosts do not retry in lockstep
    log_page_retry: float = 20.0  # Get Log Page retry while connected (upstream)
    persistent: bool = True  # keep the connection and listen for AENs
    cleanup_timeout: float = 10.0  # upper bound for the backend's disconnect

    def retry_delay(self, failures: int, rng: random.Random) -> float:
        """Delay before the next attempt after ``failures`` consecutive failures (>= 1)."""
        if failures <= 1:
            return self.fast_retry
        base = min(self.backoff_initial * 2.0 ** min(failures - 2, 60), self.backoff_max)
        return max(0.0, base * (1.0 + self.jitter * rng.uniform(-1.0, 1.0)))


def describe(exc: BaseException) -> str:
    """A one-line reason for logs and ``last_error`` (no traceback, no repr noise)."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _plain(exc: BaseException) -> BaseException:
    """A group of nothing but Cancelled (our nursery's) as one Cancelled, for the backend."""
    if isinstance(exc, BaseExceptionGroup):
        matched, rest = exc.split(trio.Cancelled)
        if matched is not None and rest is None:
            leaf: BaseException = matched
            while isinstance(leaf, BaseExceptionGroup):
                leaf = leaf.exceptions[0]
            return leaf
    return exc


class _DcActor:
    """The state of one actor run; lives only inside ``run_dc_actor``."""

    def __init__(
        self,
        wanted: DcWanted,
        updates: trio.MemorySendChannel[DcUpdate],
        backend: DcBackend,
        settings: DcSettings,
        initial: DcStatus | None,
        rng: random.Random,
    ) -> None:
        self.wanted = wanted
        self.tid = wanted.tid
        self.updates = updates
        self.backend = backend
        self.settings = settings
        self.rng = rng
        base = initial or DcStatus(tid=wanted.tid, origin=wanted.origin)
        self.status = attrs.evolve(
            base,
            tid=wanted.tid,
            origin=wanted.origin,
            params=dict(wanted.params),
            device=NO_DEVICE,
            state="idle",
            connected=False,
            connect_attempts=0,
            last_error="",
            registered=False,
        )
        self.warm = initial is not None
        self.published: DcStatus | None = None
        self.lock = trio.Lock()  # keeps snapshots in order when two tasks publish
        self.scope = trio.CancelScope()
        self.logged_error = ""

    # --- publishing -----------------------------------------------------------------------

    async def publish(self, *, force_changed: bool = False, **changes: object) -> None:
        """Apply ``changes``; send a DcUpdate only if something visible changed."""
        async with self.lock:
            old = self.status
            new = attrs.evolve(old, **changes)  # type: ignore[arg-type]
            changed = force_changed or (new.log_pages, new.genctr) != (old.log_pages, old.genctr)
            self.status = new
            if new == self.published and not changed:
                return
            try:
                await self.updates.send(DcUpdate(new, log_page_changed=changed))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                # Nobody reads our updates any more: the finder is gone, so are we.
                log.debug("%s: update channel closed; stopping", self.tid)
                self.scope.cancel()
                await trio.lowlevel.checkpoint()
                return
            self.published = new

    @staticmethod
    def link_fields(conn: DcConnection) -> dict[str, object]:
        return {
            "device": conn.device,
            "dctype": conn.dctype,
            "cntrltype": conn.cntrltype,
            "registered": conn.registered,
        }

    # --- the connect ladder ---------------------------------------------------------------

    async def run(self) -> None:
        with self.scope:
            if self.warm:
                await self.publish(force_changed=bool(self.status.log_pages))
            failures = 0
            while True:
                attempts = self.status.connect_attempts + 1
                await self.publish(state="connecting", connect_attempts=attempts)
                was_up, reason = await self.attempt(attempts)
                if not was_up:
                    failures += 1
                    delay = self.settings.retry_delay(failures, self.rng)
                    self.log_failure(reason, attempts, delay)
                    await self.publish(state="backoff", last_error=reason)
                    await trio.sleep(delay)
                    continue
                failures = 1  # a loss is the first step of the ladder
                self.logged_error = ""
                log.warning(
                    "%s: connection lost: %s; reconnecting in %g s",
                    self.tid,
                    reason,
                    self.settings.fast_retry,
                )
                await self.publish(
                    state="disconnected",
                    connected=False,
                    device=NO_DEVICE,
                    registered=False,
                    connect_attempts=0,
                    last_error=reason,
                )
                await trio.sleep(self.settings.fast_retry)

    def log_failure(self, reason: str, attempts: int, delay: float) -> None:
        """WARNING on the first failure and when the reason changes; INFO now and then."""
        if reason != self.logged_error:
            self.logged_error = reason
            log.warning("%s: cannot connect: %s (retrying in %.0f s)", self.tid, reason, delay)
        elif attempts % STILL_FAILING_EVERY == 0:
            log.info("%s: still failing after %d attempts: %s", self.tid, attempts, reason)

    def log_success(self, conn: DcConnection, attempts: int) -> None:
        self.logged_error = ""
        after = f" after {attempts} attempts" if attempts > 1 else ""
        log.info(
            "%s: connected%s (device %s, dctype %s)", self.tid, after, conn.device, conn.dctype
        )

    async def attempt(self, attempts: int) -> tuple[bool, str]:
        """One connection: (False, why connecting failed) or (True, why it ended).

        ``guard`` is entered before the backend's block and left after it, so the backend's
        own scopes nest inside it; on the way out it is shielded (the backend may deregister
        even when we are cancelled) and given a deadline (it may not take forever).
        """
        escaping: BaseException | None = None
        with trio.CancelScope() as guard:
            try:
                cm = self.backend.connect(
                    self.tid, self.wanted.params, persistent=self.settings.persistent
                )
                conn = await cm.__aenter__()
            except PEER_ERRORS as exc:
                return False, describe(exc)
            self.log_success(conn, attempts)
            try:
                await self.publish(
                    state="connected",
                    connected=True,
                    connect_attempts=0,
                    last_error="",
                    **self.link_fields(conn),
                )
                reason = await self.serve(conn)
            except BaseException as exc:
                escaping = exc
                self.bound_cleanup(guard)
                await self.leave(cm, _plain(exc))
                raise
            self.bound_cleanup(guard)
            await self.leave(cm, None)
            return True, reason
        # Only reached when the guard's deadline cut the backend's disconnect short.
        log.warning(
            "%s: disconnect did not finish within %g s", self.tid, self.settings.cleanup_timeout
        )
        if escaping is not None and not isinstance(_plain(escaping), trio.Cancelled):
            raise escaping
        await trio.lowlevel.checkpoint_if_cancelled()  # we were being stopped: stop now
        return True, "disconnect timed out"

    def bound_cleanup(self, guard: trio.CancelScope) -> None:
        guard.shield = True
        guard.deadline = trio.current_time() + self.settings.cleanup_timeout

    async def leave(
        self, cm: AbstractAsyncContextManager[DcConnection], exc: BaseException | None
    ) -> None:
        """Exit the backend's block (DIM deregister, shutdown); peer errors are only logged."""
        try:
            if exc is None:
                await cm.__aexit__(None, None, None)
            else:
                await cm.__aexit__(type(exc), exc, exc.__traceback__)
        except PEER_ERRORS as err:
            log.info("%s: disconnect: %s", self.tid, describe(err))

    # --- while connected ------------------------------------------------------------------

    async def serve(self, conn: DcConnection) -> str:
        """Fetch the log page now and after every change notice; return why the link died."""
        lost: list[str] = []
        wake_send, wake_recv = trio.open_memory_channel[None](1)
        wake_send.send_nowait(None)  # the first fetch
        async with trio.open_nursery() as nursery:

            def lose(reason: str) -> None:
                if not lost:
                    lost.append(reason)
                nursery.cancel_scope.cancel()

            nursery.start_soon(self.watch_events, conn, wake_send, lose)
            nursery.start_soon(self.fetch_loop, conn, wake_recv, lose)
        return lost[0] if lost else "connection closed"

    async def watch_events(
        self,
        conn: DcConnection,
        wake: trio.MemorySendChannel[None],
        lose: _Lose,
    ) -> None:
        async for event in conn.events():
            if isinstance(event, ConnectionLostEvent):
                lose(event.reason)
                return
            if isinstance(event, LogPageChangedEvent | ReconnectedEvent):
                log.debug("%s: %s: reading the log page again", self.tid, type(event).__name__)
                with suppress(trio.WouldBlock):  # a fetch is already due: it sees this too
                    wake.send_nowait(None)
            await self.publish(**self.link_fields(conn))
        lose("the connection's event stream ended")

    async def fetch_loop(
        self, conn: DcConnection, wake: trio.MemoryReceiveChannel[None], lose: _Lose
    ) -> None:
        retry = self.settings.log_page_retry
        failing = ""
        while True:
            await wake.receive()
            while True:
                try:
                    page = await conn.get_log_page()
                except ConnectionLost as exc:
                    lose(describe(exc))
                    return
                except PEER_ERRORS as exc:
                    reason = describe(exc)
                    if reason != failing:
                        failing = reason
                        log.warning(
                            "%s: cannot read the discovery log page: %s (retrying every %g s)",
                            self.tid,
                            reason,
                            retry,
                        )
                    await self.publish(last_error=f"Get Log Page: {reason}")
                    with trio.move_on_after(retry):
                        await wake.receive()  # a change notice retries at once
                    continue
                if failing:
                    log.info("%s: discovery log page read again", self.tid)
                    failing = ""
                await self.publish(
                    genctr=page.genctr,
                    log_pages=tuple(page.entries),
                    last_error="",
                    **self.link_fields(conn),
                )
                break


async def run_dc_actor(
    wanted: DcWanted,
    updates: trio.MemorySendChannel[DcUpdate],
    *,
    backend: DcBackend,
    settings: DcSettings = DcSettings(),
    initial: DcStatus | None = None,
    rng: random.Random | None = None,
) -> None:
    """Keep ``wanted`` connected and publish its status until cancelled.

    ``initial`` (warm restart) is published at once, cached log page included, so the
    finder and stacd see the last known entries before the DC answers. Peer errors never
    escape; only bugs reach the supervisor. Returns quietly when ``updates`` is closed.
    """
    actor = _DcActor(wanted, updates, backend, settings, initial, rng or random.Random())
    await actor.run()
