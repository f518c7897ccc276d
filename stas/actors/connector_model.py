"""The connector's state record, and the words between its pure core and its shell: what
the shell tells the core (besides the inbox's ``ConnectorMsg``) and the effects the core asks
the shell to carry out. Internal to the connector: no other actor sees them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeAlias

import attrs

from stas.actors.ioc import IocEvent, IocSettings
from stas.config import ServiceConfig
from stas.kernel.api import ConnectRequest, KernelController
from stas.messages import (
    AuditDue,
    ConnectorMsg,
    Dlpe,
    IocStatus,
    IocUpdate,
    IocWanted,
    StacdConfigChanged,
    Tid,
)
from stas.plan import KernelIndex, configured_iocs, with_boot_subsystems

Boot: TypeAlias = tuple[tuple[Tid, Mapping[str, str]], ...]  # NBFT boot subsystems, parameters
# The DCs listing one controller and each one's NCC, in the order they were first seen. A
# tuple shared by every controller listed alike (all of one DC's, mostly), not a dict each:
# 10,000 one-entry dicts were 2.4 MB in benchmark 4 (``ConnectorState.listings``).
Listing: TypeAlias = tuple[tuple[Tid, bool], ...]
LISTINGS_MAX = 4096  # distinct listings kept for sharing; past it, each is its own tuple
# Where a connect goes, as a controller's uevents name it: (transport, traddr, trsvcid).
Address: TypeAlias = tuple[str, str, str]


# --- what the shell tells the core ---------------------------------------------------------


@attrs.frozen
class Begin:
    """The shell starts: the kernel's controllers as listed once (adopted, never redone).
    ``ours``: those whose registry entry says stacd made them before this run (a restart)."""

    controllers: tuple[KernelController, ...]
    ours: frozenset[str] = frozenset()


@attrs.frozen
class Reconfigure:
    """StacdConfigChanged with the NBFT's boot subsystems read for the (new) host NQN."""

    change: StacdConfigChanged
    boot: Boot = ()


@attrs.frozen
class ControllerRead:
    """The result of ``ReadController``: sysfs's view of ``device`` (None: it is gone)."""

    device: str
    controller: KernelController | None
    audit: bool


@attrs.frozen
class IocFellBehind:
    """An actor's mailbox was full: it missed an event, so it is restarted from our view."""

    tid: Tid


@attrs.frozen
class IocStopped:
    """The last word of an actor ``StopIoc`` stopped: the controller it held at its end
    (``adopted``: it found it, did not make it). ``known`` echoes ``StopIoc.known``: the device
    the core knew it held when it stopped it, and has decided about already."""

    tid: Tid
    held: KernelController
    adopted: bool
    known: str | None


@attrs.frozen
class DisconnectDone:
    """The end of a ``Disconnect`` the shell ran in the background. ``gone``: the kernel no
    longer has ``device`` (deleted, or already gone); False: it is still there (the registry
    names another owner, or the kernel refused: already logged by the shell)."""

    device: str
    gone: bool


@attrs.frozen
class IocMade:
    """An actor's 'connected' status for a controller its own connect made, with that
    controller as the kernel answered it (read from sysfs once the connect ended): the core
    indexes it from here instead of reading the device again for its 'add' uevent."""

    update: IocUpdate
    controller: KernelController


CoreMsg: TypeAlias = (
    "ConnectorMsg | Begin | Reconfigure | ControllerRead | IocFellBehind | IocStopped"
    " | DisconnectDone | IocMade"
)


# --- what the core tells the shell ---------------------------------------------------------


@attrs.frozen
class StartIoc:
    """Start (supervised) the actor of ``wanted.tid``, adopting ``adopt`` if given."""

    wanted: IocWanted
    request: ConnectRequest
    adopt: KernelController | None = None
    status: IocStatus | None = None  # the first status (shared: its log page entry too)
    generation: int = 0  # the actor tags its updates with it


@attrs.frozen
class StopIoc:
    """Stop the actor of ``tid``; answer ``IocStopped`` if it ended holding a controller.
    ``known``: the device the core knew it held (None: none)."""

    tid: Tid
    known: str | None = None


@attrs.frozen
class TellIoc:
    """Post to an actor's mailbox; if it is full, answer ``IocFellBehind``."""

    tid: Tid
    event: IocEvent


@attrs.frozen
class Disconnect:
    """Disconnect ``device`` unless the ownership registry names another owner; answer
    ``DisconnectDone`` when it has ended (it runs in the background, several at once). The
    core issues at most one per device until that answer."""

    device: str
    tid: Tid
    reason: str


@attrs.frozen
class ReadController:
    """Read ``device`` from sysfs; answer ``ControllerRead``."""

    device: str
    audit: bool = False


@attrs.frozen
class Claim:
    """Record ``device`` as stacd's in the ownership registry (``fresh``: we made it)."""

    device: str
    fresh: bool


@attrs.frozen
class Later:
    """Send ``msg`` to the connector after ``delay`` seconds."""

    delay: float
    msg: AuditDue


Effect: TypeAlias = StartIoc | StopIoc | TellIoc | Disconnect | ReadController | Claim | Later


# --- the state -------------------------------------------------------------------------------


@attrs.define
class IocRecord:
    """One actor as the core knows it. No connect request: one is made when the actor must
    connect (``connector_core.request_for``), not kept for each of 10,000 controllers."""

    wanted: IocWanted
    status: IocStatus
    generation: int = 0  # this start's number: updates from an earlier actor are not its


@attrs.define(eq=False)
class ConnectorState:
    """Everything the connector knows; one owner (the core), never shared."""

    config: ServiceConfig
    host_nqn: str
    hostid: str
    base_settings: IocSettings = attrs.field(factory=IocSettings)
    audit_settle: float = 1.0
    stafd_grace: float = 60.0
    boot: Boot = ()
    settings: IocSettings = attrs.field(factory=IocSettings)
    configured: dict[Tid, IocWanted] = attrs.field(factory=dict)
    pages: dict[Tid, tuple[Dlpe, ...]] = attrs.field(factory=dict)  # DC -> its entries
    dlpe_of: dict[Tid, Dlpe] = attrs.field(factory=dict)  # IOC -> the entry listing it
    per_dc: dict[Tid, dict[Tid, bool]] = attrs.field(factory=dict)  # DC -> {ioc: ncc}
    listing: dict[Tid, Listing] = attrs.field(factory=dict)  # ioc -> ((DC, ncc), ...)
    listings: dict[Listing, Listing] = attrs.field(factory=dict)  # each distinct one, once
    actors: dict[Tid, IocRecord] = attrs.field(factory=dict)
    owner: dict[str, Tid] = attrs.field(factory=dict)  # device -> the actor's tid holding it
    previous: dict[str, KernelController] = attrs.field(factory=dict)  # ours before a restart
    previous_waiting: bool = False  # "kept until the picture is complete" was logged
    index: KernelIndex = attrs.field(factory=KernelIndex)
    evaluations: int = 0  # controllers re-planned (the scale test counts them)
    restarts: int = 0
    starts: int = 0  # actors started so far: each start's generation
    stafd_known: bool = False
    audit_ready: bool = False
    warned: set[str] = attrs.field(factory=set)
    # Disconnects in flight (device -> the Tid it was issued for) and, per Tid, its devices;
    # the wanted Tids waiting for one to end before they connect again (device -> Tids);
    # devices deleted whose 'remove' uevent is still to come (it is not a later namesake's).
    disconnecting: dict[str, Tid] = attrs.field(factory=dict)
    disconnecting_tids: dict[Tid, set[str]] = attrs.field(factory=dict)
    deferred: dict[str, set[Tid]] = attrs.field(factory=dict)
    remove_seen: set[str] = attrs.field(factory=set)  # disconnecting, its 'remove' arrived
    departed: set[str] = attrs.field(factory=set)
    # Connects in the kernel's hands (actors whose status is 'connecting'), per address; and
    # the devices whose 'add' came meanwhile, to that address, not read: each is one of those
    # connects' (indexed from its IocMade) or, if more came than connects are left, read.
    connecting: dict[Address, int] = attrs.field(factory=dict)
    unread: dict[str, Address] = attrs.field(factory=dict)
    dirty: bool = False
    order: list[IocStatus] = attrs.field(factory=list)  # the actors' statuses, by Tid

    def __attrs_post_init__(self) -> None:
        apply_config(self, self.config, self.host_nqn, self.hostid, self.boot)


def apply_config(st: ConnectorState, config: ServiceConfig, nqn: str, hid: str, boot: Boot) -> None:
    st.config = config
    st.host_nqn = nqn or st.host_nqn
    st.hostid = hid or st.hostid
    st.boot = boot
    st.configured = with_boot_subsystems(configured_iocs(config, st.host_nqn), boot)
    st.settings = attrs.evolve(
        st.base_settings, connect_attempts_on_ncc=config.connect_attempts_on_ncc
    )
