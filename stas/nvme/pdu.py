"""NVMe/TCP PDUs: value classes, an encoder and an incremental, validating decoder.

Sans-IO in the style of h11: bytes in, values out, no sockets. The decoder treats every byte
as untrusted: the 8-byte common header is checked (type, HLEN, PLEN bounds, PDO, digest
flags) *before* any body is buffered, so a hostile peer cannot make us wait for or allocate a
huge PDU. Layouts follow peers-and-specs.md section 2.7.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from enum import IntEnum
from typing import get_args

import attrs

from stas.nvme.crc32c import crc32c


class PduType(IntEnum):
    IC_REQ = 0
    IC_RESP = 1
    H2C_TERM_REQ = 2
    C2H_TERM_REQ = 3
    CAPSULE_CMD = 4
    CAPSULE_RESP = 5
    H2C_DATA = 6
    C2H_DATA = 7
    R2T = 9


class TermReqFes(IntEnum):
    """Fatal Error Status of a termination request."""

    INVALID_HEADER_FIELD = 1
    PDU_SEQUENCE_ERROR = 2
    HEADER_DIGEST_ERROR = 3
    DATA_TRANSFER_OUT_OF_RANGE = 4
    R2T_LIMIT_EXCEEDED = 5
    UNSUPPORTED_PARAMETER = 6


FLAG_HDGST = 0x01
FLAG_DDGST = 0x02
FLAG_LAST_PDU = 0x04
FLAG_SUCCESS = 0x08

COMMON_HEADER_LEN = 8
IC_PDU_LEN = 128
TERM_REQ_HLEN = 24
TERM_REQ_MAX_HEADER = 128
SQE_LEN = 64
CQE_LEN = 16

_HLEN = {
    PduType.IC_REQ: IC_PDU_LEN,
    PduType.IC_RESP: IC_PDU_LEN,
    PduType.H2C_TERM_REQ: TERM_REQ_HLEN,
    PduType.C2H_TERM_REQ: TERM_REQ_HLEN,
    PduType.CAPSULE_CMD: 8 + SQE_LEN,
    PduType.CAPSULE_RESP: 8 + CQE_LEN,
    PduType.H2C_DATA: 24,
    PduType.C2H_DATA: 24,
    PduType.R2T: 24,
}
_DATA_TYPES = frozenset({PduType.CAPSULE_CMD, PduType.H2C_DATA, PduType.C2H_DATA})
_NO_DIGEST_TYPES = frozenset(
    {PduType.IC_REQ, PduType.IC_RESP, PduType.H2C_TERM_REQ, PduType.C2H_TERM_REQ}
)
_FES_TEXT = {
    TermReqFes.INVALID_HEADER_FIELD: "invalid PDU header field",
    TermReqFes.PDU_SEQUENCE_ERROR: "PDU sequence error",
    TermReqFes.HEADER_DIGEST_ERROR: "header digest error",
    TermReqFes.DATA_TRANSFER_OUT_OF_RANGE: "data transfer out of range",
    TermReqFes.R2T_LIMIT_EXCEEDED: "R2T / data transfer limit exceeded",
    TermReqFes.UNSUPPORTED_PARAMETER: "unsupported parameter",
}


def _uint(bits: int) -> Callable[[object, attrs.Attribute[int], object], None]:
    top = (1 << bits) - 1

    def check(_inst: object, attr: attrs.Attribute[int], value: object) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= top:
            raise ValueError(f"{attr.name} {value!r} out of range 0..{top}")

    return check


def _length(
    *, exact: int | None = None, at_most: int | None = None, nonempty: bool = False
) -> Callable[[object, attrs.Attribute[bytes], bytes], None]:
    def check(_inst: object, attr: attrs.Attribute[bytes], value: bytes) -> None:
        if exact is not None and len(value) != exact:
            raise ValueError(f"{attr.name} must be {exact} bytes, got {len(value)}")
        if at_most is not None and len(value) > at_most:
            raise ValueError(f"{attr.name} must be at most {at_most} bytes, got {len(value)}")
        if nonempty and not value:
            raise ValueError(f"{attr.name} must not be empty")

    return check


def _as_bytes(value: object) -> bytes:
    """Accept any bytes-like value but never an int (``bytes(5)`` would silently be zeros)."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    raise TypeError(f"expected bytes, got {type(value).__name__}")


_U16, _U32, _PDA = _uint(16), _uint(32), _uint(5)


@attrs.frozen
class ICReq:
    pfv: int = attrs.field(default=0, validator=_U16)
    hpda: int = attrs.field(default=0, validator=_PDA)
    hdgst: bool = False
    ddgst: bool = False
    maxr2t: int = attrs.field(default=0, validator=_U32)


@attrs.frozen
class ICResp:
    pfv: int = attrs.field(default=0, validator=_U16)
    cpda: int = attrs.field(default=0, validator=_PDA)
    hdgst: bool = False
    ddgst: bool = False
    maxh2cdata: int = attrs.field(default=131072, validator=_U32)


def describe_fes(fes: int, fei: int = 0) -> str:
    """Human text for a termination request's FES/FEI pair (unknown codes are named too)."""
    try:
        text = _FES_TEXT[TermReqFes(fes)]
    except ValueError:
        return f"unknown fatal error status {fes} (FEI 0x{fei:x})"
    if fes == TermReqFes.INVALID_HEADER_FIELD:
        return f"{text} at byte offset {fei}"
    return f"{text} (FEI 0x{fei:x})" if fei else text


@attrs.frozen
class _TermReq:
    fes: int = attrs.field(validator=_U16)
    fei: int = attrs.field(default=0, validator=_U32)
    header: bytes = attrs.field(
        default=b"", converter=_as_bytes, validator=_length(at_most=TERM_REQ_MAX_HEADER)
    )

    def describe(self) -> str:
        return describe_fes(self.fes, self.fei)


@attrs.frozen
class H2CTermReq(_TermReq):
    """The host tells the controller why it is closing the connection."""


@attrs.frozen
class C2HTermReq(_TermReq):
    """The controller tells the host why it is closing the connection."""


@attrs.frozen
class CapsuleCmd:
    sqe: bytes = attrs.field(converter=_as_bytes, validator=_length(exact=SQE_LEN))
    data: bytes = attrs.field(default=b"", converter=_as_bytes)


@attrs.frozen
class CapsuleResp:
    cqe: bytes = attrs.field(converter=_as_bytes, validator=_length(exact=CQE_LEN))


@attrs.frozen
class H2CData:
    cccid: int = attrs.field(validator=_U16)
    ttag: int = attrs.field(validator=_U16)
    datao: int = attrs.field(validator=_U32)
    data: bytes = attrs.field(converter=_as_bytes, validator=_length(nonempty=True))
    last: bool = True


@attrs.frozen
class C2HData:
    cccid: int = attrs.field(validator=_U16)
    datao: int = attrs.field(validator=_U32)
    data: bytes = attrs.field(converter=_as_bytes, validator=_length(nonempty=True))
    last: bool = True
    success: bool = attrs.field(default=False)

    @success.validator
    def _success_needs_last(self, _attr: object, value: bool) -> None:
        if value and not self.last:
            raise ValueError("C2HData SUCCESS requires LAST_PDU")


@attrs.frozen
class R2T:
    cccid: int = attrs.field(validator=_U16)
    ttag: int = attrs.field(validator=_U16)
    r2to: int = attrs.field(validator=_U32)
    r2tl: int = attrs.field(validator=_U32)


Pdu = ICReq | ICResp | H2CTermReq | C2HTermReq | CapsuleCmd | CapsuleResp | H2CData | C2HData | R2T
# Union members are listed in PduType order, so their class names name the types.
_NAMES = {t: cls.__name__ for t, cls in zip(PduType, get_args(Pdu), strict=True)}


def _common(ptype: PduType, flags: int, hlen: int, pdo: int, plen: int) -> bytes:
    if plen > 0xFFFFFFFF:
        raise ValueError(f"PDU too large: PLEN {plen}")
    return struct.pack("<BBBBI", ptype, flags, hlen, pdo, plen)


def _specific(pdu: Pdu) -> tuple[PduType, int, bytes, bytes]:
    """(type, extra flags, PDU-specific header bytes after the common header, data)."""
    if isinstance(pdu, CapsuleCmd):
        return PduType.CAPSULE_CMD, 0, pdu.sqe, pdu.data
    if isinstance(pdu, CapsuleResp):
        return PduType.CAPSULE_RESP, 0, pdu.cqe, b""
    if isinstance(pdu, H2CData):
        spec = struct.pack("<HHII4x", pdu.cccid, pdu.ttag, pdu.datao, len(pdu.data))
        return PduType.H2C_DATA, FLAG_LAST_PDU if pdu.last else 0, spec, pdu.data
    if isinstance(pdu, C2HData):
        flags = (FLAG_LAST_PDU if pdu.last else 0) | (FLAG_SUCCESS if pdu.success else 0)
        spec = struct.pack("<H2xII4x", pdu.cccid, pdu.datao, len(pdu.data))
        return PduType.C2H_DATA, flags, spec, pdu.data
    if isinstance(pdu, R2T):
        spec = struct.pack("<HHII4x", pdu.cccid, pdu.ttag, pdu.r2to, pdu.r2tl)
        return PduType.R2T, 0, spec, b""
    raise TypeError(f"not a PDU: {type(pdu).__name__}")


def encode_pdu(pdu: Pdu, *, hdgst: bool = False, ddgst: bool = False, pda: int = 0) -> bytes:
    """Serialise one PDU.

    ``hdgst``/``ddgst`` are the negotiated digests and ``pda`` the receiver's 0's based data
    alignment (its CPDA or HPDA); IC and termination PDUs never carry digests or padding.
    """
    if not 0 <= pda <= 31:
        raise ValueError(f"PDA {pda} out of range 0..31")
    if isinstance(pdu, ICReq | ICResp):
        ptype = PduType.IC_REQ if isinstance(pdu, ICReq) else PduType.IC_RESP
        dgst = (1 if pdu.hdgst else 0) | (2 if pdu.ddgst else 0)
        pda_value = pdu.hpda if isinstance(pdu, ICReq) else pdu.cpda
        limit = pdu.maxr2t if isinstance(pdu, ICReq) else pdu.maxh2cdata
        body = struct.pack("<HBBI112x", pdu.pfv, pda_value, dgst, limit)
        return _common(ptype, 0, IC_PDU_LEN, 0, IC_PDU_LEN) + body
    if isinstance(pdu, _TermReq):
        ptype = PduType.H2C_TERM_REQ if isinstance(pdu, H2CTermReq) else PduType.C2H_TERM_REQ
        plen = TERM_REQ_HLEN + len(pdu.header)
        body = struct.pack("<HI10x", pdu.fes, pdu.fei)
        return _common(ptype, 0, TERM_REQ_HLEN, 0, plen) + body + pdu.header
    ptype, flags, spec, data = _specific(pdu)
    hlen = COMMON_HEADER_LEN + len(spec)
    hd = 4 if hdgst else 0
    dd = 4 if ddgst and data else 0
    flags |= (FLAG_HDGST if hd else 0) | (FLAG_DDGST if dd else 0)
    if data:
        align = (pda + 1) * 4
        pdo = -(-(hlen + hd) // align) * align
        plen = pdo + len(data) + dd
    else:
        pdo = 0
        plen = hlen + hd
    header = _common(ptype, flags, hlen, pdo, plen) + spec
    parts = [header]
    if hd:
        parts.append(struct.pack("<I", crc32c(header)))
    if data:
        parts.append(bytes(pdo - hlen - hd))
        parts.append(data)
        if dd:
            parts.append(struct.pack("<I", crc32c(data)))
    return b"".join(parts)
