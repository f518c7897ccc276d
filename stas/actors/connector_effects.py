"""The words between the connector's pure core and its shell: what the shell tells the core
(besides the inbox's ``ConnectorMsg``), and the effects the core asks the shell to carry out.
Internal to the connector: no other actor sees them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeAlias

import attrs

from stas.actors.ioc import IocEvent
from stas.kernel.api import ConnectRequest, KernelController
from stas.messages import AuditDue, ConnectorMsg, IocWanted, StacdConfigChanged, Tid

Boot: TypeAlias = tuple[tuple[Tid, Mapping[str, str]], ...]  # NBFT boot subsystems, parameters


# --- what the shell tells the core ---------------------------------------------------------


@attrs.frozen
class Begin:
    """The shell starts: the kernel's controllers as listed once (adopted, never redone)."""

    controllers: tuple[KernelController, ...]


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


CoreMsg: TypeAlias = "ConnectorMsg | Begin | Reconfigure | ControllerRead | IocFellBehind"


# --- what the core tells the shell ---------------------------------------------------------


@attrs.frozen
class StartIoc:
    """Start (supervised) the actor of ``wanted.tid``, adopting ``adopt`` if given."""

    wanted: IocWanted
    request: ConnectRequest
    adopt: KernelController | None = None


@attrs.frozen
class StopIoc:
    tid: Tid


@attrs.frozen
class TellIoc:
    """Post to an actor's mailbox; if it is full, answer ``IocFellBehind``."""

    tid: Tid
    event: IocEvent


@attrs.frozen
class Disconnect:
    """Disconnect ``device`` unless the ownership registry names another owner."""

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
