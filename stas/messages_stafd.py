"""stafd's own messages (finder, DC and mDNS actors): part of ``stas.messages``, which loads
this module on first use so that stacd never creates these classes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeAlias

import attrs

from stas.messages import Tid

if TYPE_CHECKING:
    import trio

    from stas.actors.dc_backend import DcEvent
    from stas.config import ServiceConfig
    from stas.messages import DcStatus


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
class DcUpdate:
    """A DC actor's status changed; ``log_pages_changed`` when the cached content changed."""

    status: DcStatus
    log_pages_changed: bool = False


# --- stafd main (start, reload) -> finder ----------------------------------------------------


@attrs.frozen
class StafdConfigChanged:
    """stafd.conf or sys.conf was (re)loaded."""

    config: ServiceConfig
    host_nqn: str


# --- the finder's effect runners -> finder (answers to what its pure core asked for) ----------


@attrs.frozen
class DcStopped:
    """The DC actor of ``tid`` finished its cleanup after a stop."""

    tid: Tid


@attrs.frozen
class AddressesResolved:
    """What a ``controller=`` traddr resolved to, for configuration ``generation``."""

    generation: int
    base: Tid
    addresses: tuple[str, ...]


@attrs.frozen
class AddressProbed:
    """The first address that accepted TCP (None: none did); ``at``: when the probe began."""

    base: Tid
    answering: str | None
    at: float


# Everything the finder's inbox receives: its DC actors, the mDNS actor, stafd's reload, and
# the finder's own effect runners.
FinderMsg: TypeAlias = (
    DcUpdate
    | MdnsServiceUp
    | MdnsServiceDown
    | StafdConfigChanged
    | DcStopped
    | AddressesResolved
    | AddressProbed
)


# --- a kernel-backend DC connection -> the uevent hub --------------------------------------------


@attrs.frozen
class HubSubscribe:
    """Send ``device``'s kernel events to ``events`` (replacing an earlier subscriber)."""

    device: str
    events: trio.MemorySendChannel[DcEvent] = attrs.field(eq=False)


@attrs.frozen
class HubUnsubscribe:
    """The subscriber of ``device`` closed its channel: forget it (unless a newer one came)."""

    device: str


HubControl: TypeAlias = HubSubscribe | HubUnsubscribe


# --- the mDNS actor's published state (read by the D-Bus actor's process_info) ------------------


@attrs.frozen
class MdnsCandidate:
    """One announced address of an ``_nvme-disc`` service, and whether it answered yet."""

    key: str
    tid: Tid
    reachable: bool


@attrs.frozen
class MdnsState:
    """What the mDNS browser knows, as an immutable value (replaced on every change)."""

    service_types: tuple[str, ...] = ()
    candidates: tuple[MdnsCandidate, ...] = ()

    def as_info(self) -> dict[str, Any]:
        """The ``avahi``-like section of D-Bus ``process_info`` (a fresh dict per call)."""
        services = {
            c.key: {
                "transport": c.tid.transport,
                "traddr": c.tid.traddr,
                "trsvcid": c.tid.trsvcid,
                "host-iface": c.tid.host_iface,
                "subsysnqn": c.tid.subsysnqn,
                "reachable": c.reachable,
            }
            for c in self.candidates
        }
        return {"service types": list(self.service_types), "services": services}
