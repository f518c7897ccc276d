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

from stas.constants import TID_KEYS, WELL_KNOWN_DISC_NQN

if TYPE_CHECKING:  # annotations only: stacd never needs the log page codec
    from stas.config.controllers import ControllerSpec
    from stas.kernel.api import KernelController
    from stas.nvme.logpage import LogPageEntry

__all__ = ["WELL_KNOWN_DISC_NQN", "Tid"]  # the constant is re-exported for older imports

Origin = Literal["configured", "nbft", "discovered", "referral"]
# which origin a DC found several ways shows; 'nbft': the firmware's boot table (NBFT)
ORIGIN_RANK: Mapping[str, int] = {"configured": 0, "nbft": 1, "referral": 2, "discovered": 3}


@attrs.frozen(order=True, cache_hash=True)  # a dict key everywhere: hash it once
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
        return dict(zip(TID_KEYS, self.dbus_args(), strict=True))

    @classmethod
    def from_dict(cls, d: Mapping[str, str]) -> Tid:
        """From upstream's TID dict (missing keys are ''), e.g. a D-Bus controller list."""
        return cls(*(d.get(k, "") for k in TID_KEYS))

    def dbus_args(self) -> tuple[str, str, str, str, str, str, str]:
        """The seven strings every stafd/stacd method and signal takes, in their order."""
        return (
            self.transport, self.traddr, self.trsvcid, self.subsysnqn,
            self.host_traddr, self.host_iface, self.host_nqn,
        )  # fmt: skip

    @classmethod
    def from_dbus_args(cls, args: tuple[object, ...]) -> Tid:
        """From the seven D-Bus arguments (already checked to be strings by the signature)."""
        return cls(*(str(a) for a in args[:7]))

    @classmethod
    def from_dlpe(cls, e: Dlpe, dc: Tid, *, ignore_iface: bool, host_nqn: str = "") -> Tid:
        """The I/O controller entry ``e`` of ``dc``'s log page names, reached the way ``dc``
        is (same host address and interface when the transport is the same). The entry's
        fields must have been checked (``stas.plan`` does) before the kernel sees them."""
        same = e.transport == dc.transport
        return cls(
            transport=e.transport,
            traddr=e.traddr,
            trsvcid=e.trsvcid,
            subsysnqn=e.subsysnqn,
            host_traddr=dc.host_traddr if same else "",
            host_iface="" if ignore_iface or e.transport != "tcp" or not same else dc.host_iface,
            host_nqn=dc.host_nqn or host_nqn,
        )

    @classmethod
    def from_spec(cls, spec: ControllerSpec, *, ignore_iface: bool, host_nqn: str) -> Tid:
        """A ``controller=`` line (already defaulted and checked by stas.config); an unset
        host NQN becomes the system's ``host_nqn``."""
        return cls(
            transport=spec.transport,
            traddr=spec.traddr,
            trsvcid=spec.trsvcid,
            subsysnqn=spec.subsysnqn,
            host_traddr=spec.host_traddr,
            host_iface="" if ignore_iface else spec.host_iface,
            host_nqn=spec.host_nqn or host_nqn,
        )

    @classmethod
    def from_kernel(cls, c: KernelController) -> Tid:
        """A kernel controller as sysfs describes it (e.g. one stacd never made)."""
        return cls(
            c.transport, c.traddr, c.trsvcid, c.subsysnqn, c.host_traddr, c.host_iface, c.hostnqn
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
               "FinderMsg", "DcStopped", "AddressesResolved", "AddressProbed", "HubSubscribe",
               "HubUnsubscribe", "HubControl", "MdnsCandidate", "MdnsState")  # fmt: skip
_STACD_ONLY = ("Dlpe", "parse_dlpes", "DcLogPages", "DcRemoved", "StafdAppeared", "StafdVanished",
               "LogPagesChanged", "SignalsLost", "StafdEvent", "ToConnector", "IocWanted",
               "IocStatus", "IocUpdate", "StacdSnapshot", "KernelResync", "StacdConfigChanged",
               "AuditDue", "ConnectorMsg", "StafdSynced")  # fmt: skip
_LAZY = dict.fromkeys(_STAFD_ONLY, "stas.messages_stafd") | dict.fromkeys(
    _STACD_ONLY, "stas.messages_stacd"
)

if TYPE_CHECKING:
    from stas.messages_stacd import (  # noqa: F401
        AuditDue,
        ConnectorMsg,
        DcLogPages,
        DcRemoved,
        Dlpe,
        IocStatus,
        IocUpdate,
        IocWanted,
        KernelResync,
        LogPagesChanged,
        SignalsLost,
        StacdConfigChanged,
        StacdSnapshot,
        StafdAppeared,
        StafdEvent,
        StafdSynced,
        StafdVanished,
        ToConnector,
        parse_dlpes,
    )
    from stas.messages_stafd import (  # noqa: F401
        AddressesResolved,
        AddressProbed,
        DcStopped,
        DcUpdate,
        DcWanted,
        FinderMsg,
        HubControl,
        HubSubscribe,
        HubUnsubscribe,
        MdnsCandidate,
        MdnsServiceDown,
        MdnsServiceUp,
        MdnsState,
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
