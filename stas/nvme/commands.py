"""NVMe admin and Fabrics command encodings for a discovery host and controller (sans-IO).

Values in, bytes out and back; no transport here. Layouts: NVMe Base / NVMe-oF as summarised
in peers-and-specs.md §2.4 (AEN), §2.5 (DIM) and §2.8 (SQE, CQE, commands, registers).

Builders leave CID at 0: the transport owns command identifiers (``sqe.with_cid``). They set
PSDT=01b (SGL) and an SGL1 descriptor the way the Linux host does, because an NVMe-oF
controller rejects anything else with "Invalid Field in Command".
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from enum import IntEnum
from typing import Any

import attrs

# Re-exported (commands.py's API predates the split; F401 is ignored for this file).
from stas.nvme.bitfields import (
    AEN_DISCOVERY_LOG_CHANGED,
    AEN_NOTICE_DISCOVERY_LOG_CHANGED,
    AEN_TYPE_NOTICE,
    CC_ENABLE,
    CC_SHUTDOWN_NORMAL,
    CSTS_SHST_COMPLETE,
    REG_CAP,
    REG_CC,
    REG_CSTS,
    REG_VS,
    AenInfo,
    Cap,
    Cc,
    ConnectResult,
    Csts,
    _check_uint,
    connect_result,
)
from stas.nvme.errors import ProtocolError
from stas.nvme.status import status_name as _status_name

SQE_SIZE = 64
CQE_SIZE = 16
CONNECT_DATA_SIZE = 1024
IDENTIFY_DATA_SIZE = 4096
NQN_MAX_BYTES = 223

PSDT_SGL = 0x40  # SQE byte 1: PSDT=01b, the only value NVMe-oF allows
SGL_TYPE_IN_CAPSULE = 0x01  # data block descriptor, offset subtype (data inside the capsule)
SGL_TYPE_TRANSPORT = 0x5A  # transport data block, transport-specific A (C2HData/H2CData)
CNTLID_DYNAMIC = 0xFFFF


class AdminOpcode(IntEnum):
    GET_LOG_PAGE = 0x02
    IDENTIFY = 0x06
    SET_FEATURES = 0x09
    GET_FEATURES = 0x0A
    ASYNC_EVENT_REQUEST = 0x0C
    KEEP_ALIVE = 0x18
    DIM = 0x21
    FABRICS = 0x7F


class FabricsType(IntEnum):
    PROPERTY_SET = 0x00
    CONNECT = 0x01
    PROPERTY_GET = 0x04
    AUTH_SEND = 0x05
    AUTH_RECV = 0x06
    DISCONNECT = 0x08


class FeatureId(IntEnum):
    ASYNC_EVENT_CONFIG = 0x0B
    KEEP_ALIVE_TIMER = 0x0F


AEC_DISCOVERY_LOG_CHANGE = 1 << 31


class LogPageId(IntEnum):
    SUPPORTED_LOG_PAGES = 0x00
    DISCOVERY = 0x70
    HOST_DISCOVERY = 0x71


LSP_EXTDLPE = 0x1  # extended discovery log page entries
LSP_PLEO = 0x2  # port-local entries only
LSP_ALLSUBE = 0x4  # all NVM subsystem entries


class DimTas(IntEnum):
    REGISTER = 0
    DEREGISTER = 1
    UPDATE = 2


def _uint(bits: int) -> Callable[[Any, attrs.Attribute[Any], Any], None]:
    """attrs validator: reject values that would not fit their wire field."""

    def check(_inst: Any, attr: attrs.Attribute[Any], value: Any) -> None:
        if not isinstance(value, int) or not 0 <= value < (1 << bits):
            raise ValueError(f"{attr.name}={value!r} is not an unsigned {bits}-bit integer")

    return check


def _nbytes(size: int) -> Callable[[Any, attrs.Attribute[Any], Any], None]:
    def check(_inst: Any, attr: attrs.Attribute[Any], value: Any) -> None:
        if not isinstance(value, bytes) or len(value) != size:
            raise ValueError(f"{attr.name} must be exactly {size} bytes, got {value!r}")

    return check


def make_sgl(sgl_type: int, length: int, address: int = 0) -> bytes:
    """A 16-byte SGL descriptor: address (8), length (4), reserved (3), type (1)."""
    _check_uint("sgl_type", sgl_type, 8)
    _check_uint("length", length, 32)
    _check_uint("address", address, 64)
    return struct.pack("<QI3xB", address, length, sgl_type)


NULL_SGL = make_sgl(SGL_TYPE_TRANSPORT, 0)

_SQE = struct.Struct("<BBHIIIQ16s6I")


@attrs.frozen
class Sqe:
    """A 64-byte submission queue entry; for Fabrics commands NSID byte 0 is FCTYPE."""

    opcode: int = attrs.field(validator=_uint(8))
    flags: int = attrs.field(default=0, validator=_uint(8))
    cid: int = attrs.field(default=0, validator=_uint(16))
    nsid: int = attrs.field(default=0, validator=_uint(32))
    cdw2: int = attrs.field(default=0, validator=_uint(32))
    cdw3: int = attrs.field(default=0, validator=_uint(32))
    mptr: int = attrs.field(default=0, validator=_uint(64))
    dptr: bytes = attrs.field(default=bytes(16), validator=_nbytes(16))
    cdw10: int = attrs.field(default=0, validator=_uint(32))
    cdw11: int = attrs.field(default=0, validator=_uint(32))
    cdw12: int = attrs.field(default=0, validator=_uint(32))
    cdw13: int = attrs.field(default=0, validator=_uint(32))
    cdw14: int = attrs.field(default=0, validator=_uint(32))
    cdw15: int = attrs.field(default=0, validator=_uint(32))

    def encode(self) -> bytes:
        return _SQE.pack(
            self.opcode, self.flags, self.cid, self.nsid, self.cdw2, self.cdw3, self.mptr,
            self.dptr, self.cdw10, self.cdw11, self.cdw12, self.cdw13, self.cdw14, self.cdw15,
        )  # fmt: skip

    @classmethod
    def decode(cls, buf: bytes) -> Sqe:
        if len(buf) != SQE_SIZE:
            raise ProtocolError(f"SQE must be {SQE_SIZE} bytes, got {len(buf)}")
        return cls(*_SQE.unpack(bytes(buf)))

    def with_cid(self, cid: int) -> Sqe:
        return attrs.evolve(self, cid=cid)

    @property
    def fctype(self) -> int:
        """Fabrics command type (SQE byte 4); meaningful only when opcode is 0x7F."""
        return self.nsid & 0xFF

    @property
    def sgl_length(self) -> int:
        return int.from_bytes(self.dptr[8:12], "little")

    @property
    def sgl_type(self) -> int:
        return self.dptr[15]

    @property
    def sgl_address(self) -> int:
        return int.from_bytes(self.dptr[0:8], "little")


_CQE = struct.Struct("<IIHHHH")


def make_status(sct: int, sc: int, *, dnr: bool = False) -> int:
    """Status value as stored in ``Cqe.status`` (no phase bit)."""
    _check_uint("sct", sct, 3)
    _check_uint("sc", sc, 8)
    return (int(dnr) << 14) | (sct << 8) | sc


@attrs.frozen
class Cqe:
    """A 16-byte completion; ``status`` excludes the phase bit (unused by NVMe-oF)."""

    dw0: int = attrs.field(default=0, validator=_uint(32))
    dw1: int = attrs.field(default=0, validator=_uint(32))
    sqhd: int = attrs.field(default=0, validator=_uint(16))
    sqid: int = attrs.field(default=0, validator=_uint(16))
    cid: int = attrs.field(default=0, validator=_uint(16))
    status: int = attrs.field(default=0, validator=_uint(15))

    def encode(self) -> bytes:
        return _CQE.pack(self.dw0, self.dw1, self.sqhd, self.sqid, self.cid, self.status << 1)

    @classmethod
    def decode(cls, buf: bytes) -> Cqe:
        if len(buf) != CQE_SIZE:
            raise ProtocolError(f"CQE must be {CQE_SIZE} bytes, got {len(buf)}")
        dw0, dw1, sqhd, sqid, cid, word = _CQE.unpack(bytes(buf))
        return cls(dw0, dw1, sqhd, sqid, cid, word >> 1)

    @property
    def sc(self) -> int:
        return self.status & 0xFF

    @property
    def sct(self) -> int:
        return (self.status >> 8) & 0x7

    @property
    def crd(self) -> int:
        return (self.status >> 11) & 0x3

    @property
    def more(self) -> bool:
        return bool(self.status & (1 << 13))

    @property
    def dnr(self) -> bool:
        return bool(self.status & (1 << 14))

    @property
    def ok(self) -> bool:
        return self.status & 0x7FF == 0

    @property
    def status_name(self) -> str:
        return _status_name(self.status)


# --- builders (host side) -------------------------------------------------------------------


def _fabrics(fctype: FabricsType, dptr: bytes = NULL_SGL, **cdws: int) -> Sqe:
    return Sqe(opcode=AdminOpcode.FABRICS, flags=PSDT_SGL, nsid=fctype, dptr=dptr, **cdws)


def _admin(opcode: AdminOpcode, dptr: bytes = NULL_SGL, **cdws: int) -> Sqe:
    return Sqe(opcode=opcode, flags=PSDT_SGL, dptr=dptr, **cdws)


def connect(*, kato_ms: int, sqsize: int = 31, qid: int = 0, cattr: int = 0) -> Sqe:
    """Fabrics Connect; the 1024-byte ConnectData travels in-capsule."""
    _check_uint("kato_ms", kato_ms, 32)
    _check_uint("sqsize", sqsize, 16)
    _check_uint("qid", qid, 16)
    _check_uint("cattr", cattr, 8)
    if sqsize == 0:
        raise ValueError("sqsize=0 is invalid (0's based; a queue needs at least 2 entries)")
    dptr = make_sgl(SGL_TYPE_IN_CAPSULE, CONNECT_DATA_SIZE)
    return _fabrics(
        FabricsType.CONNECT, dptr, cdw10=qid << 16, cdw11=sqsize | (cattr << 16), cdw12=kato_ms
    )


def property_get(offset: int, *, eight_bytes: bool) -> Sqe:
    _check_uint("offset", offset, 32)
    return _fabrics(FabricsType.PROPERTY_GET, cdw10=int(eight_bytes), cdw11=offset)


def property_set(offset: int, value: int, *, eight_bytes: bool = False) -> Sqe:
    _check_uint("offset", offset, 32)
    _check_uint("value", value, 64 if eight_bytes else 32)
    return _fabrics(
        FabricsType.PROPERTY_SET,
        cdw10=int(eight_bytes),
        cdw11=offset,
        cdw12=value & 0xFFFFFFFF,
        cdw13=value >> 32,
    )


def identify_controller() -> Sqe:
    """Identify, CNS 01h: 4096 bytes controller-to-host."""
    return _admin(AdminOpcode.IDENTIFY, make_sgl(SGL_TYPE_TRANSPORT, IDENTIFY_DATA_SIZE), cdw10=1)


def get_log_page(lid: int, *, offset: int, length: int, lsp: int = 0, rae: bool = False) -> Sqe:
    """Get Log Page of ``length`` bytes from byte ``offset`` (both dword multiples)."""
    _check_uint("lid", lid, 8)
    _check_uint("lsp", lsp, 7)
    _check_uint("offset", offset, 64)
    if not isinstance(length, int) or length <= 0 or length % 4 or length > 0xFFFFFFFC:
        raise ValueError(f"length={length!r} must be a positive multiple of 4 below 4 GiB")
    if offset % 4:
        raise ValueError(f"offset={offset} must be a multiple of 4 (dword aligned)")
    numd = length // 4 - 1
    return _admin(
        AdminOpcode.GET_LOG_PAGE,
        make_sgl(SGL_TYPE_TRANSPORT, length),
        cdw10=lid | (lsp << 8) | (int(rae) << 15) | ((numd & 0xFFFF) << 16),
        cdw11=numd >> 16,
        cdw12=offset & 0xFFFFFFFF,
        cdw13=offset >> 32,
    )


def set_features(fid: int, cdw11: int) -> Sqe:
    _check_uint("fid", fid, 8)
    _check_uint("cdw11", cdw11, 32)
    return _admin(AdminOpcode.SET_FEATURES, cdw10=fid, cdw11=cdw11)


def get_features(fid: int) -> Sqe:
    _check_uint("fid", fid, 8)
    return _admin(AdminOpcode.GET_FEATURES, cdw10=fid)


def keep_alive() -> Sqe:
    return _admin(AdminOpcode.KEEP_ALIVE)


def async_event_request() -> Sqe:
    return _admin(AdminOpcode.ASYNC_EVENT_REQUEST)


def dim(tas: DimTas, *, data_length: int = 0) -> Sqe:
    """Discovery Information Management; the DIM data (``data_length`` bytes) is in-capsule."""
    _check_uint("tas", tas, 4)
    _check_uint("data_length", data_length, 32)
    dptr = make_sgl(SGL_TYPE_IN_CAPSULE, data_length) if data_length else NULL_SGL
    return _admin(AdminOpcode.DIM, dptr, cdw10=int(tas))


# --- decoders (controller side) -------------------------------------------------------------


@attrs.frozen
class GetLogPageArgs:
    lid: int
    lsp: int
    rae: bool
    offset: int
    length: int


@attrs.frozen
class PropertyArgs:
    offset: int
    eight_bytes: bool
    value: int | None  # None for Property Get


@attrs.frozen
class ConnectArgs:
    recfmt: int
    qid: int
    sqsize: int
    cattr: int
    kato_ms: int


def _expect_fabrics(sqe: Sqe, *types: FabricsType) -> None:
    if sqe.opcode != AdminOpcode.FABRICS or sqe.fctype not in types:
        names = "/".join(t.name for t in types)
        raise ProtocolError(
            f"expected Fabrics {names}, got opcode 0x{sqe.opcode:02x} fctype 0x{sqe.fctype:02x}"
        )


def decode_get_log_page(sqe: Sqe) -> GetLogPageArgs:
    if sqe.opcode != AdminOpcode.GET_LOG_PAGE:
        raise ProtocolError(f"expected Get Log Page (0x02), got opcode 0x{sqe.opcode:02x}")
    numd = (sqe.cdw10 >> 16) | ((sqe.cdw11 & 0xFFFF) << 16)
    return GetLogPageArgs(
        lid=sqe.cdw10 & 0xFF,
        lsp=(sqe.cdw10 >> 8) & 0x7F,
        rae=bool(sqe.cdw10 & (1 << 15)),
        offset=sqe.cdw12 | (sqe.cdw13 << 32),
        length=(numd + 1) * 4,
    )


def decode_property(sqe: Sqe) -> PropertyArgs:
    """Property Get/Set; like Linux nvmet, ATTRIB bit 0 alone selects the 8-byte size."""
    _expect_fabrics(sqe, FabricsType.PROPERTY_GET, FabricsType.PROPERTY_SET)
    eight = bool(sqe.cdw10 & 0x1)
    value: int | None = None
    if sqe.fctype == FabricsType.PROPERTY_SET:
        value = sqe.cdw12 | (sqe.cdw13 << 32) if eight else sqe.cdw12
    return PropertyArgs(offset=sqe.cdw11, eight_bytes=eight, value=value)


def decode_connect(sqe: Sqe) -> ConnectArgs:
    _expect_fabrics(sqe, FabricsType.CONNECT)
    return ConnectArgs(
        recfmt=sqe.cdw10 & 0xFFFF,
        qid=sqe.cdw10 >> 16,
        sqsize=sqe.cdw11 & 0xFFFF,
        cattr=(sqe.cdw11 >> 16) & 0xFF,
        kato_ms=sqe.cdw12,
    )


# Connect response DW0: the controller asks for in-band authentication (DH-HMAC-CHAP); here,
# not in stas.nvme.auth, so a connection that needs none never imports the protocol (~0.25 MB)
CONNECT_AUTHREQ_ATR = 1 << 17
CONNECT_AUTHREQ_ASCR = 1 << 18


def auth_required(connect_dw0: int) -> bool:
    """Whether a Connect answer asks the host to run DH-HMAC-CHAP before anything else."""
    return bool(connect_dw0 & (CONNECT_AUTHREQ_ATR | CONNECT_AUTHREQ_ASCR))


# --- Connect data ---------------------------------------------------------------------------


def _nqn_field(name: str, nqn: str) -> bytes:
    try:
        raw = nqn.encode("ascii")
    except UnicodeEncodeError:
        raise ValueError(f"{name} {nqn!r} is not ASCII") from None
    if len(raw) > NQN_MAX_BYTES:
        raise ValueError(f"{name} {nqn!r} is {len(raw)} bytes, more than {NQN_MAX_BYTES}")
    if b"\0" in raw:
        raise ValueError(f"{name} {nqn!r} contains a NUL character")
    return raw.ljust(256, b"\0")


def _nqn_value(name: str, field: bytes) -> str:
    end = field.find(b"\0")
    if end < 0 or end > NQN_MAX_BYTES:
        raise ProtocolError(f"{name} is not a NUL-terminated string of at most 223 bytes")
    try:
        return field[:end].decode("ascii")
    except UnicodeDecodeError:
        raise ProtocolError(f"{name} {field[:end]!r} is not ASCII") from None


@attrs.frozen
class ConnectData:
    """The 1024-byte data of a Connect command (in-capsule)."""

    hostid: bytes = attrs.field(validator=_nbytes(16))
    cntlid: int = attrs.field(validator=_uint(16))
    subnqn: str
    hostnqn: str

    def encode(self) -> bytes:
        buf = bytearray(CONNECT_DATA_SIZE)
        buf[0:16] = self.hostid
        struct.pack_into("<H", buf, 16, self.cntlid)
        buf[256:512] = _nqn_field("subnqn", self.subnqn)
        buf[512:768] = _nqn_field("hostnqn", self.hostnqn)
        return bytes(buf)

    @classmethod
    def decode(cls, buf: bytes) -> ConnectData:
        if len(buf) != CONNECT_DATA_SIZE:
            raise ProtocolError(f"Connect data must be {CONNECT_DATA_SIZE} bytes, got {len(buf)}")
        buf = bytes(buf)
        return cls(
            hostid=buf[0:16],
            cntlid=int.from_bytes(buf[16:18], "little"),
            subnqn=_nqn_value("subnqn", buf[256:512]),
            hostnqn=_nqn_value("hostnqn", buf[512:768]),
        )
