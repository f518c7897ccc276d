"""stacd's connector: reconciles wanted I/O controllers with the running IOC actors.

Wanted = stacd.conf controllers + every NVM subsystem entry of stafd's log pages - exclusions.
Work per change is proportional to the change: a new log page for one DC re-evaluates only
the controllers that DC lists or listed. stafd being away changes nothing ("no answer" is not
"no controllers"); only a changed log page, a DC stafd removed, or the config removes one.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable
from typing import Any

import attrs
import trio
from trio_util import AsyncValue

from stas.actors.ioc import IocSettings, run_ioc_actor
from stas.actors.supervisor import Supervisor, open_supervisor
from stas.config import ServiceConfig
from stas.kernel.api import Kernel, KernelController, KernelError, Uevent
from stas.kernel.options import InvalidOption
from stas.messages import (
    DcGone,
    DcLogPages,
    IocStatus,
    IocUpdate,
    IocWanted,
    KernelResync,
    StacdSnapshot,
    StafdPresence,
    Tid,
)
from stas.plan import (
    configured_iocs,
    connect_request,
    decide,
    find_kernel,
    iocs_of_dc,
    keeps_connection,
    merge,
)

log = logging.getLogger("stas.connector")


@attrs.frozen
class StacdConfigChanged:
    config: ServiceConfig
    host_nqn: str
    hostid: str


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
    ) -> None:
        self.kernel = kernel
        self.published = published
        self.rng = rng or random.Random()
        self.base_settings = settings or IocSettings()
        self.raw: dict[Tid, tuple[Any, ...]] = {}  # DC -> its DLPEs as stafd sent them
        self.per_dc: dict[Tid, dict[Tid, bool]] = {}  # DC -> {ioc: ncc}
        self.listing: dict[Tid, dict[Tid, bool]] = {}  # ioc -> {DC: ncc}
        self.running: dict[Tid, IocWanted] = {}
        self.statuses: dict[Tid, IocStatus] = {}
        self.kernel_ctrls: list[KernelController] = []
        self.evaluations = 0
        self._warned: set[str] = set()
        self._dirty = False
        self._apply_config(config, host_nqn, hostid)

    # --- inputs -------------------------------------------------------------------------------

    def _apply_config(self, config: ServiceConfig, host_nqn: str, hostid: str) -> None:
        self.config, self.host_nqn, self.hostid = config, host_nqn, hostid
        self.configured = configured_iocs(config, host_nqn)
        self.settings = attrs.evolve(
            self.base_settings, connect_attempts_on_ncc=config.connect_attempts_on_ncc
        )

    def _set_dc(self, dc: Tid, dlpes: tuple[Any, ...] | None) -> set[Tid]:
        """Replace one DC's entries; returns the controllers whose wanted state may change."""
        old = self.per_dc.pop(dc, {})
        new: dict[Tid, bool] = {}
        if dlpes is not None:
            self.raw[dc] = dlpes
            new = iocs_of_dc(dc, dlpes, ignore_iface=self.config.ignore_iface, warned=self._warned)
            self.per_dc[dc] = new
        else:
            self.raw.pop(dc, None)
        for tid in old:
            if tid not in new:
                self.listing.get(tid, {}).pop(dc, None)
                if not self.listing.get(tid):
                    self.listing.pop(tid, None)
        for tid, ncc in new.items():
            self.listing.setdefault(tid, {})[dc] = ncc
        return set(old) | set(new)

    # --- decisions ----------------------------------------------------------------------------

    async def evaluate(self, sup: Supervisor, updates: Any, tids: Iterable[Tid]) -> None:
        for tid in sorted(set(tids)):
            self.evaluations += 1
            w = merge(tid, self.configured, self.listing, self.config)
            cur = self.running.get(tid)
            if w is None:
                if cur is not None:
                    await self._remove(sup, tid, "no longer configured or in any log page")
                continue
            if cur is not None:
                if cur.params == w.params and cur.ncc == w.ncc:
                    if cur != w:
                        self.running[tid] = w  # which DCs list it changed: nothing to do
                    continue
                await sup.stop(actor_name(tid))
            await self._start(sup, updates, w)

    async def _start(self, sup: Supervisor, updates: Any, w: IocWanted, delay: float = 0) -> None:
        try:
            request = connect_request(w, self.config, self.hostid)
        except InvalidOption as exc:
            if str(exc) not in self._warned:
                self._warned.add(str(exc))
                log.warning("%s: cannot connect: %s", w.tid, exc)
            return
        adopt = None if delay else find_kernel(w.tid, self.kernel_ctrls)
        self.running[w.tid] = w
        self.statuses.setdefault(w.tid, IocStatus(tid=w.tid, origin=w.origin, params=w.params))
        self._dirty = True

        async def actor() -> None:
            await run_ioc_actor(
                w,
                updates.clone(),
                kernel=self.kernel,
                request=request,
                settings=self.settings,
                adopt=adopt,
                initial_delay=delay,
                rng=self.rng,
            )

        sup.start(actor_name(w.tid), actor)

    async def _remove(self, sup: Supervisor, tid: Tid, reason: str) -> None:
        self.running.pop(tid)
        status = self.statuses.pop(tid, None)
        self._dirty = True
        await sup.stop(actor_name(tid))
        device = status.device if status is not None and status.connected else ""
        if not device:
            return
        if keeps_connection(tid.transport, self.config):
            log.info(
                "%s (%s): %s; kept (disconnect-scope=%s)",
                tid,
                device,
                reason,
                self.config.disconnect_scope,
            )
            return
        log.info("%s (%s): %s; disconnecting", tid, device, reason)
        try:
            await self.kernel.disconnect(device)
        except KernelError as exc:
            log.warning("%s: disconnect failed: %s", device, exc)

    async def audit(self) -> None:
        """all-connections-matching-disconnect-trtypes: others' unwanted connections go too."""
        if self.config.disconnect_scope != "all-connections-matching-disconnect-trtypes":
            return
        plan = decide(dict(self.running), {}, self.kernel_ctrls, self.config)
        for device, what, reason in plan.disconnect:
            log.info("%s %s: %s; disconnecting", device, what, reason)
            try:
                await self.kernel.disconnect(device)
            except KernelError as exc:
                log.warning("%s: disconnect failed: %s", device, exc)

    async def kernel_lost(self, sup: Supervisor, updates: Any, devices: set[str]) -> None:
        """Controllers the kernel deleted (ctrl-loss-tmo, or nvme disconnect by hand)."""
        for tid, status in list(self.statuses.items()):
            if status.connected and status.device in devices and tid in self.running:
                log.info("%s: kernel removed %s; reconnecting", tid, status.device)
                await sup.stop(actor_name(tid))
                self.statuses[tid] = attrs.evolve(
                    status, connected=False, device="nvme?", state="backoff"
                )
                await self._start(sup, updates, self.running[tid], self.settings.fast_retry)

    # --- the loop -----------------------------------------------------------------------------

    async def handle(self, sup: Supervisor, updates: Any, msg: Any) -> None:
        if isinstance(msg, IocUpdate):
            if msg.status.tid in self.running:
                self.statuses[msg.status.tid] = msg.status
                self._dirty = True
        elif isinstance(msg, DcLogPages):
            await self.evaluate(sup, updates, self._set_dc(msg.dc, tuple(msg.dlpes)))
        elif isinstance(msg, DcGone):
            await self.evaluate(sup, updates, self._set_dc(msg.dc, None))
        elif isinstance(msg, StafdPresence):
            log.info("stafd %s", "is back" if msg.present else "is away; changing nothing")
        elif isinstance(msg, StacdConfigChanged):
            self._apply_config(msg.config, msg.host_nqn, msg.hostid)
            for dc, dlpes in list(self.raw.items()):
                self._set_dc(dc, dlpes)
            self.kernel_ctrls = await self.kernel.list_controllers()
            await self.evaluate(sup, updates, {*self.running, *self.configured, *self.listing})
            await self.audit()
        elif isinstance(msg, Uevent):
            if msg.action == "remove":
                self.kernel_ctrls = [c for c in self.kernel_ctrls if c.device != msg.device]
                await self.kernel_lost(sup, updates, {msg.device})
            elif msg.action == "add":
                self.kernel_ctrls = await self.kernel.list_controllers()
                await self.audit()
        elif isinstance(msg, KernelResync):
            self.kernel_ctrls = list(msg.controllers)
            present = {c.device for c in self.kernel_ctrls}
            gone = {s.device for s in self.statuses.values() if s.connected} - present
            await self.kernel_lost(sup, updates, gone)
            await self.audit()

    def publish(self) -> None:
        if not self._dirty:
            return
        self._dirty = False
        iocs = tuple(self.statuses[t] for t in sorted(self.running) if t in self.statuses)
        self.published.value = StacdSnapshot(iocs, self.published.value.generation + 1)

    async def run(
        self,
        inbox: trio.MemoryReceiveChannel[Any],
        inbox_send: trio.MemorySendChannel[Any],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        self.kernel_ctrls = await self.kernel.list_controllers()
        async with open_supervisor() as sup:
            await self.evaluate(sup, inbox_send, self.configured)
            await self.audit()
            self.publish()
            task_status.started()
            async for msg in inbox:
                await self.handle(sup, inbox_send, msg)
                while True:  # drain: a burst costs one publish
                    try:
                        msg = inbox.receive_nowait()
                    except trio.WouldBlock:
                        break
                    await self.handle(sup, inbox_send, msg)
                self.publish()
