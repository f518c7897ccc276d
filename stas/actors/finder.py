"""stafd's finder: which discovery controllers to keep, reconciled with the running DC actors.

Wanted = configured ``controller=`` entries + the firmware's NBFT discovery controllers +
mDNS announcements + referrals found in DC log pages, minus ``exclude=`` and addresses
``ip-family`` rules out. Bursts are coalesced without
waiting: everything already queued is applied, then one reconcile runs. The finder owns the
latest status of every DC and publishes immutable snapshots for the D-Bus actor.

A ``controller=`` host name may resolve to several addresses: the finder keeps ONE DC per entry,
whose ``traddr`` is the first address that accepts a TCP connection (re-probed while the chosen
one does not answer), so the TID always names the address really used.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import attrs
import trio
from trio_util import AsyncValue

from stas.actors.supervisor import open_supervisor
from stas.config import ServiceConfig
from stas.messages import (
    ORIGIN_RANK,
    WELL_KNOWN_DISC_NQN,
    DcStatus,
    DcUpdate,
    DcWanted,
    FinderMsg,
    MdnsServiceDown,
    MdnsServiceUp,
    StafdConfigChanged,
    StafdSnapshot,
    Tid,
)
from stas.nbft import IfaceOf, discovery_tids, iface_of_hfi, read_tables
from stas.nvme.logpage import LogPageEntry, SubType, TrType
from stas.resolve import Probe, Resolver, first_answering, normalise_ip, resolve_traddr, tcp_probe
from stas.state import StateStore, restore

log = logging.getLogger("stas.finder")

DcFactory = Callable[[DcWanted, trio.MemorySendChannel[DcUpdate], DcStatus | None], Awaitable[None]]
MAX_REFERRAL_DEPTH = 8  # libnvme's limit
MAX_REFERRALS_PER_DC = 64  # one rogue DC cannot make us connect everywhere...
MAX_REFERRAL_DCS = 256  # ...nor can a tree of them (64 per level would grow exponentially)
TID_KEYS = frozenset(Tid("", "", "", "").as_dict())
DEFAULT_TRSVCID = {"tcp": "8009", "rdma": "4420"}
REPROBE_INTERVAL = 30.0


@attrs.define
class _Configured:
    """One controller= entry after name resolution; ``addresses`` are tried in order."""

    base: Tid
    addresses: list[str]
    params: dict[str, str]
    chosen: str
    probed_at: float = -math.inf


def actor_name(tid: Tid) -> str:
    """Unique per TID (``str(tid)`` omits the host NQN, so two TIDs could share it)."""
    return "dc|" + "|".join(tid.as_dict().values())


def referral_tid(e: LogPageEntry, parent: Tid) -> Tid:
    """The DC a referral entry names; it inherits the referring DC's host-side fields."""
    norm = normalise_ip(e.traddr.strip())
    transport = TrType.label_of(e.trtype)
    return Tid(
        transport=transport,
        traddr=norm[1] if norm else e.traddr.strip(),
        trsvcid=e.trsvcid.strip() or DEFAULT_TRSVCID.get(transport, ""),
        subsysnqn=e.subnqn.strip() or WELL_KNOWN_DISC_NQN,
        host_traddr=parent.host_traddr,
        host_iface=parent.host_iface,
        host_nqn=parent.host_nqn,
    )


class Finder:
    """The reconciler; ``run`` drives it from an inbox."""

    def __init__(
        self,
        *,
        config: ServiceConfig,
        host_nqn: str,
        dc_factory: DcFactory,
        published: AsyncValue[StafdSnapshot],
        state_store: StateStore | None = None,
        resolver: Resolver | None = None,
        probe: Probe = tcp_probe,
        nbft_dir: str | Path | None = None,
        iface_of: IfaceOf = iface_of_hfi,
    ) -> None:
        self.nbft_dir, self.iface_of = nbft_dir, iface_of  # None: no NBFT (tests, demos)
        self.nbft: list[Tid] = []  # the NBFT's discovery controllers, re-read on each reload
        self.config = config
        self.host_nqn = host_nqn
        self.dc_factory = dc_factory
        self.published = published
        self.state_store = state_store
        self.resolver = resolver
        self.probe = probe
        self.configured: list[_Configured] = []
        self.mdns_raw: dict[str, Tid] = {}  # announcement key -> candidate as announced
        self.mdns: dict[str, Tid] = {}  # the same with sys.conf/stafd.conf defaults applied
        self.discovered: set[Tid] = set()  # every mDNS DC still kept (announced or not)
        self.silent_since: dict[Tid, float] = {}  # discovered, unannounced and unconnected
        self.statuses: dict[Tid, DcStatus] = {}
        self.running: dict[Tid, DcWanted] = {}
        self.reconciles = 0
        self._warned: set[str] = set()
        self._saved_signature: object = None
        self._dirty = False

    # --- inputs -------------------------------------------------------------------------------

    async def apply_config(self, config: ServiceConfig, host_nqn: str) -> None:
        """Resolve the controller= entries once per (re)load, keeping working choices."""
        if not config.zeroconf:  # the mDNS actor stops: forget what it told us
            self.mdns_raw.clear()
            self.mdns.clear()
            self.discovered.clear()
            self.silent_since.clear()
        old = {c.base: c for c in self.configured}
        self.config, self.host_nqn = config, host_nqn
        self._refill_mdns()
        self._read_nbft()
        out: list[_Configured] = []
        for spec in config.controllers:
            d = spec.as_tid_dict(ignore_iface=config.ignore_iface)
            transport = d["transport"]
            base = Tid(
                transport=transport,
                traddr=d["traddr"],
                trsvcid=d["trsvcid"] or DEFAULT_TRSVCID.get(transport, ""),
                subsysnqn=d["subsysnqn"] or WELL_KNOWN_DISC_NQN,
                host_traddr=d["host-traddr"],
                host_iface=d["host-iface"],
                host_nqn=d["host-nqn"] or host_nqn,
            )
            if config.is_excluded(base.as_dict()):
                continue  # excluded by name: no need to resolve it (checked again after)
            if transport in ("tcp", "rdma"):
                addrs = await resolve_traddr(
                    base.traddr,
                    ip_family=config.ip_family,
                    resolver=self.resolver,
                    warned=self._warned,
                )
                if not addrs:
                    self._warn_once(f"controller {base}: no usable address for {base.traddr!r}")
                    continue
            else:
                addrs = [base.traddr]
            params = {k: v for k, v in d.items() if k not in TID_KEYS}
            prev = old.get(base)
            known = [a for a in addrs if attrs.evolve(base, traddr=a) in self.statuses]
            # keep a working choice; else the address a cached DC used (warm restart)
            chosen = prev.chosen if prev and prev.chosen in addrs else (known or addrs)[0]
            out.append(
                _Configured(base, addrs, params, chosen, prev.probed_at if prev else -math.inf)
            )
        self.configured = out
        for c in self.configured:
            if len(c.addresses) > 1:
                await self._choose_address(c)

    def _read_nbft(self) -> None:
        """The NBFT's DCs, as upstream 2.3+ takes them (host-iface from the HFI's MAC, the
        table's host NQN when the firmware marks it configured); bad tables are named once."""
        if self.nbft_dir is None:
            return
        tables, errors = read_tables(self.nbft_dir)
        for text in errors:
            self._warn_once(f"NBFT {text}; ignored")
        out: list[Tid] = []
        for path, table in tables.items():
            for problem in table.problems:
                self._warn_once(f"NBFT {path}: {problem}")
            for tid in discovery_tids(table, host_nqn=self.host_nqn, iface_of=self.iface_of):
                if self.config.ignore_iface:
                    tid = attrs.evolve(tid, host_iface="")
                if tid not in out:
                    out.append(tid)
        if out != self.nbft:
            log.info("NBFT: %d discovery controllers: %s", len(out), ", ".join(map(str, out)))
        self.nbft = out

    async def _choose_address(self, c: _Configured) -> None:
        """First address that accepts a TCP connection; the current choice if none does."""
        c.probed_at = trio.current_time()
        port = int(c.base.trsvcid) if c.base.trsvcid.isdigit() else 0
        addr = await first_answering(c.addresses, port, c.base.host_iface, self.probe)
        if addr is not None and addr != c.chosen:
            log.info("%s: using %s (answers on port %d)", c.base.traddr, addr, port)
            c.chosen = addr

    def handle(self, msg: FinderMsg) -> None:
        """Apply one inbox message to the finder's state (no I/O; a reload goes to ``_apply``)."""
        match msg:
            case DcUpdate(status=status):
                if status.tid in self.running:
                    self.statuses[status.tid] = status
                    self._dirty = True
            case MdnsServiceUp(key=key, tid=announced):
                if self.config.zeroconf:  # late news from an mDNS actor being stopped is dropped
                    tid = self.mdns_tid(announced)
                    self.mdns_raw[key] = announced
                    self.mdns[key] = tid
                    self.discovered.add(tid)
            case MdnsServiceDown(key=key):
                self.mdns_raw.pop(key, None)  # the DC stays: removal waits for the persistence
                self.mdns.pop(key, None)
            case _:
                log.warning("finder: unexpected message %r ignored", type(msg).__name__)

    def mdns_tid(self, announced: Tid) -> Tid:
        """An announced DC with the TID defaults upstream applies: sys.conf's host NQN, and
        no host-iface when ``ignore-iface=true``."""
        return attrs.evolve(
            announced,
            host_nqn=announced.host_nqn or self.host_nqn,
            host_iface="" if self.config.ignore_iface else announced.host_iface,
        )

    def _refill_mdns(self) -> None:
        """After a reload: announced DCs take the new host NQN / ignore-iface."""
        for key, raw in self.mdns_raw.items():
            old, new = self.mdns[key], self.mdns_tid(raw)
            if old != new:
                self.mdns[key] = new
                self.discovered.discard(old)
                self.silent_since.pop(old, None)
                self.discovered.add(new)

    # --- the wanted set -----------------------------------------------------------------------

    def _usable(self, tid: Tid) -> bool:
        if tid.transport in ("tcp", "rdma"):
            norm = normalise_ip(tid.traddr)
            if norm is None or norm[0] not in self.config.ip_family or norm[1] in ("0.0.0.0", "::"):
                return False
        elif tid.transport not in ("fc", "loop") or not tid.traddr:
            return False
        if self.config.nvme_excluded(tid, "discovery controller"):  # /etc/nvme's list
            return False
        return not self.config.is_excluded(tid.as_dict())

    def wanted(self) -> dict[Tid, DcWanted]:
        out: dict[Tid, DcWanted] = {}

        def add(w: DcWanted) -> None:
            if not self._usable(w.tid):
                return
            cur = out.get(w.tid)
            if cur is None or ORIGIN_RANK[w.origin] < ORIGIN_RANK[cur.origin]:
                out[w.tid] = w

        for c in self.configured:
            add(DcWanted(attrs.evolve(c.base, traddr=c.chosen), "configured", dict(c.params)))
        for tid in self.nbft:
            add(DcWanted(tid, "nbft"))
        if self.config.zeroconf:
            for tid in sorted(self.discovered):
                add(DcWanted(tid, "discovered"))
        frontier = list(out.values())
        referrals = 0
        while frontier:  # referrals, breadth first, depth- and count-limited
            parent = frontier.pop(0)
            status = self.statuses.get(parent.tid)
            if status is None or parent.referral_depth >= MAX_REFERRAL_DEPTH:
                continue
            refs = [e for e in status.log_pages if e.subtype == SubType.REFERRAL]
            if len(refs) > MAX_REFERRALS_PER_DC:
                self._warn_once(
                    f"DC {parent.tid} lists {len(refs)} referrals; "
                    f"following the first {MAX_REFERRALS_PER_DC}"
                )
            for e in refs[:MAX_REFERRALS_PER_DC]:
                tid = referral_tid(e, parent.tid)
                if tid in out:
                    continue  # already wanted: no loop, no duplicate
                if referrals >= MAX_REFERRAL_DCS:
                    self._warn_once(
                        f"DC {parent.tid}: its referrals go beyond the cap of "
                        f"{MAX_REFERRAL_DCS} referred DCs in total; ignoring the rest"
                    )
                    return out
                w = DcWanted(tid, "referral", referral_depth=parent.referral_depth + 1)
                add(w)
                if tid in out:
                    referrals += 1
                    frontier.append(w)
        return out

    # --- reconcile ----------------------------------------------------------------------------

    def _expire_discovered(self, now: float) -> None:
        """Forget mDNS DCs that are unannounced and unconnected for the persistence period."""
        keep_for = self.config.zeroconf_connections_persistence
        announced = set(self.mdns.values())
        for tid in sorted(self.discovered):
            status = self.statuses.get(tid)
            if tid in announced or (status is not None and status.connected):
                self.silent_since.pop(tid, None)
                continue
            if not self._usable(tid):  # excluded or invalid: no reason to remember it
                self.discovered.discard(tid)
                self.silent_since.pop(tid, None)
                continue
            since = self.silent_since.setdefault(tid, now)
            if keep_for >= 0 and now - since >= keep_for:
                log.info("dropping mDNS DC %s: gone and unreachable for %g s", tid, keep_for)
                self.discovered.discard(tid)
                del self.silent_since[tid]

    def next_deadline(self) -> float:
        keep_for = self.config.zeroconf_connections_persistence
        if keep_for < 0 or not self.silent_since:
            return math.inf
        return min(self.silent_since.values()) + keep_for

    async def reconcile(self, sup: Any, updates: trio.MemorySendChannel[FinderMsg]) -> None:
        self.reconciles += 1
        now = trio.current_time()
        for c in self.configured:
            status = self.statuses.get(attrs.evolve(c.base, traddr=c.chosen))
            stuck = status is None or (not status.connected and status.connect_attempts >= 2)
            if len(c.addresses) > 1 and stuck and now - c.probed_at >= REPROBE_INTERVAL:
                await self._choose_address(c)
        self._expire_discovered(now)
        wanted = self.wanted()
        for tid in [t for t in self.running if t not in wanted]:
            log.info("removing DC %s (%s)", tid, self.running[tid].origin)
            await sup.stop(actor_name(tid))
            del self.running[tid]
            self._dirty = True
        for tid, w in wanted.items():
            cur = self.running.get(tid)
            if cur is not None and cur.params == w.params:
                if cur.origin != w.origin or cur.referral_depth != w.referral_depth:
                    self.running[tid] = w
                    self._dirty = True
                continue
            if cur is not None:
                log.info("restarting DC %s: its parameters changed", tid)
                await sup.stop(actor_name(tid))
            initial = self.statuses.get(tid)
            self.running[tid] = w
            self.statuses[tid] = attrs.evolve(
                initial or DcStatus(tid=tid, origin=w.origin), origin=w.origin, params=w.params
            )
            log.info("adding DC %s (%s)", tid, w.origin)
            sup.start(actor_name(tid), _bind(self.dc_factory, w, updates.clone(), initial))
            self._dirty = True
        for tid in [t for t in self.statuses if t not in self.running]:
            del self.statuses[tid]  # removed DCs, and cached ones nobody wants any more

    def publish(self) -> None:
        """A new snapshot (generation + 1) if anything changed; the state file follows it."""
        if not self._dirty:
            return
        self._dirty = False
        dcs = tuple(
            attrs.evolve(self.statuses[t], origin=w.origin)
            for t, w in sorted(self.running.items())
            if t in self.statuses
        )
        gen = self.published.value.generation + 1
        self.published.value = StafdSnapshot(dcs=dcs, generation=gen)
        self.save()

    def save(self) -> None:
        if self.state_store is None:
            return
        snap = self.published.value
        signature = tuple((d.tid, d.origin, d.genctr, d.log_pages) for d in snap.dcs)
        if signature != self._saved_signature and self.state_store.save(snap):
            self._saved_signature = signature

    def _warn_once(self, text: str) -> None:
        if text not in self._warned:
            self._warned.add(text)
            log.warning(text)

    # --- the loop -----------------------------------------------------------------------------

    def _restore(self) -> None:
        """Warm restart: publish the cached DCs and their log pages before anything connects."""
        cached = self.state_store.load() if self.state_store else {}
        for saved, status in cached.items():
            tid = saved
            if status.origin == "discovered":  # saved before host NQNs were filled in, maybe
                tid = self.mdns_tid(saved)
                if tid in cached and tid != saved:
                    continue  # the same DC saved both ways: keep the filled-in one
            self.statuses[tid] = restore(attrs.evolve(status, tid=tid))
            self.running[tid] = DcWanted(tid, status.origin)
            if status.origin == "discovered" and self.config.zeroconf:
                self.discovered.add(tid)
        if cached:
            self._dirty = True
            self.publish()
            log.info("restored %d DCs with their cached log pages", len(cached))

    async def run(
        self,
        inbox: trio.MemoryReceiveChannel[FinderMsg],
        inbox_send: trio.MemorySendChannel[FinderMsg],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Reconcile until cancelled; DC actors send their updates to clones of ``inbox_send``."""
        self._restore()
        await self.apply_config(self.config, self.host_nqn)
        try:
            async with open_supervisor() as sup:
                self.running = {}  # cached DCs start as actors below, with their cache
                await self.reconcile(sup, inbox_send)
                self.publish()
                task_status.started()
                while True:
                    msg = None
                    with trio.move_on_at(self.next_deadline()):  # only the wait is cut short
                        msg = await inbox.receive()
                    if msg is not None:
                        await self._apply(msg)
                    while True:  # drain: coalesce a burst into one reconcile
                        try:
                            msg = inbox.receive_nowait()
                        except trio.WouldBlock:
                            break
                        await self._apply(msg)
                    await self.reconcile(sup, inbox_send)
                    self.publish()
        finally:
            with trio.CancelScope(shield=True):
                self.save()

    async def _apply(self, msg: FinderMsg) -> None:
        match msg:
            case StafdConfigChanged(config=config, host_nqn=host_nqn):
                await self.apply_config(config, host_nqn)
            case _:
                self.handle(msg)


async def run_finder(
    *,
    inbox: trio.MemoryReceiveChannel[FinderMsg],
    inbox_send: trio.MemorySendChannel[FinderMsg],
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    **finder_args: Any,
) -> None:
    """Functional form of ``Finder(**finder_args).run(inbox, inbox_send)``."""
    await Finder(**finder_args).run(inbox, inbox_send, task_status=task_status)


def _bind(
    factory: DcFactory,
    w: DcWanted,
    send: trio.MemorySendChannel[DcUpdate],
    initial: DcStatus | None,
) -> Callable[[], Awaitable[None]]:
    async def actor() -> None:
        await factory(w, send, initial)  # the same clone across supervisor restarts

    return actor
