"""One I/O controller: adopt the kernel's existing connection or connect, and keep trying.

Retries: a fast first retry, then exponential backoff with jitter. With NCC set by a CDC and
``connect-attempts-on-ncc=N``, it stops after N failures ('gave-up') until the connector sends
``WantedChanged`` with NCC cleared; then it connects at once (upstream §5.5). The connector
never restarts an actor to change what it wants: it sends ``WantedChanged`` on the actor's
event channel, so a live connection is never touched by a log page update.

The kernel removing the device (``DeviceRemoved``) means reconnect after the fast retry.
Cancellation never disconnects: only the connector decides disconnects, so stopping or
restarting stacd drops nothing. Nor does it lose a connect the kernel made: the connect is
shielded, and what the actor holds is written into its ``Mailbox`` before any status is sent,
where the connector reads it once it has stopped the actor (``Mailbox.held``). Nor does a
kill lose whose it is: with ``intents`` (the ownership registry) the connect is recorded
before it is made and claimed the moment the kernel answers (``stas.coexist.registry``).

Connects run in parallel across actors, at most ``limiter``'s total at a time (the connector
shares one), so a storm against unreachable targets cannot occupy every worker thread. The
kernel serialises the fabrics writes themselves (one global ``nvmf_dev_mutex``, held for the
whole connect); what overlaps is everything around them (sysfs reads, uevents, status
updates), so the kernel's connects follow one another back to back instead of waiting on us.

stacd runs one actor per I/O controller (10,000 in benchmark 4), so what each one holds while
it waits counts: a slotted actor, no cancel scope while it waits for an event with no
deadline, one coroutine frame less (``run_ioc_actor`` hands back ``_Ioc.run``'s coroutine),
and ``Mailbox``, a single-reader mailbox of a few hundred bytes where a Trio memory channel
pair costs about two kilobytes. Connected and idle, the actor waits in ``run``'s own frame on
Trio's park itself (no ``wait_event`` or ``receive`` frame, no bound method): about 2 KB.
"""

from __future__ import annotations

import errno
import logging
import math
import random
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any, Protocol, TypeAlias

import attrs
import outcome  # trio's own dependency: what trio.lowlevel.reschedule takes
import trio

from stas.backoff import LadderRetry
from stas.kernel.api import ConnectRequest, Kernel, KernelController, KernelError
from stas.messages import IocStatus, IocUpdate, IocWanted
from stas.plan import find_kernel

log = logging.getLogger("stas.ioc")

NO_DEVICE = "nvme?"


@attrs.frozen
class IocSettings(LadderRetry):
    """Timers of one IOC actor (seconds)."""

    fast_retry: float = 3.0
    backoff_initial: float = 5.0
    backoff_max: float = 60.0
    jitter: float = 0.1
    connect_attempts_on_ncc: int = 0


# --- events the connector routes to one actor -----------------------------------------------


@attrs.frozen
class DeviceRemoved:
    """The kernel deleted this device (uevent 'remove', or absent from a resync)."""

    device: str


@attrs.frozen
class KernelFound:
    """A resync found a kernel controller matching this actor's Tid (e.g. made by nvme-cli)."""

    controller: KernelController


@attrs.frozen
class WantedChanged:
    """New wanted state (NCC, parameters, listing DCs) and the request to use from now on."""

    wanted: IocWanted
    request: ConnectRequest


IocEvent = DeviceRemoved | KernelFound | WantedChanged


class Intents(Protocol):
    """Where a connect is recorded before it is made (``stas.coexist.registry.Registry``)."""

    def intend(self, request: ConnectRequest) -> str | None: ...

    def settle(self, intent: str | None, device: str | None) -> None: ...


# Builds the connect request for a wanted controller from the current configuration (None:
# its options are invalid now, already logged). The connector's, shared by every actor.
Requests: TypeAlias = Callable[[IocWanted], ConnectRequest | None]


class EventSource(Protocol):
    """What an actor reads its events from: a Trio receive channel or a ``Mailbox``."""

    def receive(self) -> Awaitable[IocEvent]: ...


class Mailbox:
    """A bounded mailbox with one reader: ``send_nowait``/``close`` like a memory channel's
    send side, ``receive`` like its receive side (``EndOfChannel`` once closed and drained).

    The connector holds one per IOC actor. A Trio memory channel pair (state, two channel
    objects, a deque and two OrderedDicts) costs about 2 KB; this costs a slotted object and,
    only while events are queued, a short list. ``send_nowait`` raises ``trio.WouldBlock``
    when ``size`` events wait unread, so a stuck actor is noticed, as with a channel.

    The other way, ``held`` is what the actor holds (the controller it connected or adopted,
    and ``held_adopted``), written by the actor the moment it knows, before any status is
    sent: once the actor has ended the connector reads it, so a connect that succeeded just
    as the actor was stopped (its 'connected' status never sent, or sent too late) is not lost.
    """

    __slots__ = ("_closed", "_items", "_reader", "_size", "held", "held_adopted")

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"mailbox size must be at least 1, got {size}")
        self._size = size
        self._items: list[IocEvent] | None = None
        self._reader: trio.lowlevel.Task | None = None
        self._closed = False
        self.held: KernelController | None = None
        self.held_adopted = False

    def send_nowait(self, event: IocEvent) -> None:
        if self._closed:
            raise trio.ClosedResourceError("the mailbox is closed")
        if self._reader is not None:  # the reader waits, so nothing is queued: hand it over
            reader, self._reader = self._reader, None
            trio.lowlevel.reschedule(reader, outcome.Value(event))
            return
        if self._items is None:
            self._items = []
        if len(self._items) >= self._size:
            raise trio.WouldBlock
        self._items.append(event)

    def close(self) -> None:
        """No more events; the reader gets what is queued, then ``EndOfChannel``."""
        self._closed = True
        if self._reader is not None:
            reader, self._reader = self._reader, None
            trio.lowlevel.reschedule(reader, outcome.Error(trio.EndOfChannel()))

    def receive(self) -> Awaitable[IocEvent]:
        """The next event: ``await box.receive()``. An awaitable, not a coroutine (so not for
        ``start_soon``: Trio refuses it): see ``__await__``."""
        return self

    def __await__(self) -> Generator[Any, None, IocEvent]:
        """Run by the awaiting task itself. With nothing queued it parks on Trio's own wait,
        with no coroutine of ours around it: one frame less per idle actor (~200 B each)."""
        if self._items or self._closed:
            return self._ready().__await__()
        if self._reader is not None:
            raise trio.BusyResourceError("another task is already receiving from this mailbox")
        # A cancel pending at the park is delivered at once (the abort callback: this
        # object, so no bound method is made per wait).
        self._reader = trio.lowlevel.current_task()
        wait: Coroutine[Any, Any, IocEvent] = trio.lowlevel.wait_task_rescheduled(self)
        return wait.__await__()

    async def _ready(self) -> IocEvent:
        """Something is queued, or the mailbox is closed: a checkpoint, then it."""
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._items:
            event = self._items.pop(0)
            if not self._items:
                self._items = None
            await trio.lowlevel.cancel_shielded_checkpoint()
            return event
        await trio.lowlevel.cancel_shielded_checkpoint()
        raise trio.EndOfChannel

    def __call__(self, _: object) -> trio.lowlevel.Abort:
        """Trio's abort callback: the reader was cancelled while waiting; nobody waits now."""
        self._reader = None
        return trio.lowlevel.Abort.SUCCEEDED


class _Ioc:
    __slots__ = (
        "box", "device", "events", "failures", "generation", "intents", "kernel", "last_error",
        "limiter", "request", "requests", "rng", "settings", "status", "updates", "wanted",
    )  # fmt: skip

    def __init__(
        self,
        wanted: IocWanted,
        updates: trio.MemorySendChannel[IocUpdate],
        kernel: Kernel,
        request: ConnectRequest | None,
        settings: IocSettings,
        events: EventSource | None,
        rng: random.Random,
        limiter: trio.CapacityLimiter,
        status: IocStatus | None,
        generation: int = 0,
        intents: Intents | None = None,
        requests: Requests | None = None,
    ) -> None:
        self.generation = generation
        self.requests = requests
        self.intents = intents
        self.wanted, self.updates, self.kernel, self.request = wanted, updates, kernel, request
        self.settings, self.events, self.rng = settings, events, rng
        self.box = events if isinstance(events, Mailbox) else None  # kept after EndOfChannel
        self.limiter = limiter
        self.status = status or IocStatus(
            tid=wanted.tid, origin=wanted.origin, params=wanted.params, ncc=wanted.ncc
        )
        self.device: str | None = None
        self.failures = 0
        self.last_error = ""

    async def publish(self, **changes: object) -> None:
        new = attrs.evolve(self.status, **changes)  # type: ignore[arg-type]
        if new != self.status:
            self.status = new
            await self.updates.send(IocUpdate(new, self.generation))

    def exhausted(self) -> bool:
        limit = self.settings.connect_attempts_on_ncc
        return self.wanted.ncc and limit > 0 and self.failures >= limit

    def hold(self, ctrl: KernelController | None, *, adopted: bool = False) -> None:
        """What the actor holds, told to the connector's side of the mailbox at once (no
        checkpoint before it: a cancel cannot fall between the kernel's answer and this)."""
        self.device = None if ctrl is None else ctrl.device
        if self.box is not None:
            self.box.held, self.box.held_adopted = ctrl, adopted

    async def connected(self, ctrl: KernelController, *, adopted: bool) -> None:
        self.hold(ctrl, adopted=adopted)
        self.failures, self.last_error = 0, ""
        if self.requests is not None:
            self.request = None  # made again from ``requests`` if it must connect again
        await self.publish(
            device=ctrl.device,
            state="connected",
            connected=True,
            adopted=adopted,
            last_error="",
            connect_attempts=0,
        )

    async def on_event(self, ev: IocEvent) -> bool:
        """Apply one event; True if it should end the current wait."""
        if isinstance(ev, DeviceRemoved):
            if ev.device != self.device:
                return False
            log.info("%s: the kernel removed %s; reconnecting", self.wanted.tid, ev.device)
            self.hold(None)
            await self.publish(device=NO_DEVICE, state="backoff", connected=False, adopted=False)
            return True
        if isinstance(ev, KernelFound):
            if self.device is not None:
                return False
            log.info("%s: found existing %s; adopting", self.wanted.tid, ev.controller.device)
            await self.connected(ev.controller, adopted=True)
            return True
        ncc_cleared = self.wanted.ncc and not ev.wanted.ncc
        self.wanted = ev.wanted
        if self.device is None or self.requests is None:
            self.request = ev.request
        await self.publish(origin=ev.wanted.origin, params=ev.wanted.params, ncc=ev.wanted.ncc)
        if self.device is None and ncc_cleared:
            log.info("%s: NCC cleared; connecting again", self.wanted.tid)
            self.failures = 0
            return True
        return self.device is None and self.exhausted()

    async def wait(self, timeout: float) -> bool:
        """Handle events for up to ``timeout`` s; True if one of them ended the wait early."""
        if timeout == math.inf and self.events is not None:
            return await self.wait_event()
        deadline = trio.current_time() + timeout
        while True:
            with trio.move_on_at(deadline):
                if self.events is None:
                    await trio.sleep_forever()
                try:
                    ev = await self.events.receive()
                except trio.EndOfChannel:
                    self.events = None  # the connector is going away; timers still run
                    continue
                if await self.on_event(ev):
                    return True
                continue
            return False

    async def wait_event(self) -> bool:
        """Handle events until one ends the wait (no deadline, so no cancel scope to hold)."""
        while self.events is not None:
            try:
                ev = await self.events.receive()
            except trio.EndOfChannel:
                self.events = None  # the connector is going away; timers still run
                break
            if await self.on_event(ev):
                return True
        await trio.sleep_forever()
        raise AssertionError("unreachable")  # pragma: no cover

    async def attempt(self) -> float:
        """One connect; returns the delay before the next one (0 after success or adoption)."""
        if self.request is None and self.requests is not None:
            self.request = self.requests(self.wanted)
        request = self.request
        if request is None:  # its options are invalid now (logged): the config may change
            self.failures += 1
            await self.publish(state="backoff")
            return self.settings.retry_delay(self.failures, self.rng)
        async with self.limiter:  # a slot first: "connecting" means in the kernel's hands
            await self.publish(state="connecting", connect_attempts=self.failures + 1)
            # Shielded: a stop must not land between the kernel making the device and
            # ``hold`` recording it (the real kernel's connect still reads sysfs after the
            # fabrics write). The kernel's write cannot be interrupted anyway.
            with trio.CancelScope(shield=True):
                intent = self.intents.intend(request) if self.intents else None
                try:
                    result: KernelController | KernelError = await self.kernel.connect(request)
                except KernelError as error:
                    result = error
                made = None if isinstance(result, KernelError) else result
                if made is not None:
                    self.hold(made)
                if self.intents is not None:  # the intent becomes the device's entry
                    self.intents.settle(intent, made.device if made is not None else None)
        if isinstance(result, KernelError):
            exc = result
            if exc.errno == errno.EALREADY:
                found = find_kernel(self.wanted.tid, await self.kernel.list_controllers())
                if found is not None:
                    log.info("%s: already connected as %s; adopting", self.wanted.tid, found.device)
                    await self.connected(found, adopted=True)
                    return 0.0
            self.failures += 1
            if str(exc) != self.last_error:
                log.warning("%s: connect failed: %s", self.wanted.tid, exc)
                self.last_error = str(exc)
            await self.publish(state="backoff", last_error=self.last_error)
            return self.settings.retry_delay(self.failures, self.rng)
        log.info("%s: connected as %s", self.wanted.tid, result.device)
        await self.connected(result, adopted=False)
        return 0.0

    async def run(self, adopt: KernelController | None) -> None:
        if adopt is not None:
            log.info("%s: adopting existing %s", self.wanted.tid, adopt.device)
            await self.connected(adopt, adopted=True)
        delay = 0.0
        while True:
            if self.device is not None:
                # Connected and idle, most of an actor's life: the events are read here, not
                # in ``wait_event``'s frame (one frame less held per actor while it waits).
                while self.device is not None and self.events is not None:
                    try:
                        ev = await self.events.receive()
                    except trio.EndOfChannel:
                        self.events = None  # the connector is going away; nothing can change
                        break
                    await self.on_event(ev)
                    del ev  # not kept alive while the actor waits for the next one
                if self.device is not None:
                    await trio.sleep_forever()
                delay, self.failures = self.settings.fast_retry, 0
                continue
            if self.exhausted():
                log.info(
                    "%s: NCC set and %d attempts failed; waiting for the CDC",
                    self.wanted.tid,
                    self.failures,
                )
                await self.publish(state="gave-up")
                while self.exhausted() and self.device is None:
                    await self.wait(math.inf)
                delay = 0.0
                continue
            if delay > 0:
                await self.publish(state="backoff")
                await self.wait(delay)
                delay = 0.0
                continue
            delay = await self.attempt()


def run_ioc_actor(
    wanted: IocWanted,
    updates: trio.MemorySendChannel[IocUpdate],
    *,
    kernel: Kernel,
    request: ConnectRequest | None,
    settings: IocSettings = IocSettings(),
    events: EventSource | None = None,
    adopt: KernelController | None = None,
    rng: random.Random | None = None,
    limiter: trio.CapacityLimiter | None = None,
    status: IocStatus | None = None,
    generation: int = 0,
    intents: Intents | None = None,
    requests: Requests | None = None,
) -> Coroutine[Any, Any, None]:
    """Run until cancelled; publishes an IocStatus on every visible change.

    ``limiter`` bounds connects in flight across all actors sharing it (default: this one only).
    ``status``: the status to start from (the connector's, so that the log page entry it
    carries is shared, not copied into a second status on every update).
    ``generation``: the connector's number for this start, carried by every IocUpdate.
    ``intents``: each connect recorded before it is made, claimed when made (the registry).
    ``requests``: with it, the actor holds ``request`` only until connected and asks
    ``requests`` for one when it must connect again (a request is ~250 B; 10,000 actors
    connected and idle need none); ``request`` None: ask it at the first connect too.
    Returns the actor's coroutine (await it or start it): no wrapper frame held per actor.
    """
    actor = _Ioc(
        wanted, updates, kernel, request, settings, events, rng or random.Random(),
        limiter or trio.CapacityLimiter(1), status, generation, intents, requests,
    )  # fmt: skip
    return actor.run(adopt)
