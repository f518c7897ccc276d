"""Discovery Log Page (Get Log Page LID 70h): a sans-IO codec for hosts and controllers.

The page comes from a peer we do not control (a DC found by mDNS, or a referral), so
decoding validates before it allocates or iterates: RECFMT, record count and size caps,
entry lengths (extended entries are walked by TEL, never by a fixed 1024), and every
string field (printable ASCII only). Anything wrong raises ``ProtocolError`` naming the
field and the entry index; nothing else escapes from ``decode``.

Strings follow libnvme's sanitising: a NUL ends the field early, trailing NULs and spaces
(ceph-nvmeof pads with spaces) are trimmed.
"""

from __future__ import annotations

import enum
import itertools
import struct
from collections.abc import Callable, Iterable
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Self

import attrs

from stas.nvme.errors import ProtocolError

# Re-exported (logpage.py's API predates the split; F401 is ignored for this file).
from stas.nvme.logpage_labels import (
    _DLPE_ADRFAM,
    _DLPE_SUBTYPE,
    _DLPE_TREQ,
    _DLPE_TRTYPE,
    _EFLAG_NAMES,
    _KINDS,
    _TREQ_SECURE,
    TREQ_DISABLE_SQFLOW,
    AdrFam,
    EFlags,
    SubType,
    TrType,
    _Labelled,
    eflags_label,
    treq_label,
)

HEADER_SIZE = 1024
HEADER_PREFIX = 24  # GENCTR, NUMREC, RECFMT, DLPF, TDLPL: all a host needs to size the read
ENTRY_SIZE = 1024  # basic entry; also the fixed part of an extended entry
EXT_ENTRY_MIN = 1032  # basic part + TEL (4) + NUMEXAT (2) + reserved (2)
EXAT_HEADER = 4  # EXATTYPE (2) + EXATLEN (2)
EXATLEN_MAX = 0xFFFC  # largest multiple of 4 that fits the 16-bit EXATLEN
DLPF_EXTENDED = 0x01

TRSVCID_MAX = 31  # 32-byte field, NUL included
NQN_MAX = 223  # NVMe NQN limit, although the field is 256 bytes
TRADDR_MAX = 255
TSAS_SIZE = 256
TRTYPE_TCP = 3
TCP_SECTYPES = {0: "none", 1: "tls", 2: "tls1.3"}  # libnvme's spelling of TSAS SECTYPE

_HEADER = struct.Struct("<QQHBBI")
_ENTRY_INTS = struct.Struct("<BBBBHHHH")
# The whole fixed 1024-byte entry in one call: 8 integers, TRSVCID, SUBNQN, TRADDR, TSAS.
_ENTRY = struct.Struct("<BBBBHHHH20x32s192x256s256s256s")
_NO_TSAS = bytes(TSAS_SIZE)  # what almost every TCP entry carries: one shared copy
_EXT = struct.Struct("<IH")
_EXAT = struct.Struct("<HH")


# --- field helpers (shared with dim.py) ----------------------------------------------------


def read_ascii(raw: bytes, field: str, where: str, max_len: int) -> str:
    """Decode a fixed-width ASCII field: NUL ends it, trailing spaces go, bytes must print."""
    end = raw.find(b"\0")
    if end >= 0:
        raw = raw[:end]
    raw = raw.rstrip(b" ")
    text = raw.decode("ascii", errors="replace")
    if not (raw.isascii() and text.isprintable()):
        bad = next(b for b in raw if b < 0x20 or b > 0x7E)
        raise ProtocolError(f"{where}: {field} contains non-printable byte 0x{bad:02x}")
    if len(raw) > max_len:
        raise ProtocolError(f"{where}: {field} is {len(raw)} bytes, more than {max_len}")
    return text


def _text(raw: bytes, field: str, index: int, max_len: int) -> str:
    """``read_ascii`` for one entry's field, fast for the usual clean value.

    Only a field that fails the quick checks goes to ``read_ascii``, which words the error
    (the entry index is formatted only then).
    """
    stripped = raw.rstrip(b"\0 ")  # NUL padding and space padding, in either order
    if stripped.isascii():
        text = stripped.decode("ascii")
        if len(text) <= max_len and text.isprintable():  # an inner NUL is not printable
            return text
    return read_ascii(raw, field, f"entry {index}", max_len)


def check_ascii(value: str, field: str, max_len: int) -> None:
    """Raise ValueError unless ``value`` is printable ASCII of at most ``max_len`` bytes."""
    if not (value.isascii() and value.isprintable()):
        raise ValueError(f"{field} {value!r} must be printable ASCII")
    if len(value) > max_len:
        raise ValueError(f"{field} {value!r} is {len(value)} bytes, more than {max_len}")


def _uint(bits: int) -> Callable[[object, attrs.Attribute[int], int], None]:
    """attrs validator: an int that fits an unsigned field of ``bits`` bits."""
    top = (1 << bits) - 1

    def check(inst: object, attr: attrs.Attribute[int], value: int) -> None:
        if not isinstance(value, int) or not 0 <= value <= top:
            raise ValueError(f"{attr.name} {value!r} is not a {bits}-bit unsigned integer")

    return check


def _ascii(max_len: int) -> Callable[[object, attrs.Attribute[str], str], None]:
    """attrs validator: printable ASCII of at most ``max_len`` bytes."""

    def check(inst: object, attr: attrs.Attribute[str], value: str) -> None:
        check_ascii(value, attr.name, max_len)

    return check


def _tsas_check(inst: object, attr: attrs.Attribute[bytes], value: bytes) -> None:
    if len(value) != TSAS_SIZE:
        raise ValueError(f"tsas must be {TSAS_SIZE} bytes, got {len(value)}")


def short_bytes(value: bytes) -> str:
    """Repr for 256-byte fields that are usually all zero (keeps logs readable)."""
    return f"bytes({len(value)})" if not any(value) else value.rstrip(b"\0").hex()


def _pad4(n: int) -> int:
    return (n + 3) & ~3


if TYPE_CHECKING:  # the converters are `tuple` itself; these say what they take and make

    def _ext_attr_tuple(items: Iterable[ExtAttr]) -> tuple[ExtAttr, ...]: ...
    def _entry_tuple(items: Iterable[LogPageEntry]) -> tuple[LogPageEntry, ...]: ...
else:
    _ext_attr_tuple = _entry_tuple = tuple


# --- extended attributes --------------------------------------------------------------------


@attrs.frozen
class ExtAttr:
    """One extended attribute; encoded with EXATLEN = value length rounded up to 4.

    Decoding returns the value as sent (EXATLEN bytes), so padding added on encode stays.
    """

    type: int = attrs.field(validator=_uint(16))
    value: bytes = attrs.field(converter=bytes)

    @value.validator
    def _check_value(self, attr: attrs.Attribute[bytes], value: bytes) -> None:
        if len(value) > EXATLEN_MAX:
            raise ValueError(f"extended attribute value of {len(value)} bytes is too long")

    def encode(self) -> bytes:
        size = _pad4(len(self.value))
        return _EXAT.pack(self.type, size) + self.value.ljust(size, b"\0")


def encode_ext_attrs(ext_attrs: Iterable[ExtAttr]) -> bytes:
    return b"".join(a.encode() for a in ext_attrs)


def decode_ext_attrs(
    data: bytes, start: int, end: int, numexat: int, where: str
) -> tuple[ExtAttr, ...]:
    """Walk ``numexat`` attributes in data[start:end]; each must end inside the entry."""
    found: list[ExtAttr] = []
    pos = start
    for n in range(numexat):
        if pos + EXAT_HEADER > end:
            raise ProtocolError(f"{where}: extended attribute {n} header runs past TEL")
        exattype, exatlen = _EXAT.unpack_from(data, pos)
        if exatlen > EXATLEN_MAX:
            raise ProtocolError(f"{where}: extended attribute {n} EXATLEN={exatlen} is too large")
        if pos + EXAT_HEADER + exatlen > end:
            raise ProtocolError(f"{where}: extended attribute {n} EXATLEN={exatlen} runs past TEL")
        value = data[pos + EXAT_HEADER : pos + EXAT_HEADER + exatlen]
        found.append(ExtAttr(exattype, value))
        pos += EXAT_HEADER + _pad4(exatlen)
    return tuple(found)


# --- entries ----------------------------------------------------------------------------------


@attrs.frozen
class LogPageEntry:
    """One discovery log page entry; numeric fields keep raw values (unknown ones included)."""

    trtype: int = attrs.field(validator=_uint(8))
    adrfam: int = attrs.field(validator=_uint(8))
    subtype: int = attrs.field(validator=_uint(8))
    treq: int = attrs.field(validator=_uint(8))
    portid: int = attrs.field(validator=_uint(16))
    cntlid: int = attrs.field(validator=_uint(16))
    asqsz: int = attrs.field(validator=_uint(16))
    eflags: int = attrs.field(validator=_uint(16))
    trsvcid: str = attrs.field(validator=_ascii(TRSVCID_MAX))
    subnqn: str = attrs.field(validator=_ascii(NQN_MAX))
    traddr: str = attrs.field(validator=_ascii(TRADDR_MAX))
    tsas: bytes = attrs.field(
        default=bytes(TSAS_SIZE), converter=bytes, validator=_tsas_check, repr=short_bytes
    )
    ext_attrs: tuple[ExtAttr, ...] = attrs.field(default=(), converter=_ext_attr_tuple)

    def encode(self, *, extended: bool = False) -> bytes:
        """1024 bytes, or the extended form (TEL, NUMEXAT, attributes); basic drops ext_attrs."""
        buf = bytearray(ENTRY_SIZE)
        _ENTRY_INTS.pack_into(
            buf, 0, self.trtype, self.adrfam, self.subtype, self.treq,
            self.portid, self.cntlid, self.asqsz, self.eflags,
        )  # fmt: skip
        _put(buf, 32, self.trsvcid)
        _put(buf, 256, self.subnqn)
        _put(buf, 512, self.traddr)
        buf[768:1024] = self.tsas
        if not extended:
            return bytes(buf)
        if len(self.ext_attrs) > 0xFFFF:
            raise ValueError(f"{len(self.ext_attrs)} extended attributes do not fit NUMEXAT")
        exats = encode_ext_attrs(self.ext_attrs)
        tel = EXT_ENTRY_MIN + len(exats)
        return bytes(buf) + _EXT.pack(tel, len(self.ext_attrs)) + b"\0\0" + exats

    def to_dlpe(self) -> dict[str, str]:
        """Upstream's DLPE dict: libnvme's discover() spellings, every value a stripped str."""

        def spell(table: MappingProxyType[int, str], value: int) -> str:
            return table.get(value, str(value))

        d = {
            "trtype": spell(_DLPE_TRTYPE, self.trtype),
            "adrfam": spell(_DLPE_ADRFAM, self.adrfam),
            "traddr": self.traddr.strip(),
            "trsvcid": self.trsvcid.strip(),
            "subnqn": self.subnqn.strip(),
            "subtype": spell(_DLPE_SUBTYPE, self.subtype),
            "treq": spell(_DLPE_TREQ, self.treq),
            "portid": str(self.portid),
            "cntlid": str(self.cntlid),
            "asqsz": str(self.asqsz),
            "eflags": str(self.eflags),
        }
        if self.trtype == TRTYPE_TCP and self.tsas[0]:
            # newer libnvme's tsas {"sectype": ...}, flattened to keep the dict a{ss}; only
            # when a security type is set, so plain entries look as libnvme 1.x shows them
            d["tsas"] = TCP_SECTYPES.get(self.tsas[0], "reserved")
        return d

    @classmethod
    def decode(cls, data: bytes, pos: int, where: str, ext_attrs: tuple[ExtAttr, ...] = ()) -> Self:
        """The fixed 1024-byte part at ``pos`` (the caller has checked it is there)."""
        ints: tuple[int, int, int, int, int, int, int, int] = _ENTRY_INTS.unpack_from(data, pos)
        return cls(
            *ints,
            trsvcid=read_ascii(data[pos + 32 : pos + 64], "trsvcid", where, TRSVCID_MAX),
            subnqn=read_ascii(data[pos + 256 : pos + 512], "subnqn", where, NQN_MAX),
            traddr=read_ascii(data[pos + 512 : pos + 768], "traddr", where, TRADDR_MAX),
            tsas=data[pos + 768 : pos + 1024],
            ext_attrs=ext_attrs,
        )


def _slot_setters() -> tuple[Any, ...]:
    names = tuple(f.name for f in attrs.fields(LogPageEntry))
    expected = ("trtype", "adrfam", "subtype", "treq", "portid", "cntlid", "asqsz", "eflags",
                "trsvcid", "subnqn", "traddr", "tsas", "ext_attrs")  # fmt: skip
    if names != expected:
        raise AssertionError(f"_build_entries must follow LogPageEntry's fields: {names}")
    return tuple(getattr(LogPageEntry, name).__set__ for name in names)


(_TRTYPE, _ADRFAM, _SUBTYPE, _TREQ, _PORTID, _CNTLID, _ASQSZ, _EFLAGS,
 _TRSVCID, _SUBNQN, _TRADDR, _TSAS, _EXT_ATTRS) = _slot_setters()  # fmt: skip


def _build_entries(
    rows: Iterable[tuple[Any, ...]], exts: Iterable[tuple[ExtAttr, ...]]
) -> tuple[LogPageEntry, ...]:
    """Entries from ``_ENTRY`` rows, at about the cost of slicing them (bench row 1).

    TRADDR and TRSVCID repeat across a page, so their text is decoded once per distinct
    value; an all-zero TSAS is the one shared ``bytes`` (256 bytes less per entry held by
    stafd for each DC's cached page). The records are built without re-running the attrs
    validators: every value was checked here (the integers come from fixed-width struct
    fields, so they fit; TSAS is 256 bytes by construction). ProtocolError names the field
    and the entry.
    """
    trsvcids: dict[bytes, str] = {}
    traddrs: dict[bytes, str] = {}
    out: list[LogPageEntry] = []
    append, new = out.append, object.__new__
    for index, (row, ext) in enumerate(zip(rows, exts, strict=True)):
        (trtype, adrfam, subtype, treq, portid, cntlid, asqsz, eflags,
         raw_svc, raw_nqn, raw_addr, tsas) = row  # fmt: skip
        trsvcid = trsvcids.get(raw_svc)
        if trsvcid is None:
            trsvcid = trsvcids[raw_svc] = _text(raw_svc, "trsvcid", index, TRSVCID_MAX)
        stripped = raw_nqn.rstrip(b"\0 ")  # _text, inlined: the one field unique per entry
        if not (
            stripped.isascii()
            and len(stripped) <= NQN_MAX
            and (subnqn := stripped.decode("ascii")).isprintable()
        ):
            subnqn = read_ascii(raw_nqn, "subnqn", f"entry {index}", NQN_MAX)
        traddr = traddrs.get(raw_addr)
        if traddr is None:
            traddr = traddrs[raw_addr] = _text(raw_addr, "traddr", index, TRADDR_MAX)
        if tsas == _NO_TSAS:
            tsas = _NO_TSAS
        entry = new(LogPageEntry)
        _TRTYPE(entry, trtype)
        _ADRFAM(entry, adrfam)
        _SUBTYPE(entry, subtype)
        _TREQ(entry, treq)
        _PORTID(entry, portid)
        _CNTLID(entry, cntlid)
        _ASQSZ(entry, asqsz)
        _EFLAGS(entry, eflags)
        _TRSVCID(entry, trsvcid)
        _SUBNQN(entry, subnqn)
        _TRADDR(entry, traddr)
        _TSAS(entry, tsas)
        _EXT_ATTRS(entry, ext)
        append(entry)
    return tuple(out)


def _put(buf: bytearray, offset: int, text: str) -> None:
    raw = text.encode("ascii")
    buf[offset : offset + len(raw)] = raw


# --- header -------------------------------------------------------------------------------


@attrs.frozen
class LogPageHeader:
    genctr: int = attrs.field(validator=_uint(64))
    numrec: int = attrs.field(validator=_uint(64))
    recfmt: int = attrs.field(default=0, validator=_uint(16))
    dlpf: int = attrs.field(default=0, validator=_uint(8))
    tdlpl: int = attrs.field(default=0, validator=_uint(32))

    def encode(self) -> bytes:
        head = _HEADER.pack(self.genctr, self.numrec, self.recfmt, self.dlpf, 0, self.tdlpl)
        return head.ljust(HEADER_SIZE, b"\0")


def decode_header(data: bytes) -> LogPageHeader:
    """The header from a prefix of at least 24 bytes (so a host can size the full read)."""
    if len(data) < HEADER_PREFIX:
        raise ProtocolError(
            f"discovery log page header needs at least {HEADER_PREFIX} bytes, got {len(data)}"
        )
    genctr, numrec, recfmt, dlpf, _, tdlpl = _HEADER.unpack_from(data, 0)
    return LogPageHeader(genctr, numrec, recfmt, dlpf, tdlpl)


def encode_header(header: LogPageHeader) -> bytes:
    """The 1024-byte header."""
    return header.encode()


def required_length(header: LogPageHeader, *, extended: bool) -> int | None:
    """Bytes a host must fetch for the whole page; None when an extended page omits TDLPL."""
    if not extended:
        return HEADER_SIZE + header.numrec * ENTRY_SIZE
    if header.tdlpl:
        return header.tdlpl
    return HEADER_SIZE if header.numrec == 0 else None


# --- the page -----------------------------------------------------------------------------


@attrs.frozen
class Limits:
    """Caps on what a peer may make us allocate or walk."""

    max_records: int = 8192
    max_bytes: int = 16 * 1024 * 1024
    max_ext_attrs: int = 64


@attrs.frozen
class DiscoveryLogPage:
    genctr: int = attrs.field(validator=_uint(64))
    entries: tuple[LogPageEntry, ...] = attrs.field(converter=_entry_tuple)
    recfmt: int = attrs.field(default=0, validator=_uint(16))
    dlpf: int = attrs.field(default=0, validator=_uint(8))

    def encode(self, *, extended: bool = False) -> bytes:
        """Header (NUMREC, TDLPL, DLPF bit 0 = ``extended``) followed by the entries."""
        body = b"".join(e.encode(extended=extended) for e in self.entries)
        total = HEADER_SIZE + len(body)
        if total > 0xFFFFFFFF:
            raise ValueError(f"discovery log page of {total} bytes does not fit TDLPL")
        dlpf = (self.dlpf & ~DLPF_EXTENDED) | (DLPF_EXTENDED if extended else 0)
        header = LogPageHeader(self.genctr, len(self.entries), self.recfmt, dlpf, total)
        return header.encode() + body

    @classmethod
    def decode(
        cls, data: bytes, *, extended: bool | None = None, limits: Limits = Limits()
    ) -> DiscoveryLogPage:
        """Validate and decode a whole page; ``extended=None`` follows DLPF bit 0."""
        if len(data) < HEADER_SIZE:
            raise ProtocolError(
                f"discovery log page truncated: header needs {HEADER_SIZE} bytes, got {len(data)}"
            )
        header = decode_header(data)
        if extended is None:
            extended = bool(header.dlpf & DLPF_EXTENDED)
        if header.recfmt != 0:
            raise ProtocolError(f"discovery log page RECFMT {header.recfmt} is not supported")
        numrec = header.numrec
        if numrec > limits.max_records:
            raise ProtocolError(
                f"discovery log page NUMREC={numrec} exceeds the limit of "
                f"{limits.max_records} records"
            )
        needed = HEADER_SIZE + numrec * (EXT_ENTRY_MIN if extended else ENTRY_SIZE)
        if needed > limits.max_bytes:
            raise ProtocolError(
                f"discovery log page NUMREC={numrec} needs at least {needed} bytes, more than "
                f"the limit of {limits.max_bytes}"
            )
        if len(data) < needed:
            raise ProtocolError(
                f"log page truncated: NUMREC={numrec} needs {needed} bytes, got {len(data)}"
            )
        if extended:
            entries = _decode_extended(data, header, limits)
        else:
            with memoryview(data) as view:
                body = view[HEADER_SIZE : HEADER_SIZE + numrec * ENTRY_SIZE]
                entries = _build_entries(_ENTRY.iter_unpack(body), itertools.repeat((), numrec))
                body.release()
        return cls(header.genctr, entries, header.recfmt, header.dlpf)


def _decode_extended(
    data: bytes, header: LogPageHeader, limits: Limits
) -> tuple[LogPageEntry, ...]:
    """Walk variable-length entries by TEL, inside TDLPL when the DC gives it."""
    end = len(data)
    if header.tdlpl:
        if header.tdlpl < HEADER_SIZE:
            raise ProtocolError(f"discovery log page TDLPL={header.tdlpl} is below the header")
        if header.tdlpl > end:
            raise ProtocolError(f"log page truncated: TDLPL={header.tdlpl} bytes, got {len(data)}")
        end = header.tdlpl
    rows: list[tuple[Any, ...]] = []
    exts: list[tuple[ExtAttr, ...]] = []
    pos = HEADER_SIZE
    for i in range(header.numrec):
        where = f"entry {i}"
        if pos + EXT_ENTRY_MIN > end:
            raise ProtocolError(
                f"log page truncated: {where} at offset {pos} needs {EXT_ENTRY_MIN} bytes, "
                f"page ends at {end}"
            )
        tel, numexat = _EXT.unpack_from(data, pos + ENTRY_SIZE)
        if tel < EXT_ENTRY_MIN or tel % 4:
            raise ProtocolError(f"{where}: TEL={tel} is invalid (>= 1032, multiple of 4)")
        if pos + tel > end:
            raise ProtocolError(f"{where}: TEL={tel} at offset {pos} runs past the end ({end})")
        if numexat > limits.max_ext_attrs:
            raise ProtocolError(
                f"{where}: NUMEXAT={numexat} exceeds the limit of {limits.max_ext_attrs}"
            )
        exats = decode_ext_attrs(data, pos + EXT_ENTRY_MIN, pos + tel, numexat, where)
        rows.append(_ENTRY.unpack_from(data, pos))
        exts.append(exats)
        pos += tel
    return _build_entries(rows, exts)
