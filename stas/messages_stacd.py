"""stacd's own messages (stafd client, connector, I/O controller actors): part of
``stas.messages``, which loads this module on first use so that stafd never creates them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, TypeAlias

import attrs

from stas.messages import Tid

if TYPE_CHECKING:  # annotations only: the classes are not needed to build these messages
    from stas.config import ServiceConfig
    from stas.kernel.api import KernelController, Uevent

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
    # The log page entry that lists it (upstream's ``dlpe`` in ls -d); {} for configured ones.
    # Not part of equality: it is shown, never decided on.
    dlpe: Mapping[str, str] = attrs.field(factory=dict, eq=False)


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

    controllers: tuple[KernelController, ...]


# --- stacd: main (reload) and the connector's own timers -> connector --------------------------


@attrs.frozen
class StacdConfigChanged:
    """stacd.conf (or the host identity) was reloaded."""

    config: ServiceConfig
    host_nqn: str = ""  # '' keeps the current one
    hostid: str = ""


@attrs.frozen
class AuditDue:
    """The connector's timer: audit one newly added device, or (None) every kernel controller."""

    device: str | None = None


# Everything the connector's inbox receives: stafd client, IOC actors, uevent monitor (or the
# fake kernel's events), stacd's reload, and its own timers. A string: Uevent is not loaded here.
ConnectorMsg: TypeAlias = (
    "IocUpdate | DcLogPages | DcGone | StafdPresence | StacdConfigChanged | AuditDue"
    " | Uevent | KernelResync"
)
