"""stacd's connector: reconciles wanted I/O controllers with the running IOC actors.

Wanted = stacd.conf controllers + every NVM subsystem entry of stafd's log pages - exclusions.
Work per change is proportional to the change: a new log page for one DC re-plans only the
controllers that DC lists or listed (index DC -> controllers and controller -> DCs). stafd
being away changes nothing ("no answer" is not "no controllers"); only a changed log page, a
DC stafd removed, or the config removes a controller. Bursts are coalesced by draining the
inbox before publishing, not by soak timers.

Every queue is bounded. Messages (inbox, IOC status updates, timers) wait for room rather
than pile up: a stuck connector pushes back on its senders. An IOC actor's own mailbox is
small; if it is full (the actor is stuck, e.g. in a long connect) the actor is restarted from
the connector's view (wanted state, kernel index), so nothing it missed is lost.

Connections made by others are audited (scope all-connections-matching-disconnect-trtypes)
only once stafd's data has had ``audit_settle`` seconds to arrive, or stafd has not shown up
within ``stafd_grace`` seconds: until then an absent log page proves nothing.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs
import trio
from trio_util import AsyncValue

from stas.actors.ioc import (
    DeviceRemoved,
    IocEvent,
    IocSettings,
    KernelFound,
    WantedChanged,
    run_ioc_actor,
)
from stas.actors.supervisor import Supervisor, open_supervisor
from stas.coexist.registry import Registry, may_disconnect
from stas.config import ServiceConfig
from stas.kernel.api import ConnectRequest, Kernel, KernelController, KernelError, Uevent
from stas.kernel.options import InvalidOption
from stas.messages import (
    AuditDue,
    ConnectorMsg,
    DcGone,
    DcLogPages,
    IocStatus,
    IocUpdate,
    IocWanted,
    KernelResync,
    StacdConfigChanged,
    StacdSnapshot,
    StafdPresence,
    Tid,
)
from stas.plan import (
    AUDIT,
    KernelIndex,
    auditable,
    configured_iocs,
    connect_request,
    decide,
    describe,
    iocs_of_dc,
    merge,
    with_boot_subsystems,
)

log = logging.getLogger("stas.connector")

PARALLEL_CONNECTS = 8  # connects in flight at once, across every IOC actor
MERGED_BUFFER = 1024  # inbox, IOC updates and timers, merged: senders wait when it is full
ACTOR_EVENTS = 16  # one IOC actor's mailbox; overflow restarts the actor from our view


_NO_ENTRY: Mapping[str, str] = {}


@attrs.define
class _Actor:
    wanted: IocWanted
    request: ConnectRequest
    status: IocStatus
    events: trio.MemorySendChannel[IocEvent]


def _tid_key(t: Tid) -> tuple[str, ...]:
    """Tid's own order, without attrs' slow comparison methods."""
    return (t.transport, t.traddr, t.trsvcid, t.subsysnqn, t.host_traddr, t.host_iface, t.host_nqn)


def actor_name(tid: Tid) -> str:
    return "ioc|" + "|".join(tid.as_dict().values())


class Connector:
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
        boot_subsystems: Callable[[str], Iterable[tuple[Tid, Mapping[str, str]]]] | None = None,
        registry: Registry | None = None,
    ) -> None:
        self.registry = registry  # libnvme's ownership registry (stas.coexist.registry)
        self.boot_subsystems = boot_subsystems  # NBFT: adopted, never disconnected
        self.kernel, self.published = kernel, published
        self.connect_limiter = trio.CapacityLimiter(parallel_connects)
        self.rng = rng or random.Random()
        self.base_settings = settings or IocSettings()
        self.audit_settle, self.stafd_grace = audit_settle, stafd_grace
        self.raw: dict[Tid, tuple[Any, ...]] = {}  # DC -> its DLPEs as stafd sent them
        self.dlpe_of: dict[Tid, Mapping[str, str]] = {}  # IOC -> the entry listing it (ls -d)
        self.per_dc: dict[Tid, dict[Tid, bool]] = {}  # DC -> {ioc: ncc}
        self.listing: dict[Tid, dict[Tid, bool]] = {}  # ioc -> {DC: ncc}
        self.actors: dict[Tid, _Actor] = {}
        self.owner: dict[str, Tid] = {}  # device -> the actor's tid that holds it
        self.index = KernelIndex()
        self.evaluations = 0  # controllers re-planned (the scale test counts them)
        self.stafd_known = False
        self.audit_ready = False
        self._warned: set[str] = set()
        self._dirty = False
        self._order: list[Tid] | None = None  # snapshot order (by Tid), while membership holds
        self._stale: set[Tid] = set()  # actors whose mailbox overflowed: restart them
        self.restarts = 0
        self._timers: trio.Nursery | None = None
        self._sup: Supervisor | None = None
        self._send: trio.MemorySendChannel[ConnectorMsg] | None = None
        self._apply_config(config, host_nqn, hostid)

    # --- inputs -------------------------------------------------------------------------------

    def _apply_config(self, config: ServiceConfig, host_nqn: str, hostid: str) -> None:
        self.config = config
        self.host_nqn = host_nqn or getattr(self, "host_nqn", "")
        self.hostid = hostid or getattr(self, "hostid", "")
        self.configured = configured_iocs(config, self.host_nqn)
        if self.boot_subsystems is not None:
            boot = self.boot_subsystems(self.host_nqn)
            self.configured = with_boot_subsystems(self.configured, boot)
        self.settings = attrs.evolve(
            self.base_settings, connect_attempts_on_ncc=config.connect_attempts_on_ncc
        )

    def _set_dc(self, dc: Tid, dlpes: tuple[Any, ...] | None) -> set[Tid]:
        """Replace one DC's entries; returns the controllers whose wanted state may change."""
        old = self.per_dc.pop(dc, {})
        new: dict[Tid, bool] = {}
        if dlpes is not None:
            self.raw[dc] = dlpes
            new = iocs_of_dc(
                dc,
                dlpes,
                ignore_iface=self.config.ignore_iface,
                warned=self._warned,
                host_nqn=self.host_nqn,
                entries=self.dlpe_of,
            )
            self.per_dc[dc] = new
        else:
            self.raw.pop(dc, None)
        for tid in old:
            if tid not in new:
                dcs = self.listing.get(tid, {})
                dcs.pop(dc, None)
                if not dcs:
                    self.listing.pop(tid, None)
                    self.dlpe_of.pop(tid, None)
        for tid, ncc in new.items():
            self.listing.setdefault(tid, {})[dc] = ncc
        return set(old) | set(new)

    # --- decisions ----------------------------------------------------------------------------

    async def evaluate(self, tids: Iterable[Tid], *, new_requests: bool = False) -> None:
        """Re-plan ``tids`` only and carry the plan out."""
        tids = set(tids)
        wanted: dict[Tid, IocWanted] = {}
        current: dict[Tid, IocStatus] = {}
        for tid in tids:
            self.evaluations += 1
            w = merge(tid, self.configured, self.listing, self.config)
            if w is not None:
                wanted[tid] = w
            if tid in self.actors:
                current[tid] = self.actors[tid].status
        # The kernel side of these controllers only, minus devices other actors hold.
        part = KernelIndex(
            c
            for tid in tids
            for c in self.index.candidates(tid)
            if self.owner.get(c.device, tid) in tids
        )
        plan = decide(wanted, current, part, self.config)
        for tid, _reason in plan.connect:
            self._start(wanted[tid], None)
        for tid, device in plan.adopt:
            self._start(wanted[tid], part.by_device[device])
        for tid, _reason in plan.keep:
            self._update(self.actors[tid], wanted[tid], new_requests)
        for device, tid, reason in plan.disconnect:
            if tid in self.actors:
                await self._stop(tid)
            await self._disconnect(device, tid, reason)
        for tid in current:
            if tid not in wanted and tid in self.actors:
                status = self.actors[tid].status
                await self._stop(tid)
                if status.connected:
                    log.info(
                        "%s (%s): no longer wanted; kept connected (disconnect-scope=%s)",
                        tid,
                        status.device,
                        self.config.disconnect_scope,
                    )

    def _request(self, w: IocWanted) -> ConnectRequest | None:
        try:
            return connect_request(w, self.config, self.hostid)
        except InvalidOption as exc:
            key = f"{w.tid}|{exc}"
            if key not in self._warned:
                self._warned.add(key)
                log.warning("%s: cannot connect: %s", w.tid, exc)
            return None

    def _start(self, w: IocWanted, adopt: KernelController | None) -> None:
        request = self._request(w)
        if request is None or self._sup is None or self._send is None:
            return
        send, receive = trio.open_memory_channel[IocEvent](ACTOR_EVENTS)
        status = IocStatus(
            tid=w.tid, origin=w.origin, params=w.params, ncc=w.ncc, dlpe=self._dlpe(w.tid)
        )
        if adopt is not None:  # what the actor is about to say; the device is ours already
            self.owner[adopt.device] = w.tid
            if self.registry is not None:
                self.registry.claim(adopt.device, fresh=False)
            status = attrs.evolve(
                status, device=adopt.device, state="connected", connected=True, adopted=True
            )
        self.actors[w.tid] = _Actor(w, request, status, send)
        self._order = None
        self._dirty = True
        first = [adopt]
        updates = self._send

        async def actor() -> None:
            adopted, first[0] = first[0], None  # a restart after a crash connects (EALREADY)
            await run_ioc_actor(
                w,
                updates,
                kernel=self.kernel,
                request=request,
                settings=self.settings,
                events=receive,
                adopt=adopted,
                rng=self.rng,
                limiter=self.connect_limiter,
            )

        self._sup.start(actor_name(w.tid), actor)

    def _update(self, a: _Actor, w: IocWanted, new_requests: bool) -> None:
        """Tell a running actor what changed; a live connection is left alone."""
        if a.wanted == w and not new_requests:
            return
        changed = (a.wanted.ncc, a.wanted.params, a.wanted.origin) != (w.ncc, w.params, w.origin)
        a.wanted = w
        request = self._request(w) if changed or new_requests else a.request
        if request is None:
            return
        if changed or request != a.request:
            a.request = request
            self._tell(w.tid, WantedChanged(w, request))

    def _tell(self, tid: Tid, event: IocEvent) -> None:
        """Post to an actor's mailbox; if it is full, restart the actor after this message."""
        try:
            self.actors[tid].events.send_nowait(event)
        except trio.WouldBlock:
            self._stale.add(tid)

    async def _restart_stale(self) -> None:
        """Restart actors that missed events, from what the connector and the kernel know."""
        while self._stale:
            tid = self._stale.pop()
            a = self.actors.get(tid)
            if a is None:
                continue
            log.warning("%s: its actor fell behind; restarting it", tid)
            self.restarts += 1
            device = a.status.device if a.status.connected else None
            await self._stop(tid)
            held = self.index.by_device.get(device) if device else None
            adopt = held or self.index.find(tid, skip=self.owner)
            self._start(a.wanted, adopt)

    async def _stop(self, tid: Tid) -> None:
        a = self.actors.pop(tid)
        self._order = None
        if a.status.connected and self.owner.get(a.status.device) == tid:
            del self.owner[a.status.device]
        a.events.close()
        self._dirty = True
        if self._sup is not None:
            await self._sup.stop(actor_name(tid))

    async def _disconnect(self, device: str, tid: Tid, reason: str) -> None:
        held = self.registry.owner(device) if self.registry is not None else None
        if not may_disconnect(held):
            log.info("%s %s: %s; kept: the registry says owner %r", device, tid, reason, held)
            return
        log.info("%s %s: %s; disconnecting", device, tid, reason)
        try:
            await self.kernel.disconnect(device)
        except KernelError as exc:
            log.warning("%s: disconnect failed: %s", device, exc)
        else:
            if self.registry is not None:
                self.registry.release(device)

    async def audit(self, device: str | None = None) -> None:
        """Audit scope: connections others made that nobody wants go (all, or one device)."""
        if self.config.disconnect_scope != AUDIT or not self.audit_ready:
            return
        if device is None:
            wanted = {t: a.wanted for t, a in self.actors.items()}
            current = {t: a.status for t, a in self.actors.items()}
            plan = decide(wanted, current, self.index, self.config)
            for dev, tid, reason in plan.disconnect:
                if dev not in self.owner and tid not in self.actors:
                    await self._disconnect(dev, tid, reason)
            return
        ctrl = await _controller(self.kernel, device)
        if ctrl is None or device in self.owner:
            return
        self.index.add(ctrl)
        if not auditable(ctrl, self.config.disconnect_trtypes) or any(
            ctrl.matches(t) for t in self.actors
        ):
            return
        trtypes = "+".join(self.config.disconnect_trtypes)
        reason = f"not configured and in no log page; disconnect-trtypes={trtypes}"
        await self._disconnect(device, describe(ctrl), reason)

    def _later(self, delay: float, msg: AuditDue) -> None:
        async def timer() -> None:
            await trio.sleep(delay)
            if self._send is not None:
                await self._send.send(msg)

        if self._timers is not None:
            self._timers.start_soon(timer)

    # --- the kernel ----------------------------------------------------------------------------

    async def on_uevent(self, ev: Uevent) -> None:
        if ev.subsystem != "nvme" or not ev.device.startswith("nvme"):
            return
        if ev.action == "remove":
            self.index.remove(ev.device)
            tid = self.owner.pop(ev.device, None)
            if tid is not None and tid in self.actors:
                self._tell(tid, DeviceRemoved(ev.device))
        elif ev.action == "add":
            ctrl = await _controller(self.kernel, ev.device)
            if ctrl is not None:
                self.index.add(ctrl)
            if self.config.disconnect_scope == AUDIT and ev.device not in self.owner:
                self._later(self.audit_settle, AuditDue(ev.device))  # sysfs races the event

    async def on_resync(self, controllers: Iterable[KernelController]) -> None:
        """The kernel's full list (uevents were lost): tell every actor what it missed."""
        self.index = KernelIndex(controllers)
        for tid, a in self.actors.items():
            if a.status.connected and a.status.device not in self.index.by_device:
                if self.owner.get(a.status.device) == tid:
                    del self.owner[a.status.device]
                self._tell(tid, DeviceRemoved(a.status.device))
            elif not a.status.connected:
                found = self.index.find(tid, skip=self.owner)
                if found is not None:
                    self.owner[found.device] = tid
                    self._tell(tid, KernelFound(found))
        await self.audit()

    # --- the loop -----------------------------------------------------------------------------

    def _stafd_data(self) -> None:
        if not self.stafd_known:
            self.stafd_known = True
            self._later(self.audit_settle, AuditDue())

    async def handle(self, msg: ConnectorMsg) -> None:
        match msg:
            case IocUpdate(status=status):
                self._on_status(status)
            case DcLogPages(dc=dc, dlpes=dlpes):
                self._stafd_data()
                await self.evaluate(self._set_dc(dc, tuple(dlpes)))
            case DcGone(dc=dc):
                self._stafd_data()
                log.info("DC %s is gone from stafd", dc)
                await self.evaluate(self._set_dc(dc, None))
            case StafdPresence(present=present):
                log.info("stafd %s", "is here" if present else "is away; changing nothing")
            case StacdConfigChanged(config=config, host_nqn=host_nqn, hostid=hostid):
                self._apply_config(config, host_nqn, hostid)
                for dc, dlpes in list(self.raw.items()):
                    self._set_dc(dc, dlpes)
                tids = {*self.actors, *self.configured, *self.listing}
                await self.evaluate(tids, new_requests=True)
                await self.audit()
            case AuditDue(device=device):
                if device is None:
                    self.audit_ready = True
                await self.audit(device)
            case Uevent():
                await self.on_uevent(msg)
            case KernelResync(controllers=controllers):
                await self.on_resync(controllers)
            case _:
                log.debug("connector: ignoring %r", msg)

    def _on_status(self, s: IocStatus) -> None:
        a = self.actors.get(s.tid)
        if a is None:
            return  # a stopped actor's last words
        if s.dlpe is not (dlpe := self._dlpe(s.tid)):
            s = attrs.evolve(s, dlpe=dlpe)  # the actor does not know it; ls -d shows it
        old, a.status = a.status, s
        moved = not s.connected or old.device != s.device
        if old.connected and moved and self.owner.get(old.device) == s.tid:
            del self.owner[old.device]
        if s.connected:
            self.owner[s.device] = s.tid
            if self.registry is not None and (moved or not old.connected):
                self.registry.claim(s.device, fresh=not s.adopted)  # ours if we made it
        self._dirty = True

    def _dlpe(self, tid: Tid) -> Mapping[str, str]:
        """The log page entry listing ``tid`` ({} when only stacd.conf or the NBFT names it)."""
        return self.dlpe_of.get(tid, _NO_ENTRY)

    def publish(self) -> None:
        if not self._dirty:
            return
        self._dirty = False
        if self._order is None:  # membership changed: sort again (statuses change far more)
            self._order = sorted(self.actors, key=_tid_key)
        iocs = tuple(self.actors[t].status for t in self._order)
        self.published.value = StacdSnapshot(iocs, self.published.value.generation + 1)

    async def run(
        self,
        inbox: trio.MemoryReceiveChannel[ConnectorMsg],
        inbox_send: trio.MemorySendChannel[ConnectorMsg] | None = None,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Reconcile until cancelled. ``inbox_send`` is accepted for compatibility, unused."""
        send, merged = trio.open_memory_channel[ConnectorMsg](MERGED_BUFFER)
        self._send = send
        self.index = KernelIndex(await self.kernel.list_controllers())
        async with trio.open_nursery() as timers, open_supervisor(rng=self.rng) as sup:
            self._timers, self._sup = timers, sup

            async def forward() -> None:
                async for msg in inbox:
                    await send.send(msg)

            timers.start_soon(forward)
            await self.evaluate(self.configured)  # warm restart: adopts what is already there
            self._later(self.stafd_grace, AuditDue())
            self.publish()
            task_status.started()
            async for msg in merged:
                await self.handle(msg)
                while True:  # drain: a burst costs one publish
                    await self._restart_stale()
                    try:
                        msg = merged.receive_nowait()
                    except trio.WouldBlock:
                        break
                    await self.handle(msg)
                self.publish()


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
