"""stacd's decisions as pure functions: which I/O controllers are wanted, and what to do.

Used by the connector at run time and by ``stacd --dry-run`` / ``stacctl plan``, so what the
plan prints is exactly what the daemon would do. Every DLPE passes the kernel option checks
before it can become a wanted controller: a hostile log page cannot reach the kernel.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence

import attrs

from stas.config import ServiceConfig
from stas.constants import IP_TRANSPORTS, TID_KEYS
from stas.kernel import options as opt
from stas.kernel.api import ConnectRequest, KernelController, controller_matches, match_args
from stas.messages import Dlpe, IocStatus, IocWanted, Tid, parse_dlpes
from stas.net import ip_version
from stas.tls_policy import tls_fields

log = logging.getLogger("stas.plan")

ADRFAM_VERSION = {"ipv4": 4, "ipv6": 6}
INT_PARAMS = (
    "kato",
    "queue-size",
    "nr-io-queues",
    "nr-write-queues",
    "nr-poll-queues",
    "reconnect-delay",
    "ctrl-loss-tmo",
)
BOOL_PARAMS = ("hdr-digest", "data-digest", "disable-sqflow")
SCOPES = (
    "only-stas-connections",
    "all-connections-matching-disconnect-trtypes",
    "no-disconnect",
)
AUDIT = SCOPES[1]
LogPages = Mapping[Tid, Sequence[Dlpe | Mapping[str, str]]]  # raw dicts are parsed on the way in


# --- what is wanted ----------------------------------------------------------------------------


def ioc_from_dlpe(dc: Tid, e: Dlpe, *, ignore_iface: bool, host_nqn: str = "") -> Tid:
    """The I/O controller an entry of ``dc``'s log page names, reached the way its DC was.

    Raises InvalidOption for anything the kernel must never see.
    """
    transport = e.transport
    traddr = opt.check_traddr(transport, e.traddr)
    if traddr == e.traddr:
        traddr = e.traddr  # the entry's shared copy: not one new string per controller
    trsvcid = e.trsvcid
    if transport in IP_TRANSPORTS:
        trsvcid = opt.check_port("trsvcid", trsvcid)
        want = ADRFAM_VERSION.get(e.adrfam)
        if want is not None and ip_version(traddr) != want:
            raise opt.InvalidOption("traddr", traddr, f"is not an {e.adrfam} address (adrfam)")
    elif trsvcid:
        raise opt.InvalidOption("trsvcid", trsvcid, f"must be empty for {transport}")
    checked = attrs.evolve(
        e, traddr=traddr, trsvcid=trsvcid, subsysnqn=opt.check_nqn("subnqn", e.subsysnqn)
    )
    return Tid.from_dlpe(checked, dc, ignore_iface=ignore_iface, host_nqn=host_nqn)


def iocs_of_dc(
    dc: Tid,
    dlpes: Iterable[Dlpe],
    *,
    ignore_iface: bool,
    warned: set[str],
    host_nqn: str = "",
    entries: dict[Tid, Dlpe] | None = None,
) -> dict[Tid, bool]:
    """One DC's NVM subsystem entries as {ioc: ncc}; bad entries logged once and skipped.
    ``entries`` (if given) receives the entry each controller came from."""
    out: dict[Tid, bool] = {}
    for e in dlpes:
        if not e.is_nvm_subsystem:
            continue
        try:
            tid = ioc_from_dlpe(dc, e, ignore_iface=ignore_iface, host_nqn=host_nqn)
        except opt.InvalidOption as exc:
            key = f"{dc}|{exc}"
            if key not in warned:
                warned.add(key)
                log.warning("DC %s: ignoring log page entry: %s", dc, exc)
            continue
        out[tid] = out.get(tid, False) or e.ncc
        if entries is not None:
            entries[tid] = e
    return out


def configured_iocs(config: ServiceConfig, host_nqn: str) -> dict[Tid, IocWanted]:
    """stacd.conf's ``controller=`` lines (host NQN defaulted to the system's)."""
    out: dict[Tid, IocWanted] = {}
    for spec in config.controllers:
        tid = Tid.from_spec(spec, ignore_iface=config.ignore_iface, host_nqn=host_nqn)
        params = {k: v for k, v in spec.as_tid_dict().items() if k not in TID_KEYS}
        out[tid] = IocWanted(tid, "configured", params=params)
    return out


def with_boot_subsystems(
    configured: Mapping[Tid, IocWanted], boot: Iterable[tuple[Tid, Mapping[str, str]]]
) -> dict[Tid, IocWanted]:
    """stacd.conf's controllers plus the NBFT's boot subsystems (origin 'nbft', stacd.conf's
    parameters winning): these are wanted whatever log pages and exclusions say, so they are
    adopted and never disconnected (they may hold the root file system)."""
    out = dict(configured)
    for tid, params in boot:
        cur = out.get(tid)
        out[tid] = IocWanted(tid, "nbft", params={**params, **(cur.params if cur else {})})
    return out


def usable(tid: Tid, config: ServiceConfig) -> bool:
    """ip-family filter for IP transports; fc and loop always pass. A traddr that is no IP
    literal (a host name in stacd.conf) is left to the option checks, which name it."""
    if tid.transport in IP_TRANSPORTS:
        version = ip_version(tid.traddr)
        return version is None or version in config.ip_family
    return tid.transport in ("fc", "loop")


def merge(
    tid: Tid,
    configured: Mapping[Tid, IocWanted],
    listing: Mapping[Tid, Mapping[Tid, bool]],
    config: ServiceConfig,
) -> IocWanted | None:
    """The wanted state of one controller from config and every DC listing it, or None.

    A boot subsystem (NBFT) wins over everything; then exclusion; a ``controller=`` line wins
    over log pages. NCC holds only while every DC listing the controller says so.
    """
    if tid in configured and configured[tid].origin == "nbft":
        return configured[tid]
    if config.nvme_excluded(tid):  # /etc/nvme/exclusions.conf: never connected
        return None
    if config.is_excluded(tid.as_dict()) or not usable(tid, config):
        return None
    if tid in configured:
        return configured[tid]
    dcs = listing.get(tid, {})
    if not dcs:
        return None
    return IocWanted(tid, "discovered", dcs=tuple(sorted(dcs)), ncc=all(dcs.values()))


def wanted_iocs(
    *,
    config: ServiceConfig,
    log_pages: LogPages,
    host_nqn: str,
    ignore_iface: bool | None = None,
    boot: Iterable[tuple[Tid, Mapping[str, str]]] = (),
) -> dict[Tid, IocWanted]:
    """stacd.conf controllers + every usable NVM entry of the log pages - exclusions, and the
    NBFT's boot subsystems (``boot``) whatever the rest says."""
    ignore = config.ignore_iface if ignore_iface is None else ignore_iface
    configured = with_boot_subsystems(configured_iocs(config, host_nqn), boot)
    listing: dict[Tid, dict[Tid, bool]] = {}
    warned: set[str] = set()
    for dc, dlpes in log_pages.items():
        entries = parse_dlpes(dlpes)
        found = iocs_of_dc(dc, entries, ignore_iface=ignore, warned=warned, host_nqn=host_nqn)
        for tid, ncc in found.items():
            listing.setdefault(tid, {})[dc] = ncc
    out = {}
    for tid in {*configured, *listing}:
        w = merge(tid, configured, listing, config)
        if w is not None:
            out[tid] = w
    return out


def connect_request(
    w: IocWanted, config: ServiceConfig, hostid: str, entry: Mapping[str, str] | None = None
) -> ConnectRequest:
    """[Global] parameters, overridden per controller for configured ones (InvalidOption);
    ``entry`` (the log page entry listing the controller) may demand TLS (stas.tls_policy)."""
    g = config
    values: dict[str, object] = {
        "kato": g.kato,
        "queue-size": g.queue_size,
        "nr-io-queues": g.nr_io_queues,
        "nr-write-queues": g.nr_write_queues,
        "nr-poll-queues": g.nr_poll_queues,
        "reconnect-delay": g.reconnect_delay,
        "ctrl-loss-tmo": g.ctrl_loss_tmo,
        "hdr-digest": g.hdr_digest,
        "data-digest": g.data_digest,
        "disable-sqflow": bool(g.disable_sqflow),
    }
    for k, v in w.params.items():
        if k in INT_PARAMS:
            try:
                values[k] = int(v)
            except ValueError:
                raise opt.InvalidOption(k, v, "is not an integer") from None
        elif k in BOOL_PARAMS:
            values[k] = v == "true"
    t = w.tid
    tls = tls_fields(w.params, t.transport, entry, tls=g.tls, tls_key=g.tls_key, keyring=g.keyring)
    return ConnectRequest(
        transport=t.transport,
        traddr=t.traddr,
        trsvcid=t.trsvcid,
        subsysnqn=t.subsysnqn,
        hostnqn=t.host_nqn,
        hostid=hostid,
        host_traddr=t.host_traddr,
        host_iface=t.host_iface,
        dhchap_secret=w.params.get("dhchap-secret"),
        dhchap_ctrl_secret=w.params.get("dhchap-ctrl-secret"),
        **{k.replace("-", "_"): v for k, v in values.items()},  # type: ignore[arg-type]
        **tls,  # type: ignore[arg-type]
    )


# --- the kernel side ---------------------------------------------------------------------------


def find_kernel(tid: Tid, kernel: Iterable[KernelController]) -> KernelController | None:
    """The kernel I/O controller ``tid`` describes (linear; see KernelIndex for many)."""
    for c in kernel:
        if c.is_discovery_controller:
            continue
        if controller_matches(c, **match_args(tid)):
            return c
    return None


class KernelIndex:
    """The kernel's controllers by device and by (transport, trsvcid, subsysnqn).

    Lookups cost the handful of controllers sharing a subsystem NQN, not all of them: with
    10,000 controllers a linear match per wanted controller would be 10^8 comparisons.
    """

    def __init__(self, controllers: Iterable[KernelController] = ()) -> None:
        self.by_device: dict[str, KernelController] = {}
        self._by_key: dict[tuple[str, str, str], dict[str, KernelController]] = {}
        for c in controllers:
            self.add(c)

    @staticmethod
    def _key(x: KernelController | Tid) -> tuple[str, str, str]:
        return (x.transport, x.trsvcid, x.subsysnqn)

    def add(self, c: KernelController) -> None:
        self.remove(c.device)
        self.by_device[c.device] = c
        self._by_key.setdefault(self._key(c), {})[c.device] = c

    def remove(self, device: str) -> KernelController | None:
        old = self.by_device.pop(device, None)
        if old is not None:
            bucket = self._by_key.get(self._key(old), {})
            bucket.pop(device, None)
            if not bucket:
                self._by_key.pop(self._key(old), None)
        return old

    def candidates(self, tid: Tid) -> list[KernelController]:
        """Every non-discovery controller matching ``tid``."""
        bucket = self._by_key.get(self._key(tid), {})
        args = match_args(tid)
        return [
            c
            for c in bucket.values()
            if not c.is_discovery_controller and controller_matches(c, **args)
        ]

    def find(self, tid: Tid, *, skip: Mapping[str, object] = {}) -> KernelController | None:
        """The first matching controller whose device is not in ``skip``."""
        return next((c for c in self.candidates(tid) if c.device not in skip), None)

    def __len__(self) -> int:
        return len(self.by_device)


# --- decisions ---------------------------------------------------------------------------------


def why(w: IocWanted) -> str:
    """Where the wish comes from: the config line or the DC log pages listing it."""
    if w.origin == "configured":
        return "configured in stacd.conf"
    if w.origin == "nbft":
        return "boot subsystem in the firmware's NBFT"
    return "listed by DC " + ", ".join(str(dc) for dc in w.dcs)


def keeps_connection(transport: str, scope: str, trtypes: Sequence[str]) -> bool:
    """Upstream's rule: what a removal leaves connected."""
    return scope == "no-disconnect" or (scope == AUDIT and transport not in trtypes)


def audit_reason(trtypes: Sequence[str]) -> str:
    """Why the audit scope removes a connection stacd did not make."""
    return f"not configured and in no log page; disconnect-trtypes={'+'.join(trtypes)}"


def auditable(c: KernelController, trtypes: Sequence[str]) -> bool:
    """Connections the audit scope may remove: I/O controllers of the listed transports only."""
    return (
        c.is_io_controller
        and not c.is_discovery_controller
        and c.transport != "pcie"
        and c.transport in trtypes
    )


@attrs.frozen
class Plan:
    connect: tuple[tuple[Tid, str], ...] = ()  # tid, reason
    keep: tuple[tuple[Tid, str], ...] = ()  # tid, reason
    disconnect: tuple[tuple[str, Tid, str], ...] = ()  # device, tid, reason
    adopt: tuple[tuple[Tid, str], ...] = ()  # tid, existing device
    reasons: Mapping[Tid, str] = attrs.field(factory=dict)  # why each wanted one is wanted


def removal_reason(tid: Tid, status: IocStatus, excluded: bool, scope: str) -> str:
    if excluded:
        what = "excluded in stacd.conf"
    elif status.origin == "configured":
        what = "no longer configured in stacd.conf"
    else:
        what = "no longer in any log page"
    return f"{what}; disconnect-scope={scope}"


def decide(
    wanted: Mapping[Tid, IocWanted],
    current: Mapping[Tid, IocStatus],
    kernel_controllers: Sequence[KernelController] | KernelIndex,
    config: ServiceConfig | None = None,
    *,
    scope: str | None = None,
    trtypes: Sequence[str] | None = None,
) -> Plan:
    """What to do now.

    ``current`` is what stacd manages (its running actors, adopted ones included). ``config``
    (if given) supplies scope and trtypes and names exclusions in the reasons. The audit scope
    only looks at the kernel controllers passed in, so a caller planning part of the world
    passes the part of the kernel that goes with it.
    """
    scope = scope or (config.disconnect_scope if config else SCOPES[0])
    trtypes = tuple(trtypes or (config.disconnect_trtypes if config else ("tcp",)))
    index = (
        kernel_controllers
        if isinstance(kernel_controllers, KernelIndex)
        else KernelIndex(kernel_controllers)
    )
    connect, keep, disconnect, adopt = [], [], [], []
    claimed: dict[str, Tid] = {s.device: t for t, s in current.items() if s.connected}
    reasons = {tid: why(w) for tid, w in wanted.items()}
    for tid in sorted(wanted):
        status = current.get(tid)
        if status is not None:
            state = f"connected as {status.device}" if status.connected else status.state
            keep.append((tid, f"{reasons[tid]}; {state}"))
            continue
        found = index.find(tid, skip=claimed)
        if found is not None:
            adopt.append((tid, found.device))
            claimed[found.device] = tid
        else:
            connect.append((tid, reasons[tid]))
    for tid in sorted(current):
        status = current[tid]
        if tid in wanted or not status.connected:
            continue
        if keeps_connection(tid.transport, scope, trtypes):
            continue
        if config is not None and config.nvme_excluded(tid):  # nor disconnected
            continue
        excluded = config is not None and config.is_excluded(tid.as_dict())
        disconnect.append((status.device, tid, removal_reason(tid, status, excluded, scope)))
    if scope == AUDIT:
        wanted_match = {c.device for t in wanted for c in index.candidates(t)}
        for c in sorted(index.by_device.values(), key=lambda c: c.device):
            if c.device in claimed or c.device in wanted_match or not auditable(c, trtypes):
                continue
            if config is not None and config.nvme_excluded(Tid.from_kernel(c)):
                continue
            disconnect.append((c.device, Tid.from_kernel(c), audit_reason(trtypes)))
    return Plan(tuple(connect), tuple(keep), tuple(disconnect), tuple(adopt), reasons)


def format_plan(plan: Plan) -> str:
    """Human-readable, one action per line, each with its reason."""
    lines = []
    for tid, reason in plan.connect:
        lines.append(f"connect     {tid}  <- {reason}")
    for tid, device in plan.adopt:
        lines.append(f"adopt       {tid} as {device}  <- {plan.reasons.get(tid, '')}")
    for tid, reason in plan.keep:
        lines.append(f"keep        {tid}  <- {reason}")
    for device, tid, reason in plan.disconnect:
        lines.append(f"disconnect  {device} {tid}  <- {reason}")
    return "\n".join(lines) if lines else "nothing to do"
