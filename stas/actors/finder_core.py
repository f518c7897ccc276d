"""The finder's decisions without I/O: ``handle(state, msg) -> (state, effects)``.

Why a pure core: the finder used to await DNS (up to 10 s), TCP probes (2 s each) and DC stops
(up to 10 s) inside its loop, so every DC update waited behind them. Here each decision is a
function of a frozen state and one message; what needs the outside world comes back as an
effect (start or stop a DC actor, resolve a name, probe addresses, publish a snapshot, log a
line). ``stas.actors.finder`` executes the effects with small runners that report their result
as a message, so its loop never blocks; the core is tested without Trio.

The state is never changed in place: ``handle`` returns a new one (dicts are copied on write).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping

import attrs

from stas.actors.finder_state import (
    MAX_REFERRAL_DCS,
    MAX_REFERRAL_DEPTH,
    MAX_REFERRALS_PER_DC,
    REPROBE_INTERVAL,
    Choice,
    ConfigLoaded,
    Effect,
    Effects,
    FinderState,
    LogLine,
    ProbeAddresses,
    PublishSnapshot,
    Reconcile,
    ResolveAddresses,
    Restored,
    Spec,
    StartDc,
    StopDc,
    actor_name,
    initial_state,
    mdns_tid,
    next_deadline,
    referral_tid,
    usable,
    wanted,
)
from stas.constants import IP_TRANSPORTS, TID_KEYS, WELL_KNOWN_DISC_NQN, default_trsvcid
from stas.messages import DcStatus, StafdSnapshot, Tid
from stas.messages_stafd import (
    AddressesResolved,
    AddressProbed,
    DcStopped,
    DcUpdate,
    MdnsServiceDown,
    MdnsServiceUp,
)
from stas.state import restore

__all__ = [  # the state module's names are part of the core's interface
    "MAX_REFERRALS_PER_DC",
    "MAX_REFERRAL_DCS",
    "MAX_REFERRAL_DEPTH",
    "REPROBE_INTERVAL",
    "ConfigLoaded",
    "Effect",
    "Effects",
    "FinderState",
    "LogLine",
    "ProbeAddresses",
    "PublishSnapshot",
    "Reconcile",
    "ResolveAddresses",
    "Restored",
    "StartDc",
    "StopDc",
    "actor_name",
    "handle",
    "initial_state",
    "mdns_tid",
    "next_deadline",
    "referral_tid",
    "usable",
    "wanted",
]  # fmt: skip


def _warn_once(s: FinderState, texts: list[str], effects: Effects) -> FinderState:
    new = [t for t in dict.fromkeys(texts) if t not in s.warned]
    effects.extend(LogLine(logging.WARNING, t) for t in new)
    return attrs.evolve(s, warned=s.warned | set(new)) if new else s


def _port(base: Tid) -> int:
    return int(base.trsvcid) if base.trsvcid.isdigit() else 0


def _probe(base: Tid, c: Choice) -> ProbeAddresses:
    return ProbeAddresses(base, c.addresses, _port(base), base.host_iface)


# --- the transitions ----------------------------------------------------------------------------


def handle(s: FinderState, msg: object) -> tuple[FinderState, Effects]:
    """Apply one message; returns the new state and what the shell must do."""
    effects: Effects = []
    match msg:
        case DcUpdate(status=status):
            if status.tid in s.running and status.tid not in s.stopping:
                s = attrs.evolve(s, statuses={**s.statuses, status.tid: status}, dirty=True)
        case MdnsServiceUp(key=key, tid=announced):
            if s.config.zeroconf:  # late news from an mDNS actor being stopped is dropped
                tid = mdns_tid(s, announced)
                s = attrs.evolve(
                    s,
                    mdns_raw={**s.mdns_raw, key: announced},
                    mdns={**s.mdns, key: tid},
                    discovered=s.discovered | {tid},
                )
        case MdnsServiceDown(key=key):  # the DC stays: removal waits for the persistence
            if key in s.mdns_raw or key in s.mdns:
                raw, mdns = dict(s.mdns_raw), dict(s.mdns)
                raw.pop(key, None)
                mdns.pop(key, None)
                s = attrs.evolve(s, mdns_raw=raw, mdns=mdns)
        case ConfigLoaded():
            s = _configure(s, msg, effects)
        case Restored(cached=cached):
            s = _restore(s, cached, effects)
        case AddressesResolved():
            s = _resolved(s, msg, effects)
        case AddressProbed():
            s = _probed(s, msg, effects)
        case DcStopped(tid=tid):
            s = attrs.evolve(s, stopping=s.stopping - {tid})
            w = s.running.get(tid)
            if w is not None:  # a restart: the old actor is gone, the new one starts now
                effects.append(LogLine(logging.INFO, f"adding DC {tid} ({w.origin})"))
                effects.append(StartDc(w, s.statuses.get(tid)))
        case Reconcile(now=now):
            s = _reconcile(s, now, effects)
        case _:
            text = f"finder: unexpected message {type(msg).__name__!r} ignored"
            effects.append(LogLine(logging.WARNING, text))
    return s, effects


def _configure(s: FinderState, msg: ConfigLoaded, effects: Effects) -> FinderState:
    """Take a (re)loaded configuration; names are resolved by the shell (ResolveAddresses)."""
    config = msg.config
    if not config.zeroconf:  # the mDNS actor stops: forget what it told us
        s = attrs.evolve(s, mdns_raw={}, mdns={}, discovered=frozenset(), silent_since={})
    s = attrs.evolve(s, config=config, host_nqn=msg.host_nqn, config_gen=s.config_gen + 1)
    s = _refill_mdns(s)
    s = _warn_once(s, list(msg.nbft_problems), effects)
    nbft: list[Tid] = []
    for tid in msg.nbft:
        tid = attrs.evolve(tid, host_iface="") if config.ignore_iface else tid
        if tid not in nbft:
            nbft.append(tid)
    if tuple(nbft) != s.nbft:
        text = f"NBFT: {len(nbft)} discovery controllers: {', '.join(map(str, nbft))}"
        effects.append(LogLine(logging.INFO, text))
    specs: list[Spec] = []
    choices: dict[Tid, Choice] = {}
    resolving: set[Tid] = set()
    for entry in config.controllers:
        base = Tid.from_spec(entry, ignore_iface=config.ignore_iface, host_nqn=msg.host_nqn)
        base = attrs.evolve(  # a discovery controller's defaults
            base,
            trsvcid=base.trsvcid or default_trsvcid(base.transport),
            subsysnqn=base.subsysnqn or WELL_KNOWN_DISC_NQN,
        )
        if config.is_excluded(base.as_dict()) or any(p.base == base for p in specs):
            continue  # excluded by name: no need to resolve it (checked again after)
        d = entry.as_tid_dict(ignore_iface=config.ignore_iface)
        specs.append(Spec(base, {k: v for k, v in d.items() if k not in TID_KEYS}))
        if base.transport in IP_TRANSPORTS:
            if base in s.choices:  # keep working meanwhile
                choices[base] = s.choices[base]
            resolving.add(base)
            effects.append(ResolveAddresses(s.config_gen, base, tuple(config.ip_family)))
        else:
            choices[base] = Choice((base.traddr,), base.traddr)
    return attrs.evolve(
        s, nbft=tuple(nbft), specs=tuple(specs), choices=choices, resolving=frozenset(resolving)
    )


def _refill_mdns(s: FinderState) -> FinderState:
    """After a reload: announced DCs take the new host NQN / ignore-iface."""
    mdns, discovered, silent = dict(s.mdns), set(s.discovered), dict(s.silent_since)
    for key, raw in s.mdns_raw.items():
        old, new = mdns[key], mdns_tid(s, raw)
        if old != new:
            mdns[key] = new
            discovered.discard(old)
            silent.pop(old, None)
            discovered.add(new)
    return attrs.evolve(s, mdns=mdns, discovered=frozenset(discovered), silent_since=silent)


def _restore(s: FinderState, cached: Mapping[Tid, DcStatus], effects: Effects) -> FinderState:
    """Warm restart: the cached DCs and their log pages are published before anything
    connects; the first reconcile starts those still wanted, with their cache."""
    statuses, discovered = dict(s.statuses), set(s.discovered)
    for saved, status in cached.items():
        tid = saved
        if status.origin == "discovered":  # saved before host NQNs were filled in, maybe
            tid = mdns_tid(s, saved)
            if tid in cached and tid != saved:
                continue  # the same DC saved both ways: keep the filled-in one
        statuses[tid] = restore(attrs.evolve(status, tid=tid))
        if status.origin == "discovered" and s.config.zeroconf:
            discovered.add(tid)
    if not cached:
        return s
    s = attrs.evolve(s, statuses=statuses, discovered=frozenset(discovered), dirty=True)
    s = _publish(s, effects)
    effects.append(LogLine(logging.INFO, f"restored {len(cached)} DCs with their cached log pages"))
    return s


def _resolved(s: FinderState, msg: AddressesResolved, effects: Effects) -> FinderState:
    base = msg.base
    if msg.generation != s.config_gen or base not in s.resolving:
        return s  # an answer for a configuration replaced since
    choices = dict(s.choices)
    s = attrs.evolve(s, resolving=s.resolving - {base})
    addresses = tuple(msg.addresses)
    if not addresses:
        choices.pop(base, None)
        s = _warn_once(s, [f"controller {base}: no usable address for {base.traddr!r}"], effects)
        return attrs.evolve(s, choices=choices)
    prev = choices.get(base)
    known = [a for a in addresses if attrs.evolve(base, traddr=a) in s.statuses]
    # keep a working choice; else the address a cached DC used (warm restart)
    chosen = prev.chosen if prev and prev.chosen in addresses else (known or addresses)[0]
    c = Choice(addresses, chosen, prev.probed_at if prev else -math.inf)
    choices[base] = c
    if len(addresses) > 1 and base not in s.probing:
        effects.append(_probe(base, c))
        s = attrs.evolve(s, probing=s.probing | {base})
    return attrs.evolve(s, choices=choices)


def _probed(s: FinderState, msg: AddressProbed, effects: Effects) -> FinderState:
    s = attrs.evolve(s, probing=s.probing - {msg.base})
    c = s.choices.get(msg.base)
    if c is None:
        return s  # the entry went away meanwhile
    c = attrs.evolve(c, probed_at=msg.at)
    if msg.answering is not None and msg.answering in c.addresses and msg.answering != c.chosen:
        text = f"{msg.base.traddr}: using {msg.answering} (answers on port {_port(msg.base)})"
        effects.append(LogLine(logging.INFO, text))
        c = attrs.evolve(c, chosen=msg.answering)
    return attrs.evolve(s, choices={**s.choices, msg.base: c})


def _reprobe(s: FinderState, now: float, effects: Effects) -> FinderState:
    """Entries with several addresses whose chosen one does not answer are probed again."""
    probing = set(s.probing)
    for spec in s.specs:
        c = s.choices.get(spec.base)
        if c is None or len(c.addresses) < 2 or spec.base in probing:
            continue
        status = s.statuses.get(attrs.evolve(spec.base, traddr=c.chosen))
        stuck = status is None or (not status.connected and status.connect_attempts >= 2)
        if stuck and now - c.probed_at >= REPROBE_INTERVAL:
            effects.append(_probe(spec.base, c))
            probing.add(spec.base)
    return attrs.evolve(s, probing=frozenset(probing))


def _expire_discovered(s: FinderState, now: float, effects: Effects) -> FinderState:
    """Forget mDNS DCs that are unannounced and unconnected for the persistence period."""
    keep_for = s.config.zeroconf_connections_persistence
    announced = set(s.mdns.values())
    discovered, silent = set(s.discovered), dict(s.silent_since)
    for tid in sorted(s.discovered):
        status = s.statuses.get(tid)
        if tid in announced or (status is not None and status.connected):
            silent.pop(tid, None)
            continue
        if not usable(s.config, tid):  # excluded or invalid: no reason to remember it
            discovered.discard(tid)
            silent.pop(tid, None)
            continue
        since = silent.setdefault(tid, now)
        if keep_for >= 0 and now - since >= keep_for:
            text = f"dropping mDNS DC {tid}: gone and unreachable for {keep_for:g} s"
            effects.append(LogLine(logging.INFO, text))
            discovered.discard(tid)
            del silent[tid]
    return attrs.evolve(s, discovered=frozenset(discovered), silent_since=silent)


def _reconcile(s: FinderState, now: float, effects: Effects) -> FinderState:
    if not s.booted and (s.resolving or s.probing):
        return s  # at start, configured DCs are only known once resolved and probed
    s = attrs.evolve(s, booted=True, reconciles=s.reconciles + 1)
    s = _reprobe(s, now, effects)
    s = _expire_discovered(s, now, effects)
    want, warnings = wanted(s)
    s = _warn_once(s, warnings, effects)
    running, statuses, stopping = dict(s.running), dict(s.statuses), set(s.stopping)
    dirty = s.dirty
    for tid in [t for t in running if t not in want]:
        effects.append(LogLine(logging.INFO, f"removing DC {tid} ({running.pop(tid).origin})"))
        if tid not in stopping:
            stopping.add(tid)
            effects.append(StopDc(tid))
        dirty = True
    for tid, w in want.items():
        cur = running.get(tid)
        if cur is not None and cur.params == w.params:
            if cur.origin != w.origin or cur.referral_depth != w.referral_depth:
                running[tid] = w
                dirty = True
            continue
        initial = statuses.get(tid)
        running[tid] = w
        base = initial or DcStatus(tid=tid, origin=w.origin)
        statuses[tid] = attrs.evolve(base, origin=w.origin, params=w.params)
        dirty = True
        if tid in stopping:
            continue  # started when the old actor is gone (DcStopped)
        if cur is not None:
            effects.append(LogLine(logging.INFO, f"restarting DC {tid}: its parameters changed"))
            stopping.add(tid)
            effects.append(StopDc(tid))
            continue
        effects.append(LogLine(logging.INFO, f"adding DC {tid} ({w.origin})"))
        effects.append(StartDc(w, initial))
    for tid in [t for t in statuses if t not in running]:
        del statuses[tid]  # removed DCs, and cached ones nobody wants any more
    s = attrs.evolve(
        s, running=running, statuses=statuses, stopping=frozenset(stopping), dirty=dirty
    )
    return _publish(s, effects)


def _publish(s: FinderState, effects: Effects) -> FinderState:
    """A new snapshot (generation + 1) if anything visible changed."""
    if not s.dirty:
        return s
    dcs = tuple(
        attrs.evolve(st, origin=s.running[t].origin) if t in s.running else st
        for t, st in sorted(s.statuses.items())
    )
    gen = s.generation + 1
    effects.append(PublishSnapshot(StafdSnapshot(dcs=dcs, generation=gen)))
    return attrs.evolve(s, generation=gen, dirty=False)
