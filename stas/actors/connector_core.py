"""stacd's connector as a pure core: ``handle(state, msg) -> (state, effects)``.

Wanted = stacd.conf controllers + every NVM subsystem entry of stafd's log pages - exclusions.
Work per change is proportional to the change: a new log page for one DC re-plans only the
controllers that DC lists or listed (index DC -> controllers and controller -> DCs). stafd
being away changes nothing ("no answer" is not "no controllers"); only a changed log page, a
DC stafd removed, or the config removes a controller.

After a restart the connector has no memory of the log pages it followed; the ownership
registry says which controllers a previous run made (``Begin.ours``). Those stay untouched
until the picture is complete (``StafdSynced`` with every DC current); then the ones nothing
wants are disconnected under the rules of a normal removal. Without stafd, or while a DC's
page is only a cache, none is: an absence proves nothing (upstream PR #510's flaw).

Disconnects run in the background, several at once (the shell bounds them): a device is
"being disconnected" from the ``Disconnect`` until the shell's ``DisconnectDone``. Meanwhile
the core issues no second disconnect for it, no actor adopts it, and a controller wanted again
that it matches waits, unlisted, for that end (``deferred``): then it connects anew, or, if the
kernel kept the old one (the disconnect failed), adopts it. A device the kernel deleted leaves
the index at once; its 'remove' uevent, when it comes, is known as the old one's, not as a
newly connected namesake's (the kernel reuses the lowest free instance number).

A controller's 'add' is read from sysfs (``ReadController``) unless connects of ours to its
address are in the kernel's hands: then it is one of theirs, and the connect's answer
(``IocMade``) indexes it; an 'add' more than those connects can account for, or left when one
fails, is read then. So a connect costs one sysfs read (the backend's), not two (issue 8).

Nothing here waits or touches the kernel, the registry or a channel: the core says what to do
(``Effect``) and the shell in ``stas.actors.connector`` does it, reporting results back as
messages (``ControllerRead``, ``IocFellBehind``). So every decision is testable without Trio,
as h11 keeps its state machine apart from the socket. The state is owned by the core and
updated in place (copying 10,000 controllers per message would cost more than it says).
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Iterable, Mapping

import attrs

from stas.actors.connector_model import (
    LISTINGS_MAX,
    Address,
    Begin,
    Claim,
    ConnectorState,
    ControllerRead,
    CoreMsg,
    Disconnect,
    DisconnectDone,
    Effect,
    IocFellBehind,
    IocMade,
    IocRecord,
    IocStopped,
    Later,
    Listing,
    ReadController,
    Reconfigure,
    StartIoc,
    StopIoc,
    TellIoc,
    apply_config,
)
from stas.actors.ioc import DeviceRemoved, KernelFound, WantedChanged
from stas.kernel.api import ConnectRequest, KernelController, Uevent
from stas.kernel.options import InvalidOption
from stas.messages import (
    AuditDue,
    DcLogPages,
    DcRemoved,
    Dlpe,
    IocStatus,
    IocUpdate,
    IocWanted,
    KernelResync,
    StafdAppeared,
    StafdSynced,
    StafdVanished,
    Tid,
)
from stas.plan import (
    AUDIT,
    KernelIndex,
    audit_reason,
    auditable,
    connect_request,
    decide,
    iocs_of_dc,
    keeps_connection,
    merge,
)

log = logging.getLogger("stas.connector")

_NO_ENTRY: Mapping[str, str] = {}


# --- the core --------------------------------------------------------------------------------


def handle(st: ConnectorState, msg: CoreMsg) -> tuple[ConnectorState, list[Effect]]:
    """One message in; the (updated) state and what to do about it out."""
    fx: list[Effect] = []
    match msg:
        case IocUpdate(status=status, generation=generation):
            _on_status(st, status, generation, fx)
        case IocMade(update=IocUpdate(status=status, generation=generation), controller=made):
            _on_status(st, status, generation, fx, made)
        case DcLogPages(dc=dc, dlpes=dlpes):
            _stafd_data(st, fx)
            _evaluate(st, _set_dc(st, dc, dlpes), fx)
        case DcRemoved(dc=Tid() as dc):
            _stafd_data(st, fx)
            log.info("DC %s was removed from stafd", dc)
            _evaluate(st, _set_dc(st, dc, None), fx)
        case StafdAppeared(owner=owner):
            log.info("stafd is on the bus (%s)", owner or "name owner unknown")
        case StafdVanished():
            log.info("stafd is away; changing nothing")
        case StafdSynced(partial=partial):
            _sweep_previous(st, partial, fx)
        case Reconfigure(change=change, boot=boot):
            apply_config(st, change.config, change.host_nqn, change.hostid, boot)
            for dc, entries in list(st.pages.items()):
                _set_dc(st, dc, entries)
            _evaluate(st, {*st.actors, *st.configured, *st.listing}, fx, new_requests=True)
            _audit_all(st, fx)
        case AuditDue(device=None):
            st.audit_ready = True
            _audit_all(st, fx)
        case AuditDue(device=str(device)):
            if st.config.disconnect_scope == AUDIT and st.audit_ready:
                fx.append(ReadController(device, audit=True))
        case ControllerRead(device=device, controller=ctrl, audit=audit):
            _on_read(st, device, ctrl, audit, fx)
        case Uevent():
            _on_uevent(st, msg, fx)
        case KernelResync(controllers=controllers):
            _on_resync(st, controllers, fx)
        case IocFellBehind(tid=tid):
            _restart(st, tid, fx)
        case IocStopped():
            _on_stopped(st, msg, fx)
        case DisconnectDone(device=device, gone=gone):
            _on_disconnected(st, device, gone, fx)
        case Begin(controllers=controllers, ours=ours):
            st.index = KernelIndex(controllers)
            st.previous = {
                c.device: c
                for c in controllers
                if c.device in ours and c.is_io_controller and not c.is_discovery_controller
            }
            _evaluate(st, st.configured, fx)  # warm restart: adopts what is already there
            fx.append(Later(st.stafd_grace, AuditDue()))
        case _:
            log.debug("connector: ignoring %r", msg)
    return st, fx


def snapshot(st: ConnectorState) -> tuple[IocStatus, ...] | None:
    """The statuses to publish, sorted by Tid; None when nothing changed since last time.
    ``st.order`` is kept sorted as actors come and go, so this is one copy, not a sort
    (after every burst of a cold start, 10,000 records sorted again cost seconds)."""
    if not st.dirty:
        return None
    st.dirty = False
    return tuple(st.order)


def _tid_key(s: IocStatus) -> tuple[str, str, str, str, str, str, str]:
    """Tid's own order, without attrs' slow comparison methods."""
    return s.tid.dbus_args()


def _shown_at(st: ConnectorState, a: IocRecord) -> int:
    """Where ``a``'s status is in ``st.order`` (a binary search: no index to keep up)."""
    i = bisect.bisect_left(st.order, a.status.tid.dbus_args(), key=_tid_key)
    if i == len(st.order) or st.order[i] is not a.status:  # pragma: no cover - a bug
        raise AssertionError(f"{a.status.tid}: its status is not where the order says")
    return i


def _stafd_data(st: ConnectorState, fx: list[Effect]) -> None:
    if not st.stafd_known:
        st.stafd_known = True
        fx.append(Later(st.audit_settle, AuditDue()))


def _set_dc(st: ConnectorState, dc: Tid, entries: tuple[Dlpe, ...] | None) -> set[Tid]:
    """Replace one DC's entries; returns the controllers whose wanted state may change."""
    old = st.per_dc.pop(dc, {})
    new: dict[Tid, bool] = {}
    if entries is not None:
        st.pages[dc] = entries
        new = iocs_of_dc(
            dc,
            entries,
            ignore_iface=st.config.ignore_iface,
            warned=st.warned,
            host_nqn=st.host_nqn,
            entries=st.dlpe_of,
        )
        st.per_dc[dc] = new
    else:
        st.pages.pop(dc, None)
    for tid in old:
        if tid not in new:
            rest = tuple(p for p in st.listing.get(tid, ()) if p[0] != dc)
            if rest:
                st.listing[tid] = _shared_listing(st, rest)
            else:
                st.listing.pop(tid, None)
                st.dlpe_of.pop(tid, None)
    alone = {ncc: _shared_listing(st, ((dc, ncc),)) for ncc in (False, True)}
    for tid, ncc in new.items():
        listed = st.listing.get(tid)
        if listed is None or listed == alone[not ncc] or listed == alone[ncc]:
            st.listing[tid] = alone[ncc]  # listed by this DC only: the common case
        else:
            pairs = tuple(p if p[0] != dc else (dc, ncc) for p in listed)
            found = any(p[0] == dc for p in listed)
            st.listing[tid] = _shared_listing(st, pairs if found else (*listed, (dc, ncc)))
    return set(old) | set(new)


def _shared_listing(st: ConnectorState, listing: Listing) -> Listing:
    """``listing``, as the one tuple every controller listed alike shares (bounded table)."""
    found = st.listings.get(listing)
    if found is not None:
        return found
    if len(st.listings) < LISTINGS_MAX:
        st.listings[listing] = listing
    return listing


def _merge(st: ConnectorState, tid: Tid) -> IocWanted | None:
    """``plan.merge`` for one controller, its listing as the {DC: ncc} it reads."""
    listed = st.listing.get(tid)
    return merge(tid, st.configured, {tid: dict(listed)} if listed else {}, st.config)


def _evaluate(
    st: ConnectorState, tids: Iterable[Tid], fx: list[Effect], *, new_requests: bool = False
) -> None:
    """Re-plan ``tids`` only and say how to carry the plan out."""
    tids = set(tids)
    wanted: dict[Tid, IocWanted] = {}
    current: dict[Tid, IocStatus] = {}
    for tid in tids:
        st.evaluations += 1
        w = _merge(st, tid)
        if w is not None:
            wanted[tid] = w
        if tid in st.actors:
            current[tid] = st.actors[tid].status
    # The kernel side of these controllers only, minus devices other actors hold and those
    # being disconnected (neither adopted nor disconnected twice).
    part = KernelIndex(
        c
        for tid in tids
        for c in st.index.candidates(tid)
        if st.owner.get(c.device, tid) in tids and c.device not in st.disconnecting
    )
    plan = decide(wanted, current, part, st.config)
    for device, tid, reason in plan.disconnect:  # first: a connect below may have to wait
        if tid in st.actors:
            _stop(st, tid, fx)
        _disconnect(st, device, tid, reason, fx)
    for tid, _reason in plan.connect:
        if not _deferred(st, tid):
            _start(st, wanted[tid], None, fx)
    for tid, device in plan.adopt:
        if not _deferred(st, tid):
            _start(st, wanted[tid], part.by_device[device], fx)
    for tid, _reason in plan.keep:
        _update(st, st.actors[tid], wanted[tid], new_requests, fx)
    for tid in current:
        if tid not in wanted and tid in st.actors:
            status = st.actors[tid].status
            _stop(st, tid, fx)
            if status.connected:
                log.info(
                    "%s (%s): no longer wanted; kept connected (disconnect-scope=%s)",
                    tid,
                    status.device,
                    st.config.disconnect_scope,
                )


def _request(st: ConnectorState, w: IocWanted) -> ConnectRequest | None:
    try:
        return connect_request(w, st.config, st.hostid, _dlpe(st, w.tid) or None)
    except InvalidOption as exc:
        key = f"{w.tid}|{exc}"
        if key not in st.warned:
            st.warned.add(key)
            log.warning("%s: cannot connect: %s", w.tid, exc)
        return None


def _dlpe(st: ConnectorState, tid: Tid) -> Mapping[str, str]:
    """The log page entry listing ``tid`` ({} when only stacd.conf or the NBFT names it)."""
    e = st.dlpe_of.get(tid)
    return _NO_ENTRY if e is None else e.as_dict()


def _start(
    st: ConnectorState, w: IocWanted, adopt: KernelController | None, fx: list[Effect]
) -> None:
    request = _request(st, w)
    if request is None:
        return
    status = IocStatus(
        tid=w.tid, origin=w.origin, params=w.params, ncc=w.ncc, dlpe=_dlpe(st, w.tid)
    )
    if adopt is not None:  # what the actor is about to say; the device is ours already
        st.owner[adopt.device] = w.tid
        fx.append(Claim(adopt.device, fresh=False))
        status = attrs.evolve(
            status, device=adopt.device, state="connected", connected=True, adopted=True
        )
    st.starts += 1
    st.actors[w.tid] = IocRecord(w, status, st.starts)
    bisect.insort(st.order, status, key=_tid_key)
    st.dirty = True
    fx.append(StartIoc(w, request, adopt, status, st.starts))


def _update(
    st: ConnectorState, a: IocRecord, w: IocWanted, new_requests: bool, fx: list[Effect]
) -> None:
    """Tell a running actor what changed; a live connection is left alone. A new
    configuration (``new_requests``) is told to the actors not connected: they hold their
    request; a connected one holds none and asks ``request_for`` if it must connect again."""
    if a.wanted == w and not new_requests:
        return
    changed = (a.wanted.ncc, a.wanted.params, a.wanted.origin) != (w.ncc, w.params, w.origin)
    a.wanted = w
    if not changed and not (new_requests and not a.status.connected):
        return
    request = _request(st, w)
    if request is not None:
        fx.append(TellIoc(w.tid, WantedChanged(w, request)))


def request_for(st: ConnectorState, w: IocWanted) -> ConnectRequest | None:
    """The request an actor connects with, made from the current configuration when it needs
    one (None: the options are invalid now; logged once)."""
    a = st.actors.get(w.tid)
    return _request(st, a.wanted if a is not None else w)


def _stop(st: ConnectorState, tid: Tid, fx: list[Effect]) -> None:
    a = st.actors.pop(tid)
    del st.order[_shown_at(st, a)]
    if a.status.state == CONNECTING:
        _connect_ended(st, _address(tid), fx)
    known = a.status.device if a.status.connected else None
    if known is not None and st.owner.get(known) == tid:
        del st.owner[known]
    st.dirty = True
    fx.append(StopIoc(tid, known))


# --- disconnects in flight --------------------------------------------------------------------


def _disconnect(st: ConnectorState, device: str, tid: Tid, reason: str, fx: list[Effect]) -> None:
    """Ask the shell to disconnect ``device``, unless a disconnect of it is in flight."""
    if device in st.disconnecting:
        return
    st.disconnecting[device] = tid
    st.disconnecting_tids.setdefault(tid, set()).add(device)
    fx.append(Disconnect(device, tid, reason))


def _blockers(st: ConnectorState, tid: Tid) -> set[str]:
    """The devices being disconnected that a connect of ``tid`` would meet in the kernel: the
    ones issued for ``tid`` itself and any other the kernel lists as matching it."""
    found = {c.device for c in st.index.candidates(tid) if c.device in st.disconnecting}
    return found | st.disconnecting_tids.get(tid, set())


def _deferred(st: ConnectorState, tid: Tid) -> bool:
    """Wanted again while its old controller is being disconnected: wait for that to end
    (a connect now would meet the dying controller: EALREADY, or adopting it)."""
    blockers = _blockers(st, tid)
    for device in blockers:
        waiting = st.deferred.setdefault(device, set())
        if tid not in waiting:
            waiting.add(tid)
            log.info("%s: wanted again; connecting once %s is disconnected", tid, device)
    return bool(blockers)


def _on_disconnected(st: ConnectorState, device: str, gone: bool, fx: list[Effect]) -> None:
    """A disconnect ended: the controllers waiting for it are planned again (connected anew;
    adopted if the kernel kept the old one); a deleted device leaves the index at once."""
    tid = st.disconnecting.pop(device, None)
    if tid is None:
        return
    devices = st.disconnecting_tids.get(tid, set())
    devices.discard(device)
    if not devices:
        st.disconnecting_tids.pop(tid, None)
    removed = device in st.remove_seen
    st.remove_seen.discard(device)
    if gone:
        st.index.remove(device)
        st.previous.pop(device, None)
        if not removed:
            st.departed.add(device)  # its 'remove' uevent is still to come
    waiting = st.deferred.pop(device, set())
    if waiting:
        _evaluate(st, waiting, fx)


def _free_match(st: ConnectorState, tid: Tid) -> KernelController | None:
    """A kernel controller matching ``tid`` that no actor holds and none is disconnecting."""
    return next(
        (
            c
            for c in st.index.candidates(tid)
            if c.device not in st.owner and c.device not in st.disconnecting
        ),
        None,
    )


STOPPED_REASON = "connected just as its actor was stopped; no longer wanted"


def _on_stopped(st: ConnectorState, m: IocStopped, fx: list[Effect]) -> None:
    """A stopped actor's last word names a controller the core never heard of: its connect
    succeeded just as it was stopped, its 'connected' status lost or too late. A connect
    that succeeded is never lost: wanted again, the new actor adopts it; else it goes or
    stays as a normal removal's rules say, claimed as ours either way (as its status would
    have had it claimed)."""
    ctrl, tid, device = m.held, m.tid, m.held.device
    if device == m.known or device in st.owner or device in st.disconnecting:
        return  # decided about at the stop, another actor holds it, or it is going
    fx.append(Claim(device, fresh=not m.adopted))
    a = st.actors.get(tid)  # a restart: the same message started a new actor
    if a is not None and not a.status.connected:
        log.info("%s: %s, connected as its previous actor stopped, adopted", tid, device)
        st.owner[device] = tid
        fx.append(TellIoc(tid, KernelFound(ctrl)))
    elif _kept_by_rules(st, tid):
        log.info("%s (%s): %s; kept connected (disconnect-scope=%s)", tid, device,
                 STOPPED_REASON, st.config.disconnect_scope)  # fmt: skip
    else:
        _disconnect(st, device, tid, STOPPED_REASON, fx)
        return  # not indexed: it is going
    if device not in st.index.by_device:
        st.index.add(ctrl)  # its uevent may not have arrived yet


def _restart(st: ConnectorState, tid: Tid, fx: list[Effect]) -> None:
    """Restart an actor that missed events, from what the connector and the kernel know."""
    a = st.actors.get(tid)
    if a is None:
        return
    log.warning("%s: its actor fell behind; restarting it", tid)
    st.restarts += 1
    device = a.status.device if a.status.connected else None
    _stop(st, tid, fx)
    held = st.index.by_device.get(device) if device else None
    _start(st, a.wanted, held or _free_match(st, tid), fx)


def _on_status(
    st: ConnectorState,
    s: IocStatus,
    generation: int,
    fx: list[Effect],
    made: KernelController | None = None,
) -> None:
    a = st.actors.get(s.tid)
    if a is None or a.generation != generation:
        return  # a stopped actor's last words (its successor for the same Tid speaks for itself)
    if s.dlpe is not (dlpe := _dlpe(st, s.tid)):
        s = attrs.evolve(s, dlpe=dlpe)  # the actor does not know it; ls -d shows it
    st.order[_shown_at(st, a)] = s
    old, a.status = a.status, s
    ours = made is not None and s.connected and made.device == s.device
    if made is not None and ours and st.unread.pop(made.device, None) is not None:
        st.index.add(made)  # its 'add' came while it was being made: not read for it
    if (old.state == CONNECTING) != (s.state == CONNECTING):
        if s.state == CONNECTING:
            address = _address(s.tid)
            st.connecting[address] = st.connecting.get(address, 0) + 1
        else:
            _connect_ended(st, _address(s.tid), fx)
    moved = not s.connected or old.device != s.device
    if old.connected and moved and st.owner.get(old.device) == s.tid:
        del st.owner[old.device]
    if s.connected:
        st.owner[s.device] = s.tid
        if moved or not old.connected:
            fx.append(Claim(s.device, fresh=not s.adopted))  # ours if we made it
    st.dirty = True


# --- the kernel ------------------------------------------------------------------------------

CONNECTING = "connecting"  # an actor's state while its connect is in the kernel's hands


def _address(tid: Tid) -> Address:
    return (tid.transport, tid.traddr, tid.trsvcid)


def _uevent_address(ev: Uevent) -> Address | None:
    """Where the controller of an nvme uevent goes (the kernel's NVME_TR* variables)."""
    env = ev.env
    found = (env.get("NVME_TRTYPE"), env.get("NVME_TRADDR"), env.get("NVME_TRSVCID"))
    return None if None in found else found  # type: ignore[return-value]


def _unread_for(st: ConnectorState, address: Address) -> list[str]:
    return [device for device, at in st.unread.items() if at == address]


def _added(st: ConnectorState, device: str, address: Address | None, fx: list[Effect]) -> None:
    """A controller appeared. While connects of ours to its address are in the kernel's hands
    (as many as devices came unread for it, more), it is taken for one of theirs: its read
    waits for that connect's ``IocMade``, which holds it already (a sysfs read per connect
    saved). Otherwise it is read now, as any controller another made."""
    if address is not None and st.connecting.get(address, 0) > len(_unread_for(st, address)):
        st.unread[device] = address
    else:
        fx.append(ReadController(device))


def _connect_ended(st: ConnectorState, address: Address, fx: list[Effect]) -> None:
    """One connect to ``address`` left the kernel's hands. If more devices came unread for
    the address than connects remain, some are not ours, and which cannot be told: all of
    them are read (as each would have been at its 'add')."""
    left = st.connecting.get(address, 0) - 1
    if left > 0:
        st.connecting[address] = left
    else:
        st.connecting.pop(address, None)
    unread = _unread_for(st, address)
    if len(unread) > max(left, 0):
        for device in unread:
            del st.unread[device]
            fx.append(ReadController(device))


def _on_uevent(st: ConnectorState, ev: Uevent, fx: list[Effect]) -> None:
    if ev.subsystem != "nvme" or not ev.device.startswith("nvme"):
        return
    if ev.action in ("add", "remove"):
        st.unread.pop(ev.device, None)  # a remove: gone; an add: a namesake, seen anew
    if ev.device in st.departed and ev.action in ("add", "remove"):
        st.departed.discard(ev.device)  # the old one's 'remove', or a namesake's 'add' after it
        if ev.action == "remove":
            return  # a namesake connected since then is not the one removed
    if ev.action == "remove":
        if ev.device in st.disconnecting:
            st.remove_seen.add(ev.device)
        st.index.remove(ev.device)
        st.previous.pop(ev.device, None)
        tid = st.owner.pop(ev.device, None)
        if tid is not None and tid in st.actors:
            fx.append(TellIoc(tid, DeviceRemoved(ev.device)))
    elif ev.action == "add":
        _added(st, ev.device, _uevent_address(ev), fx)
        if st.config.disconnect_scope == AUDIT and ev.device not in st.owner:
            fx.append(Later(st.audit_settle, AuditDue(ev.device)))  # sysfs races the event


def _on_read(
    st: ConnectorState, device: str, ctrl: KernelController | None, audit: bool, fx: list[Effect]
) -> None:
    if not audit:
        if ctrl is not None:
            st.index.add(ctrl)
        return
    if ctrl is None or device in st.owner or device in st.disconnecting:
        return
    st.index.add(ctrl)
    if not auditable(ctrl, st.config.disconnect_trtypes) or any(ctrl.matches(t) for t in st.actors):
        return
    _disconnect(st, device, Tid.from_kernel(ctrl), audit_reason(st.config.disconnect_trtypes), fx)


def _on_resync(
    st: ConnectorState, controllers: Iterable[KernelController], fx: list[Effect]
) -> None:
    """The kernel's full list (uevents were lost): tell every actor what it missed."""
    st.index = KernelIndex(controllers)
    st.departed.clear()  # the full list is the truth: no 'remove' is still owed to us
    st.unread.clear()  # and every device in it is indexed
    for device in [d for d in st.previous if d not in st.index.by_device]:
        del st.previous[device]
    for tid, a in st.actors.items():
        if a.status.connected and a.status.device not in st.index.by_device:
            if st.owner.get(a.status.device) == tid:
                del st.owner[a.status.device]
            fx.append(TellIoc(tid, DeviceRemoved(a.status.device)))
        elif not a.status.connected:
            found = _free_match(st, tid)
            if found is not None:
                st.owner[found.device] = tid
                fx.append(TellIoc(tid, KernelFound(found)))
    _audit_all(st, fx)


def _audit_all(st: ConnectorState, fx: list[Effect]) -> None:
    """Audit scope: connections others made that nobody wants go."""
    if st.config.disconnect_scope != AUDIT or not st.audit_ready:
        return
    wanted = {t: a.wanted for t, a in st.actors.items()}
    current = {t: a.status for t, a in st.actors.items()}
    plan = decide(wanted, current, st.index, st.config)
    for dev, tid, reason in plan.disconnect:
        if dev not in st.owner and tid not in st.actors:
            _disconnect(st, dev, tid, reason, fx)


# --- what a previous run left ----------------------------------------------------------------

PREVIOUS_REASON = "connected by stacd before its restart; no log page lists it any more"


def _sweep_previous(st: ConnectorState, partial: tuple[Tid, ...], fx: list[Effect]) -> None:
    """A full sync arrived: with every DC current, what a previous run made and nothing wants
    now goes (once); with any DC unreachable or unread, everything stays for a later sync."""
    if not st.previous:
        return
    if partial:
        if not st.previous_waiting:
            st.previous_waiting = True
            log.info(
                "%d controller(s) connected by stacd before its restart kept until every DC's "
                "log page is current (not current: %s)",
                len(st.previous),
                ", ".join(str(dc) for dc in partial),
            )
        return
    previous, st.previous = st.previous, {}
    for device, ctrl in sorted(previous.items()):
        if st.index.by_device.get(device) != ctrl or device in st.owner:
            continue  # gone, renamed, or an actor holds it: a normal removal's business
        tid = Tid.from_kernel(ctrl)
        if _still_wanted(st, ctrl) or _kept_by_rules(st, tid):
            continue
        _disconnect(st, device, tid, PREVIOUS_REASON, fx)


def _still_wanted(st: ConnectorState, ctrl: KernelController) -> bool:
    """Some wanted controller (an actor: log page, stacd.conf, NBFT) describes it."""
    return any(ctrl.matches(t) for t in st.actors) or any(ctrl.matches(t) for t, _ in st.boot)


def _kept_by_rules(st: ConnectorState, tid: Tid) -> bool:
    """What a normal removal would leave connected: disconnect-scope, /etc/nvme exclusions."""
    scope, trtypes = st.config.disconnect_scope, st.config.disconnect_trtypes
    return keeps_connection(tid.transport, scope, trtypes) or st.config.nvme_excluded(tid)
