"""The contract between actors: every message that crosses a memory channel, frozen.

Actors never share mutable state. What one actor needs from another arrives here as an
immutable value: a command, an event, or a snapshot of published state.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

import attrs

if TYPE_CHECKING:  # annotations only: stacd never needs the log page codec
    from stas.nvme.logpage import LogPageEntry

WELL_KNOWN_DISC_NQN = "nqn.2014-08.org.nvmexpress.discovery"

Origin = Literal["configured", "nbft", "discovered", "referral"]
# which origin a DC found several ways shows; 'nbft': the firmware's boot table (NBFT)
ORIGIN_RANK: Mapping[str, int] = {"configured": 0, "nbft": 1, "referral": 2, "discovered": 3}


@attrs.frozen(order=True)
class Tid:
    """Transport identifier: what makes two controllers the same controller (upstream §5.2)."""

    transport: str
    traddr: str
    trsvcid: str
    subsysnqn: str
    host_traddr: str = ""
    host_iface: str = ""
    host_nqn: str = ""

    def as_dict(self) -> dict[str, str]:
        """Upstream's TID dict (the keys users see in ``stafctl ls``)."""
        return {
            "transport": self.transport,
            "traddr": self.traddr,
            "trsvcid": self.trsvcid,
            "subsysnqn": self.subsysnqn,
            "host-traddr": self.host_traddr,
            "host-iface": self.host_iface,
            "host-nqn": self.host_nqn,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, str]) -> Tid:
        return cls(
            transport=d.get("transport", ""),
            traddr=d.get("traddr", ""),
            trsvcid=d.get("trsvcid", ""),
            subsysnqn=d.get("subsysnqn", ""),
            host_traddr=d.get("host-traddr", ""),
            host_iface=d.get("host-iface", ""),
            host_nqn=d.get("host-nqn", ""),
        )

    def __str__(self) -> str:
        """Upstream's log form, e.g. ``(tcp, ::1, 8009, nqn..., eth0, 10.0.0.1)``."""
        parts = [self.transport, self.traddr, self.trsvcid, self.subsysnqn]
        parts += [p for p in (self.host_iface, self.host_traddr) if p]
        return "(" + ", ".join(p for p in parts if p) + ")"


@attrs.frozen
class DcWanted:
    """A discovery controller the finder wants connected, and where the wish came from."""

    tid: Tid
    origin: str
    params: Mapping[str, str] = attrs.field(factory=dict)  # per-controller config keys
    referral_depth: int = 0


# --- mDNS actor -> finder -------------------------------------------------------------------


@attrs.frozen
class MdnsServiceUp:
    """A reachable ``_nvme-disc._tcp`` service; ``key`` identifies the announcement."""

    key: str
    tid: Tid


@attrs.frozen
class MdnsServiceDown:
    """The announcement ``key`` went away (goodbye or expiry)."""

    key: str


# --- DC actor -> finder ---------------------------------------------------------------------


@attrs.frozen
class DcStatus:
    """Everything visible about one discovery controller, published by its actor."""

    tid: Tid
    origin: str
    device: str = "nvme?"
    state: str = "idle"  # idle, connecting, connected, disconnected, backoff
    connected: bool = False
    connect_attempts: int = 0
    last_error: str = ""
    cntrltype: str = ""
    dctype: str = ""
    registered: bool = False
    genctr: int | None = None
    log_pages: tuple[LogPageEntry, ...] = ()
    params: Mapping[str, str] = attrs.field(factory=dict)
    link: str = ""  # the connection behind ``device`` when it is no kernel device (userspace)

    def dlpes(self) -> list[dict[str, str]]:
        """The cached log page as upstream's DLPE dicts, usable entries only (upstream §3.4)."""
        return [e.to_dlpe() for e in self.log_pages if e.traddr not in ("", "0.0.0.0", "::")]

    def referrals(self) -> tuple[LogPageEntry, ...]:
        return tuple(e for e in self.log_pages if e.subtype == 1)


@attrs.frozen
class DcUpdate:
    """A DC actor's status changed; ``log_page_changed`` when the cached content changed."""

    status: DcStatus
    log_page_changed: bool = False


@attrs.frozen
class StafdSnapshot:
    """stafd's published state: read by the D-Bus actor, never mutated."""

    dcs: tuple[DcStatus, ...] = ()
    generation: int = 0

    def find(self, tid: Tid) -> DcStatus | None:
        return next((dc for dc in self.dcs if dc.tid == tid), None)


# --- stacd: stafd client -> connector ---------------------------------------------------------


@attrs.frozen
class DcLogPages:
    """stafd's current log page of one DC (its DLPE dicts, as sent over D-Bus)."""

    dc: Tid
    dlpes: tuple[Mapping[str, str], ...]


@attrs.frozen
class DcGone:
    """stafd no longer has this DC (it was removed, not merely disconnected)."""

    dc: Tid


@attrs.frozen
class StafdPresence:
    """stafd appeared on (True) or vanished from (False) the bus. Vanishing is *not* "no DCs"."""

    present: bool


# --- stacd: connector <-> I/O controller actors -----------------------------------------------


@attrs.frozen
class IocWanted:
    """An I/O controller stacd wants connected, and why (config line or which DC's log page)."""

    tid: Tid
    origin: str  # 'configured' or 'discovered'
    dcs: tuple[Tid, ...] = ()  # the DCs whose log pages list it
    params: Mapping[str, str] = attrs.field(factory=dict)
    ncc: bool = False  # EFLAGS NCC: the CDC says no DDC describing this is connected


@attrs.frozen
class IocStatus:
    """Everything visible about one I/O controller, published by its actor."""

    tid: Tid
    origin: str
    device: str = "nvme?"
    state: str = "idle"  # idle, connecting, connected, backoff, gave-up (NCC)
    connected: bool = False
    adopted: bool = False
    connect_attempts: int = 0
    last_error: str = ""
    ncc: bool = False
    params: Mapping[str, str] = attrs.field(factory=dict)


@attrs.frozen
class IocUpdate:
    status: IocStatus


@attrs.frozen
class StacdSnapshot:
    """stacd's published state: read by the D-Bus actor, never mutated."""

    iocs: tuple[IocStatus, ...] = ()
    generation: int = 0


@attrs.frozen
class KernelResync:
    """The kernel's full controller list (after lost uevents, or at start): the truth to match."""

    controllers: tuple[Any, ...]  # stas.kernel.api.KernelController
