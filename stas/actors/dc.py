"""stafd's per-discovery-controller actor: connect, keep connected, keep the log page current.

One actor per DC. It owns the DC's state machine and every timer (so MockClock drives it in
tests); the backend (``stas.actors.dc_backend``) only opens connections and reads pages, so
the same actor serves a userspace session or a kernel controller.

What it improves on upstream (§5.4, §8): ``log_pages_changed`` is only set when the content
really changed (upstream fires on every fetch, making stacd reconcile everything); AENs are
coalesced without a fixed soak delay; failures back off exponentially instead of hammering a
dead DC every 60 s forever at full rate, and are logged once instead of on every retry; the
cached log page survives connection loss so stacd keeps its I/O controllers.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager, suppress
from functools import partial
from typing import TYPE_CHECKING, Any, TypedDict

import attrs
import trio
from trio_util import wait_any

from stas.actors.dc_backend import (
    ConnectionLostEvent,
    DcBackend,
    DcConnection,
    LogPagesChangedEvent,
    ReconnectedEvent,
)
from stas.actors.dc_budget import EntryBudget
from stas.backoff import LadderRetry
from stas.messages import DcStatus, DcUpdate, DcWanted
from stas.nvme.errors import ConnectionLost, DiscoveryError, NvmeStatusError, ProtocolError
from stas.nvme.logpage import LogPageEntry

if TYPE_CHECKING:
    from stas.nvme.hostid import HostIdentity

log = logging.getLogger(__name__)

NO_DEVICE = "nvme?"  # upstream's device name for a controller that is not connected
MAX_WARNED = 16  # distinct errors remembered per failure streak (a peer can vary its text)
# What a misbehaving or absent peer can make a backend raise; anything else is a bug.
PEER_ERRORS = (DiscoveryError, ProtocolError, NvmeStatusError, OSError)

_Lose = Callable[[str], None]  # ends the current connection, giving the reason


@attrs.frozen
class DcSettings(LadderRetry):
    """Timers of one DC actor (seconds); the defaults follow upstream where it has a value."""

    fast_retry: float = 3.0  # first retry after a failure or a loss (upstream)
    backoff_initial: float = 5.0
    backoff_max: float = 60.0
    jitter: float = 0.1  # +/- fraction, so many hosts do not retry in lockstep
    log_page_retry: float = 20.0  # Get Log Page retry while connected (upstream)
    persistent: bool = True  # keep the connection and listen for AENs
    cleanup_timeout: float = 10.0  # upper bound for the backend's disconnect
    # A connection must have read a log page and lasted this long before its loss counts as
    # "was fine" (fast retry); shorter ones keep climbing the ladder, so a DC that accepts
    # and then breaks every connection is not hammered every 3 s forever.
    healthy_after: float = 120.0
    summary_every: float = 300.0  # INFO "failed N times in T s" while a streak lasts
    # stafd.conf [Global] connection options as controller parameters (``controller=`` keys
    # override them); empty means the backend's own defaults.
    connection: Mapping[str, str] = attrs.field(factory=dict, eq=False)
    entries: EntryBudget | None = attrs.field(default=None, eq=False)
    # The host identity the DC was started with: every connection registers (DIM) and
    # deregisters under it, whatever a reload does meanwhile. None: the backend's own.
    identity: HostIdentity | None = attrs.field(default=None, eq=False)


# [Global] option -> its controller= key; the same words, so one parser serves both.
_GLOBAL_CONNECTION_KEYS = {
    "kato": "kato",
    "hdr_digest": "hdr-digest",
    "data_digest": "data-digest",
    "queue_size": "queue-size",
    "reconnect_delay": "reconnect-delay",
    "ctrl_loss_tmo": "ctrl-loss-tmo",
    "disable_sqflow": "disable-sqflow",
    "tls_key": "tls-key",  # NVMe/TCP TLS (stas.tls_policy); None when unset
    "keyring": "keyring",
}


def connection_params(config: Any, host_key: str | None = None) -> dict[str, str]:
    """stafd.conf's [Global] connection options (and sys.conf's host key) as DC parameters.

    ``config`` is a ``ServiceConfig``. Options left unset are omitted, so the backend's own
    default applies; a ``controller=`` entry's keys override these (``DcSettings.connection``).
    The host key becomes the DH-HMAC-CHAP host secret of DCs that have none of their own, as
    upstream's ``nvme.host`` key does.
    """
    out: dict[str, str] = {}
    for attr, key in _GLOBAL_CONNECTION_KEYS.items():
        value = getattr(config, attr, None)
        if value is not None:
            out[key] = str(value).lower() if isinstance(value, bool) else str(value)
    out["pleo"] = "enabled" if getattr(config, "pleo", True) else "disabled"
    if getattr(config, "tls", False) is True:
        out["tls"] = "true"
    if host_key:
        out["dhchap-secret"] = host_key
    return out


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


class _LinkFields(TypedDict):
    """The DcStatus fields the connection decides (``publish(**link_fields(conn))``)."""

    device: str
    link: str
    dctype: str
    cntrltype: str
    registered: bool


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
        self.params = {**settings.connection, **wanted.params}  # controller= keys win
        self.connect_args: dict[str, Any] = {"persistent": settings.persistent}
        if settings.identity is not None:
            self.connect_args["identity"] = settings.identity
        # the current failure streak: ended only by a healthy connection
        self.warned: set[str] = set()
        self.streak_failures = 0
        self.streak_start = 0.0
        self.summary_at = 0.0
        self.last_reason = ""
        self.connected_in_streak = False
        # the current connection: when it came up and whether it read a log page
        self.up_since = 0.0
        self.page_read = False

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
                await self.updates.send(DcUpdate(new, log_pages_changed=changed))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                # Nobody reads our updates any more: the finder is gone, so are we.
                log.debug("%s: update channel closed; stopping", self.tid)
                self.scope.cancel()
                await trio.lowlevel.checkpoint()
                return
            self.published = new

    @staticmethod
    def link_fields(conn: DcConnection) -> _LinkFields:
        return {
            "device": conn.device,
            "link": getattr(conn, "link", ""),
            "dctype": conn.dctype,
            "cntrltype": conn.cntrltype,
            "registered": conn.registered,
        }

    def capped(self, entries: tuple[LogPageEntry, ...]) -> tuple[LogPageEntry, ...]:
        """What the shared entry budget lets this DC keep of ``entries``."""
        budget = self.settings.entries
        if budget is None:
            return entries
        granted = budget.grant(self.tid, len(entries), name=str(self.tid))
        return entries if granted == len(entries) else entries[:granted]

    # --- the connect ladder ---------------------------------------------------------------

    async def run(self) -> None:
        with self.scope:
            if self.warm:
                pages = self.capped(self.status.log_pages)
                await self.publish(force_changed=bool(pages), log_pages=pages)
            failures = 0
            while True:
                attempts = self.status.connect_attempts + 1
                await self.publish(state="connecting", connect_attempts=attempts)
                was_up, reason = await self.attempt(attempts)
                now = trio.current_time()
                if was_up and self.page_read and now - self.up_since >= self.settings.healthy_after:
                    failures = 0  # it worked for a good while: this loss starts a new streak
                    self.end_streak()
                failures += 1
                delay = self.settings.retry_delay(failures, self.rng)
                self.note_failure(reason, was_up=was_up, delay=delay, now=now)
                if was_up:
                    await self.publish(
                        state="disconnected",
                        connected=False,
                        device=NO_DEVICE,
                        link="",
                        registered=False,
                        connect_attempts=0,
                        last_error=reason,
                    )
                else:
                    await self.publish(state="backoff", last_error=reason)
                await trio.sleep(delay)

    def end_streak(self) -> None:
        self.warned.clear()
        self.streak_failures = 0
        self.connected_in_streak = False

    def warn_once(self, reason: str, text: str, *args: object) -> None:
        """WARNING for the first occurrence of ``reason`` in this streak, DEBUG after that."""
        if reason in self.warned:
            log.debug(text, *args)
            return
        if len(self.warned) < MAX_WARNED:
            self.warned.add(reason)
        log.warning(text, *args)

    def note_failure(self, reason: str, *, was_up: bool, delay: float, now: float) -> None:
        """Count a failed attempt or a lost connection; warn once per reason, sum up now and then.

        A DC that accepts connections and then breaks them (bad PDUs, resets) is one streak:
        its losses climb the same ladder as refused connects, and repeat no warnings.
        """
        if self.streak_failures == 0:
            self.streak_start = self.summary_at = now
        self.streak_failures += 1
        self.last_reason = reason
        if was_up:
            self.warn_once(
                reason, "%s: connection lost: %s; reconnecting in %.0f s", self.tid, reason, delay
            )
        else:
            self.warn_once(
                reason, "%s: cannot connect: %s (retrying in %.0f s)", self.tid, reason, delay
            )
        if now - self.summary_at >= self.settings.summary_every:
            self.summary_at = now
            log.info(
                "%s failed %d times in %.0f s: %s",
                self.tid,
                self.streak_failures,
                now - self.streak_start,
                reason,
            )

    def log_success(self, conn: DcConnection, attempts: int) -> None:
        """INFO for the first connection of a streak; a flapping DC's reconnects are DEBUG."""
        after = f" after {attempts} attempts" if attempts > 1 else ""
        level = logging.DEBUG if self.connected_in_streak else logging.INFO
        self.connected_in_streak = True
        log.log(level, "%s: connected%s (device %s, dctype %s)", self.tid, after, conn.device,
                conn.dctype)  # fmt: skip

    async def attempt(self, attempts: int) -> tuple[bool, str]:
        """One connection: (False, why connecting failed) or (True, why it ended).

        ``guard`` is entered before the backend's block and left after it, so the backend's
        own scopes nest inside it; on the way out it is shielded (the backend may deregister
        even when we are cancelled) and given a deadline (it may not take forever).
        """
        escaping: BaseException | None = None
        with trio.CancelScope() as guard:
            try:
                cm = self.backend.connect(self.tid, self.params, **self.connect_args)
                conn = await cm.__aenter__()
            except PEER_ERRORS as exc:
                return False, describe(exc)
            self.log_success(conn, attempts)
            self.up_since, self.page_read = trio.current_time(), False
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

        def lose(reason: str) -> None:  # the first to lose the link ends both (wait_any)
            if not lost:
                lost.append(reason)

        await wait_any(
            partial(self.watch_events, conn, wake_send, lose),
            partial(self.fetch_loop, conn, wake_recv, lose),
        )
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
            if isinstance(event, LogPagesChangedEvent | ReconnectedEvent):
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
                    if not getattr(conn, "alive", True):
                        lose(reason)  # the link died under the read: one loss, not two
                        return
                    if reason != failing:
                        failing = reason
                        self.warn_once(
                            reason,
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
                self.page_read = True
                await self.publish(
                    genctr=page.genctr,
                    log_pages=self.capped(tuple(page.entries)),
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
    try:
        await actor.run()
    finally:
        if settings.entries is not None:
            settings.entries.release(wanted.tid)
