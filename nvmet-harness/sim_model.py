"""The simulated target's state: ports, subsystems, links, referrals, GENCTR, DIM table.

Pure data and rules, no I/O, so the log page contents and GENCTR behaviour can be tested
without sockets. Modelled on Linux nvmet (drivers/nvme/target/discovery.c):

- one NVM subsystem entry (subtype 2) per subsystem linked to a port, carrying the port's
  trtype/adrfam/traddr/trsvcid, TREQ "not specified", PORTID = port id, CNTLID FFFFh,
  ASQSZ 32, EFLAGS 0 (EPCSD when ``epcsd=True``), filtered by the subsystem's host ACL;
- one referral entry (subtype 1) per configured referral;
- GENCTR is one global counter, +1 on every change (64-bit wrap).

Differences from nvmet, on purpose: without PLEO the page lists the entries of *every*
port (nvmet always answers port-local), so a host that asks for PLEO sees a difference;
``current_entry=True`` adds a subtype 3 entry per port (nvmet never does).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

import attrs
from nvmet_config import NvmetConf, Port, Subsystem

from stas.nvme.dim import DimData
from stas.nvme.logpage import (
    AdrFam,
    DiscoveryLogPage,
    EFlags,
    LogPageEntry,
    SubType,
    TrType,
)

WELL_KNOWN_DISCOVERY_NQN = "nqn.2014-08.org.nvmexpress.discovery"
DEFAULT_DC_NQN = "nqn.2014-08.org.nvmexpress.discovery:uuid:5e0cdc5a-57a5-4e1c-9d1b-0a57a5000001"
GENCTR_MASK = (1 << 64) - 1
CNTLID_DYNAMIC = 0xFFFF
ASQSZ = 32
TREQ_NOT_SPECIFIED = 0
DLPF_EXTENDED = 0x01
DLPF_PORT_LOCAL = 0x02

_SUBTYPE_RANK = {SubType.CURRENT_DISCOVERY: 0, SubType.NVME: 1, SubType.REFERRAL: 2}


@attrs.frozen
class Referral:
    """An extra referral entry advertised on one port (nvmet: ports/<n>/referrals/)."""

    port_id: int
    traddr: str
    trsvcid: str
    subnqn: str = WELL_KNOWN_DISCOVERY_NQN


@attrs.frozen
class Registration:
    """What a host told us with DIM register/update, and when (caller's clock)."""

    hostnqn: str
    data: DimData
    when: float


def _adrfam_of(traddr: str) -> AdrFam:
    try:
        ip = ipaddress.ip_address(traddr.split("%", 1)[0])
    except ValueError:
        return AdrFam.IPV4
    return AdrFam.IPV6 if ip.version == 6 else AdrFam.IPV4


def _enum_of(enum: type, value: object) -> int:
    """Config values may be labels ('tcp', 'ipv6') or numbers."""
    if isinstance(value, str):
        return int(enum.from_label(value))
    return int(enum(value))


class SimModel:
    """Mutable target state with a change counter and change observers."""

    def __init__(
        self,
        conf: NvmetConf,
        *,
        dc_nqn: str = DEFAULT_DC_NQN,
        epcsd: bool = False,
        current_entry: bool = False,
    ) -> None:
        self.dc_nqn = dc_nqn
        self.epcsd = epcsd
        self.current_entry = current_entry
        self._ports: dict[int, Port] = {p.id: p for p in conf.ports}
        self._subsystems: dict[str, Subsystem] = {s.nqn: s for s in conf.subsystems}
        self._links: dict[int, set[str]] = {pid: set() for pid in self._ports}
        for sub in conf.subsystems:
            if sub.port is not None and sub.port in self._links:
                self._links[sub.port].add(sub.nqn)
        self._referrals: list[Referral] = []
        self._registrations: dict[str, Registration] = {}
        self._observers: list[Callable[[], None]] = []
        self._genctr = 1

    # -- read side ---------------------------------------------------------------------
    @property
    def genctr(self) -> int:
        return self._genctr

    @property
    def ports(self) -> dict[int, Port]:
        return dict(self._ports)

    @property
    def subsystems(self) -> dict[str, Subsystem]:
        return dict(self._subsystems)

    @property
    def referrals(self) -> tuple[Referral, ...]:
        return tuple(self._referrals)

    @property
    def registrations(self) -> dict[str, Registration]:
        return dict(self._registrations)

    def linked(self, port_id: int) -> frozenset[str]:
        self._port(port_id)
        return frozenset(self._links[port_id])

    def is_discovery_nqn(self, nqn: str) -> bool:
        """Connect accepts the well-known NQN and our unique DC NQN (TP8013)."""
        return nqn in (WELL_KNOWN_DISCOVERY_NQN, self.dc_nqn)

    def describe(self) -> dict[str, object]:
        """A JSON-friendly snapshot (for the control socket's ``ls``)."""
        return {
            "genctr": self._genctr,
            "ports": [
                {
                    "id": pid,
                    "trtype": str(port.trtype),
                    "traddr": port.traddr,
                    "trsvcid": port.trsvcid,
                    "subsystems": sorted(self._links[pid]),
                }
                for pid, port in sorted(self._ports.items())
            ],
            "referrals": [attrs.asdict(r) for r in self._referrals],
            "registrations": sorted(self._registrations),
        }

    # -- changes -----------------------------------------------------------------------
    def subscribe(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback()`` after every change; returns a function that unsubscribes."""
        self._observers.append(callback)
        return lambda: self._observers.remove(callback)

    def bump(self) -> None:
        """Advance GENCTR (64-bit wrap) and tell the observers."""
        self._genctr = (self._genctr + 1) & GENCTR_MASK
        for callback in list(self._observers):
            callback()

    def link(self, port_id: int, nqn: str) -> None:
        self._port(port_id)
        self._subsystem(nqn)
        if nqn in self._links[port_id]:
            raise ValueError(f"subsystem {nqn!r} is already linked to port {port_id}")
        self._links[port_id].add(nqn)
        self.bump()

    def unlink(self, port_id: int, nqn: str) -> None:
        self._port(port_id)
        self._subsystem(nqn)
        if nqn not in self._links[port_id]:
            raise ValueError(f"subsystem {nqn!r} is not linked to port {port_id}")
        self._links[port_id].discard(nqn)
        self.bump()

    def add_referral(
        self, port_id: int, traddr: str, trsvcid: str | int, subnqn: str = WELL_KNOWN_DISCOVERY_NQN
    ) -> Referral:
        self._port(port_id)
        ref = Referral(port_id, traddr, str(trsvcid), subnqn)
        if ref in self._referrals:
            raise ValueError(f"port {port_id} already has referral {traddr}:{trsvcid}")
        self._referrals.append(ref)
        self.bump()
        return ref

    def remove_referral(self, ref: Referral) -> None:
        if ref not in self._referrals:
            raise ValueError(f"no such referral: {ref.traddr}:{ref.trsvcid} on port {ref.port_id}")
        self._referrals.remove(ref)
        self.bump()

    def set_endpoint(self, port_id: int, traddr: str, trsvcid: str | int) -> None:
        """Record the address a port actually listens on (ephemeral ports); no bump."""
        self._ports[port_id] = attrs.evolve(
            self._port(port_id), traddr=traddr, trsvcid=str(trsvcid)
        )

    def register(self, hostnqn: str, data: DimData, when: float) -> None:
        """DIM register or update: remember the host's latest data (no GENCTR change)."""
        self._registrations[hostnqn] = Registration(hostnqn, data, when)

    def deregister(self, hostnqn: str) -> bool:
        return self._registrations.pop(hostnqn, None) is not None

    # -- the log page ------------------------------------------------------------------
    def log_page(
        self,
        port_id: int,
        *,
        pleo: bool = False,
        extended: bool = False,
        hostnqn: str | None = None,
    ) -> DiscoveryLogPage:
        """The discovery log page as seen by ``hostnqn`` connected through ``port_id``."""
        self._port(port_id)
        port_ids = [port_id] if pleo else sorted(self._ports)
        entries: list[LogPageEntry] = []
        for pid in port_ids:
            port = self._ports[pid]
            if self.current_entry:
                entries.append(self._entry(port, SubType.CURRENT_DISCOVERY, self.dc_nqn))
            for nqn in self._links[pid]:
                allowed = {host.nqn for host in self._subsystems[nqn].allowed_hosts}
                if hostnqn is not None and allowed and hostnqn not in allowed:
                    continue
                entries.append(self._entry(port, SubType.NVME, nqn))
        for ref in self._referrals:
            if ref.port_id in port_ids:
                entries.append(self._referral_entry(ref))
        entries.sort(key=_sort_key)
        dlpf = (DLPF_EXTENDED if extended else 0) | (DLPF_PORT_LOCAL if pleo else 0)
        return DiscoveryLogPage(genctr=self._genctr, entries=tuple(entries), dlpf=dlpf)

    def _entry(self, port: Port, subtype: SubType, subnqn: str) -> LogPageEntry:
        eflags = int(EFlags.EPCSD) if self.epcsd else 0
        if subtype == SubType.CURRENT_DISCOVERY:
            eflags |= int(EFlags.DUPRETINFO)
        return LogPageEntry(
            trtype=_enum_of(TrType, port.trtype),
            adrfam=_enum_of(AdrFam, port.adrfam) if port.adrfam else int(_adrfam_of(port.traddr)),
            subtype=int(subtype),
            treq=TREQ_NOT_SPECIFIED,
            portid=port.id,
            cntlid=CNTLID_DYNAMIC,
            asqsz=ASQSZ,
            eflags=eflags,
            trsvcid=str(port.trsvcid),
            subnqn=subnqn,
            traddr=port.traddr,
        )

    def _referral_entry(self, ref: Referral) -> LogPageEntry:
        return LogPageEntry(
            trtype=int(TrType.TCP),
            adrfam=int(_adrfam_of(ref.traddr)),
            subtype=int(SubType.REFERRAL),
            treq=TREQ_NOT_SPECIFIED,
            portid=ref.port_id,
            cntlid=CNTLID_DYNAMIC,
            asqsz=ASQSZ,
            eflags=0,
            trsvcid=ref.trsvcid,
            subnqn=ref.subnqn,
            traddr=ref.traddr,
        )

    def _port(self, port_id: int) -> Port:
        try:
            return self._ports[port_id]
        except KeyError:
            raise ValueError(f"unknown port {port_id}") from None

    def _subsystem(self, nqn: str) -> Subsystem:
        try:
            return self._subsystems[nqn]
        except KeyError:
            raise ValueError(f"unknown subsystem {nqn!r}") from None


def _sort_key(entry: LogPageEntry) -> tuple[object, ...]:
    return (
        _SUBTYPE_RANK.get(SubType(entry.subtype), 9),
        entry.portid,
        entry.subnqn,
        entry.traddr,
        entry.trsvcid,
    )
