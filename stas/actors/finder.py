"""stafd's finder: which discovery controllers to keep, reconciled with the running DC actors.

Wanted = configured ``controller=`` entries + the firmware's NBFT discovery controllers +
mDNS announcements + referrals found in DC log pages, minus ``exclude=`` and addresses
``ip-family`` rules out. The decisions are ``stas.actors.finder_core`` (pure); this module is
the shell around it: it feeds the core its inbox, and executes the effects the core returns.
Slow effects (name resolution, TCP probes, stopping a DC actor) run as small tasks that send
their result back to the inbox, so the loop never waits on them and a DC update is applied at
once. Bursts are coalesced without waiting: everything already queued is applied, then one
reconcile runs. The latest status of every DC is published as immutable snapshots.

A ``controller=`` host name may resolve to several addresses: the finder keeps ONE DC per entry,
whose ``traddr`` is the first address that accepts a TCP connection (re-probed while the chosen
one does not answer), so the TID always names the address really used.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio
from trio_util import AsyncValue

from stas.actors import finder_core as core
from stas.actors.finder_core import (  # noqa: F401  (re-exported: the finder's limits)
    MAX_REFERRAL_DCS,
    MAX_REFERRAL_DEPTH,
    MAX_REFERRALS_PER_DC,
    REPROBE_INTERVAL,
    actor_name,
    referral_tid,
)
from stas.actors.supervisor import Supervisor, open_supervisor
from stas.config import ServiceConfig
from stas.messages import DcStatus, StafdSnapshot, Tid
from stas.messages_stafd import (
    AddressesResolved,
    AddressProbed,
    DcStopped,
    DcUpdate,
    DcWanted,
    FinderMsg,
    StafdConfigChanged,
)
from stas.nbft_files import has_tables
from stas.resolve import Probe, Resolver, first_answering, resolve_traddr, tcp_probe
from stas.state import StateStore

if TYPE_CHECKING:
    from stas.nbft import IfaceOf

log = logging.getLogger("stas.finder")

DcFactory = Callable[[DcWanted, trio.MemorySendChannel[DcUpdate], DcStatus | None], Awaitable[None]]


class Finder:
    """The shell around the finder's core; ``run`` drives it from an inbox."""

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
        iface_of: IfaceOf | None = None,
    ) -> None:
        self.nbft_dir = nbft_dir  # None: no NBFT (tests, demos)
        self.iface_of = iface_of  # None: stas.nbft.iface_of_hfi (the HFI's MAC in sysfs)
        self.dc_factory = dc_factory
        self.published = published
        self.state_store = state_store
        self.resolver = resolver
        self.probe = probe
        self.state = core.initial_state(config, host_nqn, published.value.generation)
        self._first = StafdConfigChanged(config, host_nqn)
        self._resolve_warned: set[str] = set()  # names whose resolution failure was logged
        self._saved_signature: object = None
        # set while ``run`` runs: where effects are executed
        self._sup: Supervisor | None = None
        self._tasks: trio.Nursery | None = None
        self._send: trio.MemorySendChannel[FinderMsg] | None = None

    # read-only views of the core's state (tests, diagnostics)
    @property
    def running(self) -> Mapping[Tid, DcWanted]:
        return self.state.running

    @property
    def statuses(self) -> Mapping[Tid, DcStatus]:
        return self.state.statuses

    @property
    def reconciles(self) -> int:
        return self.state.reconciles

    # --- feeding the core ---------------------------------------------------------------------

    def _loaded(self, config: ServiceConfig, host_nqn: str) -> core.ConfigLoaded:
        """The NBFT's DCs for this host NQN (upstream 2.3+: host-iface from the HFI's MAC, the
        table's host NQN when the firmware marks it configured); bad tables are named."""
        if self.nbft_dir is None or not has_tables(self.nbft_dir):
            return core.ConfigLoaded(config, host_nqn)  # the parser is imported only when used
        from stas.nbft import discovery_tids, iface_of_hfi, read_tables

        tables, errors = read_tables(self.nbft_dir)
        iface_of = self.iface_of or iface_of_hfi
        problems = [f"NBFT {text}; ignored" for text in errors]
        found: list[Tid] = []
        for path, table in tables.items():
            problems += [f"NBFT {path}: {problem}" for problem in table.problems]
            found += discovery_tids(table, host_nqn=host_nqn, iface_of=iface_of)
        return core.ConfigLoaded(config, host_nqn, tuple(found), tuple(problems))

    def _step(self, msg: object) -> None:
        """One message through the core; its effects are executed (or started) at once."""
        if isinstance(msg, StafdConfigChanged):
            msg = self._loaded(msg.config, msg.host_nqn)
        self.state, effects = core.handle(self.state, msg)
        for effect in effects:
            self._execute(effect)

    def _execute(self, effect: core.Effect) -> None:
        match effect:
            case core.LogLine(level=level, text=text):
                log.log(level, "%s", text)
            case core.PublishSnapshot(snapshot=snapshot):
                self.published.value = snapshot
                self.save()
            case core.StartDc(wanted=w, initial=initial):
                assert self._sup is not None and self._send is not None
                self._sup.start(
                    actor_name(w.tid), _bind(self.dc_factory, w, self._send.clone(), initial)
                )
            case core.StopDc(tid=tid):
                assert self._tasks is not None
                self._tasks.start_soon(self._stop, tid)
            case core.ResolveAddresses():
                assert self._tasks is not None
                self._tasks.start_soon(self._resolve, effect)
            case core.ProbeAddresses():
                assert self._tasks is not None
                self._tasks.start_soon(self._probe, effect)

    # --- effect runners: each answers with one message ----------------------------------------

    async def _answer(self, msg: FinderMsg) -> None:
        assert self._send is not None
        await self._send.send(msg)

    async def _stop(self, tid: Tid) -> None:
        assert self._sup is not None
        await self._sup.stop(actor_name(tid))
        await self._answer(DcStopped(tid))

    async def _resolve(self, r: core.ResolveAddresses) -> None:
        addresses = await resolve_traddr(
            r.base.traddr, ip_family=r.ip_family, resolver=self.resolver,
            warned=self._resolve_warned,
        )  # fmt: skip
        await self._answer(AddressesResolved(r.generation, r.base, tuple(addresses)))

    async def _probe(self, p: core.ProbeAddresses) -> None:
        at = trio.current_time()
        answering = await first_answering(p.addresses, p.port, p.iface, self.probe)
        await self._answer(AddressProbed(p.base, answering, at))

    # --- state file ---------------------------------------------------------------------------

    def save(self) -> None:
        if self.state_store is None:
            return
        snap = self.published.value
        signature = tuple((d.tid, d.origin, d.genctr, d.log_pages) for d in snap.dcs)
        if signature != self._saved_signature and self.state_store.save(snap):
            self._saved_signature = signature

    # --- the loop -----------------------------------------------------------------------------

    async def run(
        self,
        inbox: trio.MemoryReceiveChannel[FinderMsg],
        inbox_send: trio.MemorySendChannel[FinderMsg],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Reconcile until cancelled; DC actors and runners send to clones of ``inbox_send``.

        ``started`` follows the first reconcile, which waits for the configured names to be
        resolved and probed, so the cached and configured DCs are all published by then.
        """
        cached = self.state_store.load() if self.state_store else {}
        try:
            async with open_supervisor() as sup, trio.open_nursery() as tasks:
                self._sup, self._tasks, self._send = sup, tasks, inbox_send
                self._step(core.Restored(cached))
                self._step(self._first)
                started = False
                while True:
                    self._step(core.Reconcile(trio.current_time()))
                    if not started and self.state.booted:
                        started = True
                        task_status.started()
                    msg: object = None
                    with trio.move_on_at(core.next_deadline(self.state)):  # only the wait
                        msg = await inbox.receive()
                    if msg is not None:
                        self._step(msg)
                    while True:  # drain: coalesce a burst into one reconcile
                        try:
                            msg = inbox.receive_nowait()
                        except trio.WouldBlock:
                            break
                        self._step(msg)
        finally:
            self._sup = self._tasks = self._send = None
            with trio.CancelScope(shield=True):
                self.save()


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
