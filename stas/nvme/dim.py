"""TP8010 Discovery Information Management (DIM) data: sans-IO codec for host and controller.

A host sends this with the DIM command (register / deregister / update) to tell a DDC or
CDC who it is. ``host_registration`` builds exactly what libnvme sends: one extended
Discovery Information Entry (DIE) whose TRADDR is empty ("DC, take my address from the
socket"), a Host ID attribute and an optional space-padded Symbolic Name.

A controller decodes it from an untrusted host, so ``DimData.decode`` checks every length
and count (TDL, NUMENT, TEL, NUMEXAT, EXATLEN) before walking and raises only
``ProtocolError``.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Self

import attrs

from stas.nvme.errors import ProtocolError
from stas.nvme.hostid import symname_problem
from stas.nvme.logpage import (
    ENTRY_SIZE,
    EXT_ENTRY_MIN,
    NQN_MAX,
    TRADDR_MAX,
    TRSVCID_MAX,
    TSAS_SIZE,
    ExtAttr,
    TrType,
    check_ascii,
    decode_ext_attrs,
    encode_ext_attrs,
    read_ascii,
    short_bytes,
)

HEADER_SIZE = 1024
EID_SIZE = 256
ENAME_SIZE = 256
EVER_SIZE = 64
HOSTID_SIZE = 16
EKTYPE_DEFAULT = 0x5F  # libnvme: "must be 0x5F per specs"
EXATTYPE_HOSTID = 1
EXATTYPE_SYMNAME = 2
MAX_EXT_ATTRS = 16

_HEADER = struct.Struct("<I4xQHHBxH")  # TDL, NUMENT, ENTFMT, ETYPE, PORTLCL, EKTYPE
_DIE_INTS = struct.Struct("<BB")  # TRTYPE, ADRFAM
_TEL = struct.Struct("<IH")


class DimEntityType(enum.IntEnum):
    HOST = 1
    DDC = 2
    CDC = 3


class DimEntryFormat(enum.IntEnum):
    BASIC = 1
    EXTENDED = 2


def _ascii(max_len: int) -> Callable[[object, attrs.Attribute[str], str], None]:
    def check(inst: object, attr: attrs.Attribute[str], value: str) -> None:
        check_ascii(value, attr.name, max_len)

    return check


def _byte(inst: object, attr: attrs.Attribute[int], value: int) -> None:
    if not 0 <= value <= 0xFF:
        raise ValueError(f"{attr.name} {value!r} is not an 8-bit unsigned integer")


def _u16(inst: object, attr: attrs.Attribute[int], value: int) -> None:
    if not 0 <= value <= 0xFFFF:
        raise ValueError(f"{attr.name} {value!r} is not a 16-bit unsigned integer")


def _symname(value: str | None) -> str | None:
    return value or None  # libnvme sends no attribute for an empty name


def check_symname(value: str) -> None:
    """Raise ValueError unless ``value`` passes ``symname_problem`` (stas.nvme.hostid's rule).

    The symbolic name is the one string of a registration that may be non-ASCII: sys.conf
    and stasadm take any printable text, and libnvme (upstream) sends its UTF-8 bytes as
    they are, so we do too (a DC that wants ASCII answers with an error we log)."""
    problem = symname_problem(value)
    if problem is not None:
        raise ValueError(f"symname {value!r}: {problem}")


def read_symname(raw: bytes, where: str) -> str:
    """The Symbolic Name attribute's value: UTF-8, NUL or trailing spaces end it, and checked
    by the one symname rule (``symname_problem``) that what we send is checked by."""
    end = raw.find(b"\0")
    raw = (raw if end < 0 else raw[:end]).rstrip(b" ")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"{where}: symbolic name is not UTF-8 (byte {exc.start})") from None
    problem = symname_problem(text)
    if problem is not None:
        shown = repr(text[:48]) + ("..." if len(text) > 48 else "")
        raise ProtocolError(f"{where}: symbolic name {shown}: {problem}")
    return text


def _put(buf: bytearray, offset: int, text: str) -> None:
    raw = text.encode("ascii")
    buf[offset : offset + len(raw)] = raw


@attrs.frozen
class DimHostEntry:
    """One host Discovery Information Entry (TRADDR '' = use the socket's source address)."""

    trtype: int = attrs.field(validator=_byte)
    adrfam: int = attrs.field(validator=_byte)
    hostnqn: str = attrs.field(validator=_ascii(NQN_MAX))
    traddr: str = attrs.field(default="", validator=_ascii(TRADDR_MAX))
    hostid: bytes = attrs.field(default=bytes(HOSTID_SIZE), converter=bytes, repr=bytes.hex)
    symname: str | None = attrs.field(default=None, converter=_symname)
    trsvcid: str = attrs.field(default="", validator=_ascii(TRSVCID_MAX))
    tsas: bytes = attrs.field(default=bytes(TSAS_SIZE), converter=bytes, repr=short_bytes)

    @hostid.validator
    def _check_hostid(self, attr: attrs.Attribute[bytes], value: bytes) -> None:
        if len(value) != HOSTID_SIZE:
            raise ValueError(f"hostid must be {HOSTID_SIZE} bytes, got {len(value)}")

    @symname.validator
    def _check_symname(self, attr: attrs.Attribute[str | None], value: str | None) -> None:
        if value is not None:
            check_symname(value)

    @tsas.validator
    def _check_tsas(self, attr: attrs.Attribute[bytes], value: bytes) -> None:
        if len(value) != TSAS_SIZE:
            raise ValueError(f"tsas must be {TSAS_SIZE} bytes, got {len(value)}")

    def _base(self) -> bytearray:
        buf = bytearray(ENTRY_SIZE)
        _DIE_INTS.pack_into(buf, 0, self.trtype, self.adrfam)
        _put(buf, 32, self.trsvcid)
        _put(buf, 256, self.hostnqn)
        _put(buf, 512, self.traddr)
        buf[768:1024] = self.tsas
        return buf

    def ext_attrs(self) -> tuple[ExtAttr, ...]:
        found = [ExtAttr(EXATTYPE_HOSTID, self.hostid)]
        if self.symname:
            raw = self.symname.encode("utf-8")
            padded = raw.ljust((len(raw) + 3) & ~3, b" ")  # strings pad with spaces
            found.append(ExtAttr(EXATTYPE_SYMNAME, padded))
        return tuple(found)

    def encode(self, entry_format: int = DimEntryFormat.EXTENDED) -> bytes:
        """Extended: 1024-byte base, TEL, NUMEXAT, attributes. Basic: the base only."""
        if entry_format == DimEntryFormat.BASIC:
            if self.hostid != bytes(HOSTID_SIZE) or self.symname:
                raise ValueError("a basic DIM entry cannot carry a Host ID or symbolic name")
            return bytes(self._base())
        exats = self.ext_attrs()
        body = encode_ext_attrs(exats)
        return (
            bytes(self._base()) + _TEL.pack(EXT_ENTRY_MIN + len(body), len(exats)) + b"\0\0" + body
        )

    @classmethod
    def decode(cls, data: bytes, pos: int, tel: int, numexat: int, where: str) -> Self:
        """One entry at ``pos``: ``tel`` bytes, already checked to be inside the data."""
        hostid = bytes(HOSTID_SIZE)
        symname: str | None = None
        if tel:
            seen: set[int] = set()
            for n, exat in enumerate(
                decode_ext_attrs(data, pos + EXT_ENTRY_MIN, pos + tel, numexat, where)
            ):
                if exat.type in seen and exat.type in (EXATTYPE_HOSTID, EXATTYPE_SYMNAME):
                    raise ProtocolError(f"{where}: extended attribute {n} repeats type {exat.type}")
                seen.add(exat.type)
                if exat.type == EXATTYPE_HOSTID:
                    if len(exat.value) != HOSTID_SIZE:
                        raise ProtocolError(
                            f"{where}: Host ID attribute is {len(exat.value)} bytes, "
                            f"expected {HOSTID_SIZE}"
                        )
                    hostid = exat.value
                elif exat.type == EXATTYPE_SYMNAME:
                    symname = read_symname(exat.value, where)
            if EXATTYPE_HOSTID not in seen:
                raise ProtocolError(f"{where}: the Host ID attribute is missing")
        trtype, adrfam = _DIE_INTS.unpack_from(data, pos)
        return cls(
            trtype=trtype,
            adrfam=adrfam,
            hostnqn=read_ascii(data[pos + 256 : pos + 512], "host NQN", where, NQN_MAX),
            traddr=read_ascii(data[pos + 512 : pos + 768], "traddr", where, TRADDR_MAX),
            hostid=hostid,
            symname=symname,
            trsvcid=read_ascii(data[pos + 32 : pos + 64], "trsvcid", where, TRSVCID_MAX),
            tsas=data[pos + 768 : pos + 1024],
        )


if TYPE_CHECKING:  # the converter is `tuple` itself; this says what it takes and makes

    def _entry_tuple(items: Iterable[DimHostEntry]) -> tuple[DimHostEntry, ...]: ...
else:
    _entry_tuple = tuple


@attrs.frozen
class DimData:
    """The DIM command's data: a 1024-byte header (who is registering) and its entries."""

    entity_type: int = attrs.field(validator=_u16)
    eid: str = attrs.field(validator=_ascii(EID_SIZE))
    ename: str = attrs.field(validator=_ascii(ENAME_SIZE))
    ever: str = attrs.field(validator=_ascii(EVER_SIZE))
    entries: tuple[DimHostEntry, ...] = attrs.field(converter=_entry_tuple)
    entry_format: int = attrs.field(default=DimEntryFormat.EXTENDED)
    portlcl: int = attrs.field(default=0, validator=_byte)
    ektype: int = attrs.field(default=EKTYPE_DEFAULT, validator=_u16)

    @entry_format.validator
    def _check_format(self, attr: attrs.Attribute[int], value: int) -> None:
        if value not in (DimEntryFormat.BASIC, DimEntryFormat.EXTENDED):
            raise ValueError(f"entry_format {value!r} is neither 1 (basic) nor 2 (extended)")

    def encode(self) -> bytes:
        """Header with TDL = total length and NUMENT = len(entries), then the entries."""
        body = b"".join(e.encode(self.entry_format) for e in self.entries)
        tdl = HEADER_SIZE + len(body)
        if tdl > 0xFFFFFFFF:
            raise ValueError(f"DIM data of {tdl} bytes does not fit TDL")
        head = bytearray(HEADER_SIZE)
        _HEADER.pack_into(
            head, 0, tdl, len(self.entries), self.entry_format,
            self.entity_type, self.portlcl, self.ektype,
        )  # fmt: skip
        _put(head, 24, self.eid)
        _put(head, 280, self.ename)
        _put(head, 536, self.ever)
        return bytes(head) + body

    @classmethod
    def decode(cls, data: bytes, *, max_entries: int = 16) -> DimData:
        """Validate and decode; any inconsistency raises ProtocolError naming the field."""
        if len(data) < HEADER_SIZE:
            raise ProtocolError(
                f"DIM data truncated: header needs {HEADER_SIZE} bytes, got {len(data)}"
            )
        tdl, nument, entfmt, etype, portlcl, ektype = _HEADER.unpack_from(data, 0)
        if tdl != len(data):
            raise ProtocolError(f"DIM data TDL={tdl} does not match the {len(data)} bytes received")
        if nument > max_entries:
            raise ProtocolError(f"DIM data NUMENT={nument} exceeds the limit of {max_entries}")
        if entfmt not in (DimEntryFormat.BASIC, DimEntryFormat.EXTENDED):
            raise ProtocolError(f"DIM data ENTFMT={entfmt} is neither 1 (basic) nor 2 (extended)")
        where = "DIM data"
        eid = read_ascii(data[24:280], "EID", where, EID_SIZE)
        ename = read_ascii(data[280:536], "ENAME", where, ENAME_SIZE)
        ever = read_ascii(data[536:600], "EVER", where, EVER_SIZE)
        entries = _decode_entries(data, nument, entfmt)
        return cls(etype, eid, ename, ever, entries, entfmt, portlcl, ektype)


def _decode_entries(data: bytes, nument: int, entfmt: int) -> tuple[DimHostEntry, ...]:
    end = len(data)
    pos = HEADER_SIZE
    entries: list[DimHostEntry] = []
    for i in range(nument):
        where = f"DIM entry {i}"
        if entfmt == DimEntryFormat.BASIC:
            if pos + ENTRY_SIZE > end:
                raise ProtocolError(f"{where}: truncated, needs {ENTRY_SIZE} bytes at offset {pos}")
            entries.append(DimHostEntry.decode(data, pos, 0, 0, where))
            pos += ENTRY_SIZE
            continue
        if pos + EXT_ENTRY_MIN > end:
            raise ProtocolError(f"{where}: truncated, needs {EXT_ENTRY_MIN} bytes at offset {pos}")
        tel, numexat = _TEL.unpack_from(data, pos + ENTRY_SIZE)
        if tel < EXT_ENTRY_MIN or tel % 4:
            raise ProtocolError(f"{where}: TEL={tel} is invalid (>= 1032, multiple of 4)")
        if pos + tel > end:
            raise ProtocolError(f"{where}: TEL={tel} at offset {pos} runs past TDL={end}")
        if numexat > MAX_EXT_ATTRS:
            raise ProtocolError(f"{where}: NUMEXAT={numexat} exceeds the limit of {MAX_EXT_ATTRS}")
        entries.append(DimHostEntry.decode(data, pos, tel, numexat, where))
        pos += tel
    if pos != end:
        raise ProtocolError(f"DIM data TDL={end} but the entries end at {pos}")
    return tuple(entries)


def _sanitise(text: str, size: int) -> str:
    """Host facts (hostname, os-release) as printable ASCII that fits, like libnvme's copy."""
    clean = "".join(c if c.isascii() and c.isprintable() else "?" for c in text)
    return clean[:size].rstrip(" ")


def host_registration(
    *,
    hostnqn: str,
    hostid: bytes,
    hostname: str,
    os_version: str,
    symname: str | None,
    adrfam: int,
    trtype: int = TrType.TCP,
) -> DimData:
    """What libnvme's nvmf_register_ctrl() sends: one extended host entry, TRADDR empty.

    Hostname and OS version are truncated to their fields (ENAME 256, EVER 64) and
    non-printable characters become '?'; the NQN, Host ID and symbolic name must be valid.
    """
    entry = DimHostEntry(
        trtype=int(trtype), adrfam=int(adrfam), hostnqn=hostnqn, hostid=hostid, symname=symname
    )
    return DimData(
        entity_type=DimEntityType.HOST,
        eid=hostnqn,
        ename=_sanitise(hostname, ENAME_SIZE),
        ever=_sanitise(os_version, EVER_SIZE),
        entries=(entry,),
        entry_format=DimEntryFormat.EXTENDED,
        portlcl=0,
        ektype=EKTYPE_DEFAULT,
    )
