"""stacd's own messages (stafd client, connector, I/O controller actors): part of
``stas.messages``, which loads this module on first use so that stafd never creates them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, NamedTuple, TypeAlias

import attrs

from stas.messages import Tid
from stas.nvme.logpage_labels import EFlags, SubType, dlpe_treq_text, dlpe_treq_word

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
_TYPED_KEYS = frozenset((*DLPE_KEYS, "treq", "tsas"))  # shown from the typed fields
_DLPE_ALL_KEYS = (*DLPE_KEYS, "treq", "tsas", "portid", "cntlid", "asqsz")
_KEYS: dict[object, str] = {k: k for k in _DLPE_ALL_KEYS}
_TEXT_KEYS = frozenset(DLPE_KEYS)  # values that must be strings (others are shown as text)
_SHARED: dict[str, str] = {}
_SHARED_MAX = 4096
_SHARED_LONGEST = 256  # an address or a number; anything longer is not worth a table slot


class _Shape(NamedTuple):
    """What an entry's dict has beyond its typed fields: the keys in the order stafd sent
    them, and the values no typed field gives back as sent (``portid``, ``cntlid``,
    ``asqsz``, keys stacd does not know, an EFLAGS that is not a plain number). Entries of
    one DC mostly share one: the table below holds each shape once (bounded, as _SHARED)."""

    keys: tuple[str, ...]
    kept: tuple[tuple[str, str], ...]


_NO_SHAPE = _Shape((), ())
_SHAPES: dict[tuple[tuple[str, ...], tuple[tuple[str, str], ...]], _Shape] = {}
_SHAPES_MAX = 4096


def _shared(text: str) -> tuple[str, bool]:
    """The shared copy of ``text`` (added if there is room), and whether it is one."""
    found = _SHARED.get(text)
    if found is not None:
        return found, True
    if len(_SHARED) < _SHARED_MAX and len(text) <= _SHARED_LONGEST:
        _SHARED[text] = text
        return text, True
    return text, False


def _number(text: str) -> int | None:
    """``text`` as int() reads it, or None (also for more digits than int() accepts)."""
    try:
        return int(text)
    except ValueError:
        return None


def treq_number(text: str) -> int:
    """TREQ from the DLPE dict's ``treq``: libnvme's word, else a number (any base int()
    reads with base 0; 8 bits, as in the log page), else 0 ("not specified")."""
    n = dlpe_treq_word(text)
    if n is not None:
        return n
    try:
        return int(text, 0) & 0xFF
    except ValueError:
        return 0


@attrs.frozen(eq=False)  # equality below: as a mapping, and with a dict
class Dlpe(Mapping[str, str]):
    """One discovery log page entry as stafd publishes it (upstream's DLPE dict, D-Bus
    ``aa{ss}``), parsed once by the stafd client. Our names for its fields (``transport``,
    ``subsysnqn``), EFLAGS and TREQ as numbers, TSAS's security type as libnvme spells it
    (``"none"`` when the dict has no ``tsas``). Nothing here is checked for the kernel yet:
    ``stas.plan`` does that.

    The entry is also a read-only mapping, the dict exactly as stafd sent it (keys in their
    order, values as sent): what ``stacctl ls -d`` shows. It is derived on demand from the
    typed fields plus a shared ``_Shape``, so 10,000 entries do not hold 10,000 dicts."""

    transport: str
    adrfam: str
    traddr: str
    trsvcid: str
    subsysnqn: str
    subtype: str
    eflags: int = 0
    treq: int = 0
    sectype: str = "none"
    _shape: _Shape = attrs.field(default=_NO_SHAPE, eq=False, repr=False)

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
        values are strings. A non-numeric EFLAGS reads as 0, as libnvme's would; TREQ as
        ``treq_number`` reads it. One pass: 10,000 entries a page."""
        if not isinstance(raw, Mapping):
            return None
        keys: list[str] = []
        typed: dict[str, str] = {}
        kept: list[tuple[str, str]] = []
        shareable = True  # the shape holds only shared strings: it may go into the table
        for k, v in raw.items():
            if not isinstance(k, str):
                return None
            key = _KEYS.get(k)
            if not isinstance(v, str) and key in _TEXT_KEYS:
                return None
            text = v if type(v) is str else str(v)
            if key is None:  # not a DLPE key: kept as sent
                keys.append(k)
                kept.append((k, text))
                shareable = False
                continue
            keys.append(key)
            if key == "subnqn":  # the one value that differs in every entry
                typed[key] = text
                continue
            text, is_shared = _shared(text)
            if key in _TYPED_KEYS:
                typed[key] = text
            else:
                kept.append((key, text))
                shareable = shareable and is_shared
        get = typed.get
        flags, treq = 0, 0
        if (said := get("eflags")) is not None:
            flags = _number(said) or 0
            if str(flags) != said:  # '', ' 1', '0x4': shown as sent
                kept.append(("eflags", said))
        if (said := get("treq")) is not None:
            treq = treq_number(said)
            if dlpe_treq_text(treq) != said:
                kept.append(("treq", said))
        shape = _shape_of(tuple(keys), tuple(kept), shareable)
        return cls(get("trtype", ""), get("adrfam", ""), get("traddr", ""), get("trsvcid", ""),
                   get("subnqn", ""), get("subtype", ""), flags, treq, get("tsas", "none"),
                   shape)  # fmt: skip

    def as_dict(self) -> Mapping[str, str]:
        """The entry as stafd sent it (upstream's ``dlpe`` in ``ls -d``): the entry itself."""
        return self

    def __getitem__(self, key: str) -> str:
        for k, text in self._shape.kept:
            if k == key:
                return text
        if key not in self._shape.keys:
            raise KeyError(key)
        match key:
            case "trtype":
                return self.transport
            case "adrfam":
                return self.adrfam
            case "traddr":
                return self.traddr
            case "trsvcid":
                return self.trsvcid
            case "subnqn":
                return self.subsysnqn
            case "subtype":
                return self.subtype
            case "eflags":
                return str(self.eflags)
            case "treq":
                return dlpe_treq_text(self.treq)
            case _:  # tsas
                return self.sectype

    def __iter__(self) -> Iterator[str]:
        return iter(self._shape.keys)

    def __len__(self) -> int:
        return len(self._shape.keys)

    def _typed(self) -> tuple[object, ...]:
        return (self.transport, self.adrfam, self.traddr, self.trsvcid, self.subsysnqn,
                self.subtype, self.eflags, self.treq, self.sectype)  # fmt: skip

    def __eq__(self, other: object) -> bool:
        """Two entries: the same fields and the same dict (its order too). An entry and any
        other mapping: the same keys and values, as a mapping compares."""
        if type(other) is Dlpe:
            return self._typed() == other._typed() and self._shape == other._shape
        if isinstance(other, Mapping):
            return dict(self.items()) == dict(other.items())
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._typed())


def _shape_of(keys: tuple[str, ...], kept: tuple[tuple[str, str], ...], shareable: bool) -> _Shape:
    """The one shared copy of this shape (added while the table has room and the shape holds
    only shared strings, so a hostile stafd grows neither table), or a new one."""
    found = _SHAPES.get((keys, kept))
    if found is not None:
        return found
    shape = _Shape(keys, kept)
    if shareable and len(_SHAPES) < _SHAPES_MAX:
        _SHAPES[(keys, kept)] = shape
    return shape


def parse_dlpes(items: Iterable[object]) -> tuple[Dlpe, ...]:
    """Every well-formed entry of a D-Bus log page, typed; others dropped (untrusted data).
    Entries already typed pass through, so a message may be built from either."""
    out = []
    for item in items:
        e = item if type(item) is Dlpe else Dlpe.parse(item)
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

# No parameters, no entry: one shared read-only mapping, not an empty dict per record (10,000
# wanted controllers each held one).
_EMPTY: Mapping[str, str] = MappingProxyType({})


# The DCs listing a controller: most controllers of a DC have the same few, so each distinct
# tuple is kept once (48 B a controller otherwise); bounded like _SHARED.
_DCS: dict[tuple[Tid, ...], tuple[Tid, ...]] = {}


def _shared_dcs(dcs: tuple[Tid, ...]) -> tuple[Tid, ...]:
    found = _DCS.get(dcs)
    if found is not None:
        return found
    if len(_DCS) < _SHARED_MAX:
        _DCS[dcs] = dcs
    return dcs


@attrs.frozen
class IocWanted:
    """An I/O controller stacd wants connected, and why (config line or which DC's log page)."""

    tid: Tid
    origin: str  # 'configured' or 'discovered'
    dcs: tuple[Tid, ...] = attrs.field(default=(), converter=_shared_dcs)  # whose pages list it
    params: Mapping[str, str] = _EMPTY
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
    params: Mapping[str, str] = _EMPTY
    # The log page entry that lists it (upstream's ``dlpe`` in ls -d); {} for configured ones.
    # Not part of equality: it is shown, never decided on.
    dlpe: Mapping[str, str] = attrs.field(default=_EMPTY, eq=False)


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
