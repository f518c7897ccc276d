"""The contract between actors: every message that crosses a memory channel, frozen.

Actors never share mutable state. What one actor needs from another arrives here as an
immutable value: a command, an event, or a snapshot of published state.

Only what both daemons use is defined in this file; stafd's own messages (``messages_stafd``)
and stacd's (``messages_stacd``) are imported from here too, each on first use.
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
class StafdSnapshot:
    """stafd's published state: read by the D-Bus actor, never mutated."""

    dcs: tuple[DcStatus, ...] = ()
    generation: int = 0

    def find(self, tid: Tid) -> DcStatus | None:
        return next((dc for dc in self.dcs if dc.tid == tid), None)


# --- the rest, per daemon, loaded on first use -------------------------------------------------
# Creating an attrs class costs about half a millisecond at start; a daemon creates only its own.

_STAFD_ONLY = ("DcWanted", "MdnsServiceUp", "MdnsServiceDown", "DcUpdate", "StafdConfigChanged",
               "FinderMsg")  # fmt: skip
_STACD_ONLY = ("DcLogPages", "DcGone", "StafdPresence", "IocWanted", "IocStatus", "IocUpdate",
               "StacdSnapshot", "KernelResync", "StacdConfigChanged", "AuditDue",
               "ConnectorMsg")  # fmt: skip
_LAZY = dict.fromkeys(_STAFD_ONLY, "stas.messages_stafd") | dict.fromkeys(
    _STACD_ONLY, "stas.messages_stacd"
)

if TYPE_CHECKING:
    from stas.messages_stacd import (  # noqa: F401
        AuditDue,
        ConnectorMsg,
        DcGone,
        DcLogPages,
        IocStatus,
        IocUpdate,
        IocWanted,
        KernelResync,
        StacdConfigChanged,
        StacdSnapshot,
        StafdPresence,
    )
    from stas.messages_stafd import (  # noqa: F401
        DcUpdate,
        DcWanted,
        FinderMsg,
        MdnsServiceDown,
        MdnsServiceUp,
        StafdConfigChanged,
    )


def __getattr__(name: str) -> Any:
    """PEP 562: a per-daemon message class, imported (once) when first asked for."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
