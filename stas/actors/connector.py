"""stacd's connector: the shell that runs the pure core in ``connector_core``.

The core decides (what is wanted, what to start, stop, tell, disconnect); this shell owns the
channels, the supervisor of the IOC actors, the timers and the kernel, and carries out the
core's effects one after another (disconnects excepted: below), feeding results (a sysfs
read, a full mailbox) back to the core before the next inbox message, so decisions always see
the kernel they were made about.
Bursts are coalesced by draining the inbox before publishing, not by soak timers.

Every queue is bounded. Messages (inbox, IOC status updates, timers) wait for room rather
than pile up: a stuck connector pushes back on its senders. An IOC actor's own mailbox is
small; if it is full (the actor is stuck, e.g. in a long connect) the actor is restarted from
the connector's view (wanted state, kernel index), so nothing it missed is lost.

Connections made by others are audited (scope all-connections-matching-disconnect-trtypes)
only once stafd's data has had ``audit_settle`` seconds to arrive, or stafd has not shown up
within ``stafd_grace`` seconds: until then an absent log page proves nothing.

Disconnects run in the background, at most ``parallel_disconnects`` at once (the kernel's
delete_ctrl takes no global mutex, unlike a connect: they really overlap), each answered with
``DisconnectDone``; so zoning that removes 200 subsystems, or a DC gone with its entries, costs
about one disconnect's time per bound's worth, not 200, and the connector keeps reacting
meanwhile. Those waiting for a worker wait in a queue, not as tasks. The core never asks twice
for one device (see ``connector_core``).

At start the registry names the controllers a previous run made (``Begin.ours``; each
connect is recorded there before it is made, so a kill between the kernel's connect and the
registry write loses nothing: ``stas.coexist.registry``); the core
disconnects those nothing wants once stafd's picture is complete (see ``connector_core``).
"""

from __future__ import annotations

import errno
import logging
import random
from collections import deque
from collections.abc import Callable, Coroutine, Iterable, Mapping
from functools import partial
from typing import Any, TypeAlias

import trio
from trio_util import AsyncValue

from stas.actors import connector_core as core
from stas.actors.connector_model import (
    Begin,
    Boot,
    Claim,
    ConnectorState,
    ControllerRead,
    CoreMsg,
    Disconnect,
    DisconnectDone,
    Effect,
    IocFellBehind,
    IocMade,
    IocStopped,
    Later,
    ReadController,
    Reconfigure,
    StartIoc,
    StopIoc,
    TellIoc,
)
from stas.actors.ioc import IocSettings, Mailbox, run_ioc_actor
from stas.actors.supervisor import Supervisor, open_supervisor
from stas.coexist.registry import Registry, may_disconnect
from stas.config import ServiceConfig
from stas.kernel.api import ConnectRequest, Kernel, KernelController, KernelError
from stas.messages import (
    ConnectorMsg,
    IocUpdate,
    IocWanted,
    StacdConfigChanged,
    StacdSnapshot,
    Tid,
)

log = logging.getLogger("stas.connector")

PARALLEL_CONNECTS = 8  # connects in flight at once, across every IOC actor
PARALLEL_DISCONNECTS = 16  # disconnects in flight at once (each a worker thread in the kernel)
MERGED_BUFFER = 1024  # inbox, IOC updates and timers, merged: senders wait when it is full
ACTOR_EVENTS = 16  # one IOC actor's mailbox; overflow restarts the actor from our view

Inbound: TypeAlias = "ConnectorMsg | DisconnectDone"  # what reaches the connector's merged channel
BootReader = Callable[[str], Iterable[tuple[Tid, Mapping[str, str]]]]


def actor_name(tid: Tid) -> str:
    return "ioc|" + "|".join(tid.dbus_args())


class Connector:
    """The core's state plus what it needs to act: kernel, registry, supervisor, timers."""

    def __init__(
        self,
        *,
        config: ServiceConfig,
        host_nqn: str,
        hostid: str,
        kernel: Kernel,
        published: AsyncValue[StacdSnapshot],
        settings: IocSettings | None = None,
        rng: random.Random | None = None,
        audit_settle: float = 1.0,
        stafd_grace: float = 60.0,
        parallel_connects: int = PARALLEL_CONNECTS,
        parallel_disconnects: int = PARALLEL_DISCONNECTS,
        boot_subsystems: BootReader | None = None,
        registry: Registry | None = None,
    ) -> None:
        self.registry = registry  # libnvme's ownership registry (stas.coexist.registry)
        self.boot_subsystems = boot_subsystems  # NBFT: adopted, never disconnected
        self.kernel, self.published = kernel, published
        self.connect_limiter = trio.CapacityLimiter(parallel_connects)
        if parallel_disconnects < 1:
            raise ValueError(f"parallel_disconnects must be at least 1, got {parallel_disconnects}")
        self.parallel_disconnects = parallel_disconnects
        self._disconnects: deque[Disconnect] = deque()  # waiting for a worker
        self._disconnectors = 0  # workers running
        self.rng = rng or random.Random()
        self.state = ConnectorState(
            config=config,
            host_nqn=host_nqn,
            hostid=hostid,
            base_settings=settings or IocSettings(),
            audit_settle=audit_settle,
            stafd_grace=stafd_grace,
            boot=self._boot(host_nqn),
        )
        self._mailboxes: dict[Tid, Mailbox] = {}  # ~100 B each, not a channel pair
        self._stale: set[Tid] = set()  # actors whose mailbox overflowed: restart them
        self._timers: trio.Nursery | None = None
        self._sup: Supervisor | None = None
        self._send: trio.MemorySendChannel[Inbound] | None = None
        # One callable shared by every actor (a bound method made per actor is 64 B each).
        self.request_for: Callable[[IocWanted], ConnectRequest | None] = partial(
            core.request_for, self.state
        )

    @property
    def evaluations(self) -> int:
        return self.state.evaluations

    @property
    def restarts(self) -> int:
        return self.state.restarts

    def _boot(self, host_nqn: str) -> Boot:
        """The NBFT's boot subsystems for ``host_nqn`` (read here: the core does no I/O)."""
        return () if self.boot_subsystems is None else tuple(self.boot_subsystems(host_nqn))

    async def handle(self, msg: Inbound | Begin) -> None:
        """One message, and every result its effects report back, through the core."""
        first: CoreMsg = msg
        if isinstance(msg, StacdConfigChanged):
            first = Reconfigure(msg, self._boot(msg.host_nqn or self.state.host_nqn))
        elif isinstance(msg, IocUpdate):
            first = self._with_made(msg)
        queue: deque[CoreMsg] = deque([first])
        while queue:
            _, effects = core.handle(self.state, queue.popleft())
            for effect in effects:
                reply = await self._carry_out(effect)
                if reply is not None:
                    queue.append(reply)
            queue.extend(IocFellBehind(tid) for tid in sorted(self._stale))
            self._stale.clear()

    def _with_made(self, update: IocUpdate) -> CoreMsg:
        """A 'connected' status for a controller the actor made, with that controller (the
        actor's mailbox holds it since the kernel answered): the core indexes it without
        reading sysfs again for its 'add' uevent."""
        s = update.status
        if not s.connected or s.adopted:
            return update
        box = self._mailboxes.get(s.tid)
        held = box.held if box is not None and not box.held_adopted else None
        if held is None or held.device != s.device:
            return update
        return IocMade(update, held)

    async def _carry_out(self, effect: Effect) -> CoreMsg | None:
        match effect:
            case StartIoc():
                self._start(effect)
            case StopIoc(tid=tid, known=known):
                mailbox = self._mailboxes.pop(tid, None)
                if mailbox is not None:
                    mailbox.close()
                if self._sup is not None:
                    await self._sup.stop(actor_name(tid))
                if mailbox is not None and mailbox.held is not None:  # the actor has ended
                    return IocStopped(tid, mailbox.held, mailbox.held_adopted, known)
            case TellIoc(tid=tid, event=event):
                mailbox = self._mailboxes.get(tid)
                try:
                    if mailbox is not None:
                        mailbox.send_nowait(event)
                except trio.WouldBlock:
                    self._stale.add(tid)
            case Disconnect():
                return await self._disconnect(effect)
            case ReadController(device=device, audit=audit):
                return ControllerRead(device, await _controller(self.kernel, device), audit)
            case Claim(device=device, fresh=fresh):
                # A fresh claim names a controller an actor's own connect made: that actor's
                # intent became its entry (``Registry.settle``) before it said so. Claiming it
                # again cost a second registry read per connect; adoptions are claimed here.
                if self.registry is not None and not fresh:
                    self.registry.claim(device, fresh=False)
            case Later(delay=delay, msg=later):
                if self._timers is not None:
                    self._timers.start_soon(self._timer, delay, later)
        return None

    def _start(self, effect: StartIoc) -> None:
        if self._sup is None or self._send is None:
            return
        mailbox = Mailbox(ACTOR_EVENTS)
        self._mailboxes[effect.wanted.tid] = mailbox
        self._sup.start(actor_name(effect.wanted.tid), _IocStart(self, effect, mailbox))

    async def _disconnect(self, d: Disconnect) -> DisconnectDone | None:
        """Queue ``d`` for a background worker (a worker is started if fewer than the bound
        run); a controller another owner holds is answered at once, untouched."""
        held = self.registry.owner(d.device) if self.registry is not None else None
        if not may_disconnect(held):
            log.info("%s %s: %s; kept: the registry says owner %r", d.device, d.tid, d.reason, held)
            return DisconnectDone(d.device, gone=False)
        log.info("%s %s: %s; disconnecting", d.device, d.tid, d.reason)
        if self._timers is None:  # not running (yet): nowhere to run it but here
            return await self._delete(d.device)
        self._disconnects.append(d)
        if self._disconnectors < self.parallel_disconnects:
            self._disconnectors += 1
            self._timers.start_soon(self._disconnector)
        return None

    async def _disconnector(self) -> None:
        """One worker: disconnects from the queue until it is empty, each answered."""
        try:
            while self._disconnects:
                done = await self._delete(self._disconnects.popleft().device)
                if self._send is not None:
                    await self._send.send(done)
        finally:
            self._disconnectors -= 1

    async def _delete(self, device: str) -> DisconnectDone:
        """The kernel's disconnect; a failure is logged here, once, and the core told."""
        try:
            await self.kernel.disconnect(device)
        except KernelError as exc:
            if exc.errno != errno.ENODEV:
                log.warning("%s: disconnect failed: %s", device, exc)
                return DisconnectDone(device, gone=False)
            log.info("%s: already gone", device)
        if self.registry is not None:
            self.registry.release(device)
        return DisconnectDone(device, gone=True)

    async def _timer(self, delay: float, msg: Inbound) -> None:
        await trio.sleep(delay)
        if self._send is not None:
            await self._send.send(msg)

    def _ours(self, controllers: Iterable[KernelController]) -> frozenset[str]:
        """The controllers a previous run of stacd made: live registry entries owned by us,
        and unowned ones a leftover connect intent describes (that run was stopped between
        the kernel's connect and its registry write); leftover intents are dropped."""
        if self.registry is None:
            return frozenset()
        controllers = tuple(controllers)
        intended = self.registry.intended(controllers)
        return intended | self.registry.claimed_before(c.device for c in controllers)

    def publish(self) -> None:
        iocs = core.snapshot(self.state)
        if iocs is not None:
            self.published.value = StacdSnapshot(iocs, self.published.value.generation + 1)

    async def run(
        self,
        inbox: trio.MemoryReceiveChannel[ConnectorMsg],
        inbox_send: trio.MemorySendChannel[ConnectorMsg] | None = None,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Reconcile until cancelled. ``inbox_send`` is accepted for compatibility, unused."""
        send, merged = trio.open_memory_channel[Inbound](MERGED_BUFFER)
        self._send = send
        controllers = tuple(await self.kernel.list_controllers())
        try:
            async with trio.open_nursery() as timers, open_supervisor(rng=self.rng) as sup:
                self._timers, self._sup = timers, sup

                async def forward() -> None:
                    """The inbox into the merged channel, everything queued at each wake-up
                    (one message per scheduling round let a burst of uevents fall behind
                    the actors' statuses, and cost a task switch each)."""
                    async for msg in inbox:
                        await send.send(msg)
                        while True:
                            try:
                                more = inbox.receive_nowait()
                            except trio.WouldBlock:
                                break
                            except trio.EndOfChannel:
                                return
                            try:
                                send.send_nowait(more)
                            except trio.WouldBlock:
                                await send.send(more)

                timers.start_soon(forward)
                await self.handle(Begin(controllers, self._ours(controllers)))
                self.publish()
                task_status.started()
                async for msg in merged:
                    await self.handle(msg)
                    while True:  # drain: a burst costs one publish
                        try:
                            msg = merged.receive_nowait()
                        except trio.WouldBlock:
                            break
                        await self.handle(msg)
                    self.publish()
        finally:
            self._claim_unreported()

    def _claim_unreported(self) -> None:
        """On the way out, every actor ended: a controller an actor adopted whose status
        never reached the core is claimed all the same, so that the next run's restart sweep
        knows it as stacd's (one it connected was claimed by its intent's settle; the core
        claims the rest as their statuses arrive)."""
        if self.registry is None:
            return
        for box in self._mailboxes.values():
            held = box.held
            if held is not None and box.held_adopted and held.device not in self.state.owner:
                self.registry.claim(held.device, fresh=False)


class _IocStart:
    """What the supervisor calls to (re)start one IOC actor: the actor's coroutine itself, no
    wrapper frame kept while it runs. A slotted object, not a closure: at 10,000 actors a
    closure's cells, list and function object cost about 0.5 KB each. The first start's
    request, adoption and status are handed over, not kept: a restart after a crash gets
    its request from ``request_for`` and connects (EALREADY: adopts)."""

    __slots__ = ("adopt", "connector", "generation", "mailbox", "request", "status", "wanted")

    def __init__(self, connector: Connector, effect: StartIoc, mailbox: Mailbox) -> None:
        self.connector, self.mailbox = connector, mailbox
        self.wanted, self.generation = effect.wanted, effect.generation
        self.request: ConnectRequest | None = effect.request
        self.adopt, self.status = effect.adopt, effect.status

    def __call__(self) -> Coroutine[Any, Any, None]:
        c = self.connector
        adopt, status, request = self.adopt, self.status, self.request
        self.adopt = self.status = self.request = None
        assert c._send is not None  # started only by a running connector
        return run_ioc_actor(
            self.wanted,
            c._send,
            kernel=c.kernel,
            request=request,
            settings=c.state.settings,
            events=self.mailbox,
            adopt=adopt,
            rng=c.rng,
            limiter=c.connect_limiter,
            status=status,  # the first start's (shared with the core); a restart makes its own
            generation=self.generation,
            intents=c.registry,
            requests=c.request_for,
        )


async def _controller(kernel: Kernel, device: str) -> KernelController | None:
    """One controller from the kernel (the protocol's ``controller`` if it has one)."""
    get = getattr(kernel, "controller", None)
    if get is not None:
        found: KernelController | None = await get(device)
        return found
    return next((c for c in await kernel.list_controllers() if c.device == device), None)


async def run_connector(
    *,
    config: ServiceConfig,
    host_nqn: str,
    hostid: str,
    kernel: Kernel,
    inbox: trio.MemoryReceiveChannel[ConnectorMsg],
    published: AsyncValue[StacdSnapshot],
    settings: IocSettings | None = None,
    rng: random.Random | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """The connector as a plain actor function (see ``Connector`` for the rules)."""
    connector = Connector(
        config=config,
        host_nqn=host_nqn,
        hostid=hostid,
        kernel=kernel,
        published=published,
        settings=settings,
        rng=rng,
    )
    await connector.run(inbox, task_status=task_status)
