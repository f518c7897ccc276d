"""stacd's own messages (stafd client, connector, I/O controller actors): part of
``stas.messages``, which loads this module on first use so that stafd never creates them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, TypeAlias

import attrs

from stas.messages import Tid
from stas.nvme.logpage_labels import EFlags, SubType

if TYPE_CHECKING:  # annotations only: the classes are not needed to build these messages
    from stas.config import ServiceConfig
    from stas.kernel.api import KernelController, Uevent

# --- stacd: a log page entry, typed once where it enters stacd ------------------------------

DLPE_KEYS = ("trtype", "adrfam", "traddr", "trsvcid", "subnqn", "subtype", "eflags")
_NVM_SUBSYSTEM = SubType.NVME.label

# One copy of the strings every entry repeats. Each string D-Bus decodes is a new object: at
# 10,000 entries, 11 keys and ~9 repeating values each were ~200,000 strings, about 10 MB.
# Keys: the DLPE dict's own. Values: those of fields that repeat across entries (not
# subnqn), in a table that stops growing at _SHARED_MAX so a hostile stafd cannot grow it.
_DLPE_ALL_KEYS = (*DLPE_KEYS, "treq", "portid", "cntlid", "asqsz")
_KEYS: dict[object, str] = {k: k for k in _DLPE_ALL_KEYS}
_TEXT_KEYS = frozenset(DLPE_KEYS)  # values that must be strings (others are shown as text)
_SHARED: dict[str, str] = {}
_SHARED_MAX = 4096
_SHARED_LONGEST = 256  # an address or a number; anything longer is not worth a table slot


def _entry_fields(raw: Mapping[object, object]) -> dict[str, str] | None:
    """``raw`` as text, its keys and repeating values the shared copies; None if a key, or
    the value of one of ``DLPE_KEYS``, is not a string. One pass: 10,000 entries a page."""
    out: dict[str, str] = {}
    shared = _SHARED
    for k, v in raw.items():
        if not isinstance(k, str):
            return None
        key = _KEYS.get(k)
        if not isinstance(v, str) and key in _TEXT_KEYS:
            return None
        text = v if type(v) is str else str(v)
        if key is None:  # not a DLPE key: kept as sent
            out[k] = text
            continue
        if key != "subnqn":  # the one value that differs in every entry
            found = shared.get(text)
            if found is not None:
                text = found
            elif len(shared) < _SHARED_MAX and len(text) <= _SHARED_LONGEST:
                shared[text] = text
        out[key] = text
    return out


@attrs.frozen
class Dlpe:
    """One discovery log page entry as stafd publishes it (upstream's DLPE dict, D-Bus
    ``aa{ss}``), parsed once by the stafd client. Our names for its fields (``transport``,
    ``subsysnqn``), EFLAGS as a number; ``fields`` keeps the dict as sent, which ``stacctl ls
    -d`` shows unchanged. Nothing here is checked for the kernel yet: ``stas.plan`` does that."""

    transport: str
    adrfam: str
    traddr: str
    trsvcid: str
    subsysnqn: str
    subtype: str
    eflags: int = 0
    fields: Mapping[str, str] = attrs.field(factory=dict, eq=False, repr=False)

    @property
    def is_nvm_subsystem(self) -> bool:
        """An I/O subsystem entry (not a referral or the discovery subsystem itself)."""
        return self.subtype == _NVM_SUBSYSTEM

    @property
    def ncc(self) -> bool:
        """EFLAGS NCC (TP8010): no DDC describing this subsystem is connected to the CDC."""
        return bool(self.eflags & EFlags.NCC)

    @classmethod
    def parse(cls, raw: object) -> Dlpe | None:
        """A DLPE dict from D-Bus (untrusted): None unless a mapping whose keys and known
        values are strings. A non-numeric EFLAGS reads as 0, as libnvme's would."""
        fields = _entry_fields(raw) if isinstance(raw, Mapping) else None
        if fields is None:
            return None
        get = fields.get
        try:
            flags = int(get("eflags") or 0)
        except ValueError:
            flags = 0
        return cls(get("trtype", ""), get("adrfam", ""), get("traddr", ""), get("trsvcid", ""),
                   get("subnqn", ""), get("subtype", ""), flags, fields)  # fmt: skip

    def as_dict(self) -> Mapping[str, str]:
        """The entry as stafd sent it (upstream's ``dlpe`` in ``ls -d``)."""
        return self.fields


def parse_dlpes(items: Iterable[object]) -> tuple[Dlpe, ...]:
    """Every well-formed entry of a D-Bus log page, typed; others dropped (untrusted data).
    Entries already typed pass through, so a message may be built from either."""
    out = []
    for item in items:
        e = item if isinstance(item, Dlpe) else Dlpe.parse(item)
        if e is not None:
            out.append(e)
    return tuple(out)


# --- stacd: the D-Bus client of stafd -> stafd client actor -> connector ------------------------


@attrs.frozen
class StafdAppeared:
    """stafd (re)acquired its bus name (``owner``): its state must be fetched afresh."""

    owner: str = ""


@attrs.frozen
class StafdVanished:
    """stafd left the bus (or the bus was lost). Vanishing is *not* "no DCs": nothing changes."""


@attrs.frozen
class LogPagesChanged:
    """stafd's ``log_pages_changed`` signal: it fetched ``dc``'s log page (maybe unchanged)."""

    dc: Tid
    device: str = ""


@attrs.frozen
class SignalsLost:
    """``count`` stafd signals were dropped (backlog full): everything must be fetched again."""

    count: int


@attrs.frozen
class DcRemoved:
    """stafd removed a discovery controller (not merely disconnected it). The ``dc_removed``
    signal does not say which (``dc`` None); the stafd client works it out before telling the
    connector, which only ever sees a ``dc``."""

    dc: Tid | None = None


@attrs.frozen
class DcLogPages:
    """stafd's current log page of one DC. Raw DLPE dicts are parsed on construction."""

    dc: Tid
    dlpes: tuple[Dlpe, ...] = attrs.field(converter=parse_dlpes)


@attrs.frozen
class StafdSynced:
    """The stafd client has sent every DC stafd lists (one full sync). ``partial``: the DCs
    whose pages are not current (never fetched, or cached while stafd cannot reach the DC),
    so what they do not list proves nothing."""

    partial: tuple[Tid, ...] = ()


# What the D-Bus client sends the stafd client actor, and what that actor sends the connector.
StafdEvent: TypeAlias = StafdAppeared | StafdVanished | LogPagesChanged | DcRemoved | SignalsLost
ToConnector: TypeAlias = DcLogPages | DcRemoved | StafdAppeared | StafdVanished | StafdSynced


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
    generation: int = 0  # which start of the actor said it (a stopped one's late words are dropped)


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
    "IocUpdate | DcLogPages | DcRemoved | StafdAppeared | StafdVanished | StafdSynced"
    " | StacdConfigChanged | AuditDue | Uevent | KernelResync"
)
