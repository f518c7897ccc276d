"""The finder's vocabulary and state, and the pure queries on it (the wanted set).

``stas.actors.finder_core`` holds the transitions (``handle``); this module holds what they
read and return: the messages the shell hands the core, the effects it asks for, the frozen
``FinderState``, and the wanted-set computation (configured, NBFT, mDNS, referrals).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeAlias

import attrs

from stas import net
from stas.constants import IP_TRANSPORTS, WELL_KNOWN_DISC_NQN, default_trsvcid
from stas.kernel.options import InvalidOption
from stas.messages import ORIGIN_RANK, DcStatus, StafdSnapshot, Tid
from stas.messages_stafd import (
    DcWanted,
)
from stas.nvme.logpage import LogPageEntry, SubType, TrType
from stas.tls_policy import referral_params

if TYPE_CHECKING:
    from stas.config import ServiceConfig

MAX_REFERRAL_DEPTH = 8  # libnvme's limit
MAX_REFERRALS_PER_DC = 64  # one rogue DC cannot make us connect everywhere...
MAX_REFERRAL_DCS = 256  # ...nor can a tree of them (64 per level would grow exponentially)
REPROBE_INTERVAL = 30.0


# --- what the shell hands the core directly (not over a channel) -------------------------------


@attrs.frozen
class ConfigLoaded:
    """stafd.conf/sys.conf (re)loaded, with the NBFT's DCs the shell read for this host NQN."""

    config: ServiceConfig
    host_nqn: str
    nbft: tuple[Tid, ...] = ()
    nbft_problems: tuple[str, ...] = ()  # one line per unusable table or entry


@attrs.frozen
class Restored:
    """The DCs of the state file (warm restart), before anything connects."""

    cached: Mapping[Tid, DcStatus]


@attrs.frozen
class Reconcile:
    """Bring the running DCs in line with the wanted set; ``now`` drives expiries and re-probes."""

    now: float


# --- effects ------------------------------------------------------------------------------------


@attrs.frozen
class StartDc:
    wanted: DcWanted
    initial: DcStatus | None


@attrs.frozen
class StopDc:
    """Stop the DC actor; the runner answers ``DcStopped`` once its cleanup is over."""

    tid: Tid


@attrs.frozen
class ResolveAddresses:
    """Resolve ``base.traddr``; the runner answers ``AddressesResolved(generation, base, ...)``."""

    generation: int
    base: Tid
    ip_family: tuple[int, ...]


@attrs.frozen
class ProbeAddresses:
    """Find the first of ``addresses`` accepting TCP; the runner answers ``AddressProbed``."""

    base: Tid
    addresses: tuple[str, ...]
    port: int
    iface: str


@attrs.frozen
class PublishSnapshot:
    snapshot: StafdSnapshot


@attrs.frozen
class LogLine:
    level: int
    text: str


Effect: TypeAlias = StartDc | StopDc | ResolveAddresses | ProbeAddresses | PublishSnapshot | LogLine
Effects: TypeAlias = list[Effect]


# --- the state ----------------------------------------------------------------------------------


@attrs.frozen
class Spec:
    """One ``controller=`` entry of the running configuration, before name resolution."""

    base: Tid
    params: Mapping[str, str]


@attrs.frozen
class Choice:
    """A resolved ``controller=`` entry: its addresses, in order, and the one used."""

    addresses: tuple[str, ...]
    chosen: str
    probed_at: float = -math.inf


def _empty() -> Mapping[Any, Any]:
    return {}


@attrs.frozen(hash=False)
class FinderState:
    """Everything the finder knows; replaced, never mutated, by ``handle``."""

    config: ServiceConfig
    host_nqn: str
    generation: int = 0  # of the last published snapshot
    config_gen: int = 0  # bumped on every ConfigLoaded: older resolutions are dropped
    specs: tuple[Spec, ...] = ()
    choices: Mapping[Tid, Choice] = attrs.field(factory=_empty)  # by Spec.base
    resolving: frozenset[Tid] = frozenset()  # bases whose resolution is awaited
    probing: frozenset[Tid] = frozenset()  # bases with a probe in flight
    nbft: tuple[Tid, ...] = ()  # the NBFT's discovery controllers, re-read on each reload
    mdns_raw: Mapping[str, Tid] = attrs.field(factory=_empty)  # announcement key -> as announced
    mdns: Mapping[str, Tid] = attrs.field(factory=_empty)  # the same with the TID defaults
    discovered: frozenset[Tid] = frozenset()  # every mDNS DC still kept (announced or not)
    silent_since: Mapping[Tid, float] = attrs.field(factory=_empty)  # unannounced, unconnected
    statuses: Mapping[Tid, DcStatus] = attrs.field(factory=_empty)
    running: Mapping[Tid, DcWanted] = attrs.field(factory=_empty)  # started, not asked to stop
    stopping: frozenset[Tid] = frozenset()  # stop asked, DcStopped not yet seen
    warned: frozenset[str] = frozenset()
    dirty: bool = False
    booted: bool = False  # the first reconcile waits for the first resolutions and probes
    reconciles: int = 0


def initial_state(config: ServiceConfig, host_nqn: str, generation: int = 0) -> FinderState:
    return FinderState(config=config, host_nqn=host_nqn, generation=generation)


# --- pure helpers -------------------------------------------------------------------------------


def actor_name(tid: Tid) -> str:
    """Unique per TID (``str(tid)`` omits the host NQN, so two TIDs could share it)."""
    return "dc|" + "|".join(tid.as_dict().values())


def referral_tid(e: LogPageEntry, parent: Tid) -> Tid:
    """The DC a referral entry names; it inherits the referring DC's host-side fields."""
    norm = net.normalise_ip(e.traddr.strip())
    transport = TrType.label_of(e.trtype)
    return Tid(
        transport=transport,
        traddr=norm[1] if norm else e.traddr.strip(),
        trsvcid=e.trsvcid.strip() or default_trsvcid(transport),
        subsysnqn=e.subnqn.strip() or WELL_KNOWN_DISC_NQN,
        host_traddr=parent.host_traddr,
        host_iface=parent.host_iface,
        host_nqn=parent.host_nqn,
    )


def mdns_tid(s: FinderState, announced: Tid) -> Tid:
    """An announced DC with the TID defaults upstream applies: sys.conf's host NQN, and no
    host-iface when ``ignore-iface=true``."""
    return attrs.evolve(
        announced,
        host_nqn=announced.host_nqn or s.host_nqn,
        host_iface="" if s.config.ignore_iface else announced.host_iface,
    )


def usable(config: ServiceConfig, tid: Tid) -> bool:
    """A DC the finder may run: an IP address ip-family allows (stas.net's rule), or an fc/loop
    traddr; and not excluded by /etc/nvme or the config."""
    if tid.transport in IP_TRANSPORTS:
        if not net.usable_address(tid.traddr, config.ip_family):
            return False
    elif tid.transport not in ("fc", "loop") or not tid.traddr:
        return False
    if config.nvme_excluded(tid, "discovery controller"):  # /etc/nvme's list
        return False
    return not config.is_excluded(tid.as_dict())


def wanted(s: FinderState) -> tuple[dict[Tid, DcWanted], list[str]]:
    """The DCs to run, and warnings about capped referrals (for the caller to log once)."""
    out: dict[Tid, DcWanted] = {}
    warnings: list[str] = []

    def add(w: DcWanted) -> None:
        if not usable(s.config, w.tid):
            return
        cur = out.get(w.tid)
        if cur is None or ORIGIN_RANK[w.origin] < ORIGIN_RANK[cur.origin]:
            out[w.tid] = w

    for spec in s.specs:
        c = s.choices.get(spec.base)
        if c is not None:
            add(DcWanted(attrs.evolve(spec.base, traddr=c.chosen), "configured", dict(spec.params)))
    for tid in s.nbft:
        add(DcWanted(tid, "nbft"))
    if s.config.zeroconf:
        for tid in sorted(s.discovered):
            add(DcWanted(tid, "discovered"))
    frontier = list(out.values())
    referrals = 0
    while frontier:  # referrals, breadth first, depth- and count-limited
        parent = frontier.pop(0)
        status = s.statuses.get(parent.tid)
        if status is None or parent.referral_depth >= MAX_REFERRAL_DEPTH:
            continue
        refs = [e for e in status.log_pages if e.subtype == SubType.REFERRAL]
        if len(refs) > MAX_REFERRALS_PER_DC:
            warnings.append(
                f"DC {parent.tid} lists {len(refs)} referrals; "
                f"following the first {MAX_REFERRALS_PER_DC}"
            )
        for e in refs[:MAX_REFERRALS_PER_DC]:
            tid = referral_tid(e, parent.tid)
            if tid in out:
                continue  # already wanted: no loop, no duplicate
            if referrals >= MAX_REFERRAL_DCS:
                warnings.append(
                    f"DC {parent.tid}: its referrals go beyond the cap of "
                    f"{MAX_REFERRAL_DCS} referred DCs in total; ignoring the rest"
                )
                return out, warnings
            try:  # a referral whose TREQ/TSAS demand TLS is reached with TLS or not at all
                params = referral_params(e)
            except InvalidOption as exc:
                warnings.append(f"DC {parent.tid}: referral {tid} not followed: {exc}")
                continue
            w = DcWanted(tid, "referral", params, referral_depth=parent.referral_depth + 1)
            add(w)
            if tid in out:
                referrals += 1
                frontier.append(w)
    return out, warnings


def next_deadline(s: FinderState) -> float:
    """When the earliest silent mDNS DC expires (inf: no timer needed)."""
    keep_for = s.config.zeroconf_connections_persistence
    if keep_for < 0 or not s.silent_since:
        return math.inf
    return min(s.silent_since.values()) + keep_for
