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
from stas.kernel import options as opt
from stas.kernel.api import ConnectRequest, KernelController, controller_matches, match_args
from stas.messages import IocWanted, Tid

log = logging.getLogger("stas.plan")

TID_KEYS = frozenset(Tid("", "", "", "").as_dict())
NCC = 0x4
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


def ioc_from_dlpe(dc: Tid, d: Mapping[str, str], *, ignore_iface: bool) -> Tid:
    """The I/O controller a DLPE describes, reached the way its DC was (same host side).

    Raises InvalidOption for anything the kernel must never see.
    """
    transport = d.get("trtype", "")
    traddr = opt.check_traddr(transport, d.get("traddr", ""))
    trsvcid = d.get("trsvcid", "")
    if transport in ("tcp", "rdma"):
        trsvcid = opt.check_port("trsvcid", trsvcid)
    return Tid(
        transport=transport,
        traddr=traddr,
        trsvcid=trsvcid,
        subsysnqn=opt.check_nqn("subnqn", d.get("subnqn", "")),
        host_traddr=dc.host_traddr,
        host_iface="" if ignore_iface else dc.host_iface,
        host_nqn=dc.host_nqn,
    )


def iocs_of_dc(
    dc: Tid, dlpes: Iterable[Mapping[str, str]], *, ignore_iface: bool, warned: set[str]
) -> dict[Tid, bool]:
    """One DC's NVM subsystem entries as {ioc: ncc}; bad entries logged once and skipped."""
    out: dict[Tid, bool] = {}
    for d in dlpes:
        if d.get("subtype") != "nvme":
            continue
        try:
            tid = ioc_from_dlpe(dc, d, ignore_iface=ignore_iface)
        except opt.InvalidOption as exc:
            key = f"{dc}|{exc}"
            if key not in warned:
                warned.add(key)
                log.warning("DC %s: ignoring log page entry: %s", dc, exc)
            continue
        try:
            ncc = bool(int(d.get("eflags", "0") or 0) & NCC)
        except ValueError:
            ncc = False
        out[tid] = out.get(tid, False) or ncc
    return out


def configured_iocs(config: ServiceConfig, host_nqn: str) -> dict[Tid, IocWanted]:
    out: dict[Tid, IocWanted] = {}
    for spec in config.controllers:
        d = spec.as_tid_dict(ignore_iface=config.ignore_iface)
        tid = Tid(
            transport=d["transport"],
            traddr=d["traddr"],
            trsvcid=d["trsvcid"],
            subsysnqn=d["subsysnqn"],
            host_traddr=d["host-traddr"],
            host_iface=d["host-iface"],
            host_nqn=d["host-nqn"] or host_nqn,
        )
        params = {k: v for k, v in d.items() if k not in TID_KEYS}
        out[tid] = IocWanted(tid, "configured", params=params)
    return out


def merge(
    tid: Tid,
    configured: Mapping[Tid, IocWanted],
    listing: Mapping[Tid, Mapping[Tid, bool]],
    config: ServiceConfig,
) -> IocWanted | None:
    """The wanted state of one controller from config and every DC listing it, or None."""
    if config.is_excluded(tid.as_dict()) or not usable(tid, config):
        return None
    if tid in configured:
        return configured[tid]
    dcs = listing.get(tid, {})
    if not dcs:
        return None
    return IocWanted(tid, "discovered", dcs=tuple(sorted(dcs)), ncc=all(dcs.values()))


def usable(tid: Tid, config: ServiceConfig) -> bool:
    if tid.transport in ("tcp", "rdma"):
        fam = 6 if ":" in tid.traddr else 4
        return fam in config.ip_family
    return tid.transport in ("fc", "loop")


def connect_request(w: IocWanted, config: ServiceConfig, hostid: str) -> ConnectRequest:
    """[Global] parameters, overridden per controller for configured ones (InvalidOption)."""
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
            values[k] = int(v)
        elif k in BOOL_PARAMS:
            values[k] = v == "true"
    t = w.tid
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
    )


def find_kernel(tid: Tid, kernel: Sequence[KernelController]) -> KernelController | None:
    for c in kernel:
        if c.is_discovery_controller:
            continue
        if controller_matches(c, **match_args(tid)):
            return c
    return None


def why(w: IocWanted) -> str:
    if w.origin == "configured":
        return "configured in stacd.conf"
    return "listed by DC " + ", ".join(str(dc) for dc in w.dcs)


@attrs.frozen
class Plan:
    connect: tuple[tuple[Tid, str], ...] = ()
    keep: tuple[tuple[Tid, str, str], ...] = ()  # tid, device, reason
    disconnect: tuple[tuple[str, str, str], ...] = ()  # device, description, reason


def keeps_connection(transport: str, config: ServiceConfig) -> bool:
    """Upstream's rule: what a removal leaves connected."""
    scope = config.disconnect_scope
    return scope == "no-disconnect" or (
        scope == "all-connections-matching-disconnect-trtypes"
        and transport not in config.disconnect_trtypes
    )


def decide(
    wanted: Mapping[Tid, IocWanted],
    managed: Mapping[Tid, str],
    kernel: Sequence[KernelController],
    config: ServiceConfig,
) -> Plan:
    """What to do now; ``managed`` maps the controllers stacd owns to their devices."""
    connect, keep, disconnect = [], [], []
    claimed: set[str] = set()
    for tid, w in sorted(wanted.items()):
        found = find_kernel(tid, kernel)
        if found is not None:
            keep.append((tid, found.device, why(w)))
            claimed.add(found.device)
        else:
            connect.append((tid, why(w)))
    for tid, device in sorted(managed.items()):
        if tid in wanted or not device or device in claimed:
            continue
        if keeps_connection(tid.transport, config):
            continue
        reason = f"no longer wanted; disconnect-scope={config.disconnect_scope}"
        disconnect.append((device, str(tid), reason))
        claimed.add(device)
    if config.disconnect_scope == "all-connections-matching-disconnect-trtypes":
        for c in kernel:
            if c.device in claimed or not c.is_io_controller or c.transport == "pcie":
                continue
            if c.transport in config.disconnect_trtypes:
                disconnect.append(
                    (
                        c.device,
                        f"({c.transport}, {c.traddr}, {c.trsvcid}, {c.subsysnqn})",
                        "not configured and in no log page; "
                        f"disconnect-trtypes={'+'.join(config.disconnect_trtypes)}",
                    )
                )
    return Plan(tuple(connect), tuple(keep), tuple(disconnect))


def format_plan(plan: Plan) -> str:
    lines = []
    for tid, reason in plan.connect:
        lines.append(f"connect     {tid}  <- {reason}")
    for tid, device, reason in plan.keep:
        lines.append(f"keep        {tid} as {device}  <- {reason}")
    for device, what, reason in plan.disconnect:
        lines.append(f"disconnect  {device} {what}  <- {reason}")
    return "\n".join(lines) if lines else "nothing to do"
