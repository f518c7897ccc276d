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
import struct
from collections.abc import Iterable
from types import MappingProxyType
from typing import Any, Self

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

_HEADER = struct.Struct("<QQHBBI")
_ENTRY_INTS = struct.Struct("<BBBBHHHH")
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


def check_ascii(value: str, field: str, max_len: int) -> None:
    """Raise ValueError unless ``value`` is printable ASCII of at most ``max_len`` bytes."""
    if not (value.isascii() and value.isprintable()):
        raise ValueError(f"{field} {value!r} must be printable ASCII")
    if len(value) > max_len:
        raise ValueError(f"{field} {value!r} is {len(value)} bytes, more than {max_len}")


def _uint(bits: int) -> Any:
    """attrs validator: an int that fits an unsigned field of ``bits`` bits."""
    top = (1 << bits) - 1

    def check(inst: object, attr: attrs.Attribute[int], value: int) -> None:
        if not isinstance(value, int) or not 0 <= value <= top:
            raise ValueError(f"{attr.name} {value!r} is not a {bits}-bit unsigned integer")

    return check


def _ascii(max_len: int) -> Any:
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
    ext_attrs: tuple[ExtAttr, ...] = attrs.field(default=(), converter=tuple)

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

        return {
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

    @classmethod
    def decode(cls, data: bytes, pos: int, where: str, ext_attrs: tuple[ExtAttr, ...] = ()) -> Self:
        """The fixed 1024-byte part at ``pos`` (the caller has checked it is there)."""
        ints = _ENTRY_INTS.unpack_from(data, pos)
        return cls(
            *ints,
            trsvcid=read_ascii(data[pos + 32 : pos + 64], "trsvcid", where, TRSVCID_MAX),
            subnqn=read_ascii(data[pos + 256 : pos + 512], "subnqn", where, NQN_MAX),
            traddr=read_ascii(data[pos + 512 : pos + 768], "traddr", where, TRADDR_MAX),
            tsas=data[pos + 768 : pos + 1024],
            ext_attrs=ext_attrs,
        )


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
    entries: tuple[LogPageEntry, ...] = attrs.field(converter=tuple)
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
            entries = tuple(
                LogPageEntry.decode(data, HEADER_SIZE + i * ENTRY_SIZE, f"entry {i}")
                for i in range(numrec)
            )
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
    entries: list[LogPageEntry] = []
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
        entries.append(LogPageEntry.decode(data, pos, where, exats))
        pos += tel
    return tuple(entries)
