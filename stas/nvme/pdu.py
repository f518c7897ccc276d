"""NVMe/TCP PDUs: value classes, an encoder and an incremental, validating decoder.

Sans-IO in the style of h11: bytes in, values out, no sockets. The decoder treats every byte
as untrusted: the 8-byte common header is checked (type, HLEN, PLEN bounds, PDO, digest
flags) *before* any body is buffered, so a hostile peer cannot make us wait for or allocate a
huge PDU. Layouts follow peers-and-specs.md section 2.7.
"""

from __future__ import annotations

import struct
from enum import IntEnum
from typing import Any, get_args

import attrs

from stas.nvme.crc32c import crc32c
from stas.nvme.errors import ProtocolError


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


def _uint(bits: int) -> Any:
    top = (1 << bits) - 1

    def check(_inst: object, attr: attrs.Attribute, value: object) -> None:  # type: ignore[type-arg]
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= top:
            raise ValueError(f"{attr.name} {value!r} out of range 0..{top}")

    return check


def _length(*, exact: int | None = None, at_most: int | None = None, nonempty: bool = False):  # type: ignore[no-untyped-def]
    def check(_inst: object, attr: attrs.Attribute, value: bytes) -> None:  # type: ignore[type-arg]
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


@attrs.frozen
class _Header:
    """A validated common header: where the data is and which digests are present."""

    ptype: PduType
    flags: int
    hlen: int
    pdo: int
    plen: int
    hd: int
    dd: int


class PduDecoder:
    """Turn a byte stream, cut anywhere, into PDUs; raise ProtocolError on the first bad one.

    Digests change how later PDUs are framed, so after the first ICReq/ICResp the decoder
    pauses (keeps the following bytes buffered) until ``set_digests`` says what was
    negotiated; the next ``feed`` (``b""`` is fine) continues. After a ProtocolError the
    decoder is dead: the stream position is lost, so every later ``feed`` raises again.
    """

    def __init__(self, *, max_pdu_size: int = 1 << 20) -> None:
        if max_pdu_size < IC_PDU_LEN + 24:
            raise ValueError(f"max_pdu_size {max_pdu_size} cannot hold an IC or TermReq PDU")
        self._max = max_pdu_size
        self._buf = bytearray()
        self._hdgst = False
        self._ddgst = False
        self._configured = False
        self._paused = False
        self._error: ProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as PDUs."""
        return len(self._buf)

    @property
    def awaiting_digests(self) -> bool:
        """True between the IC PDU and ``set_digests`` (decoding is paused)."""
        return self._paused

    def set_digests(self, hdgst: bool, ddgst: bool) -> None:
        """Apply the negotiated digests to every PDU after the IC exchange."""
        self._hdgst, self._ddgst = hdgst, ddgst
        self._configured = True
        self._paused = False

    def feed(self, data: bytes) -> list[Pdu]:
        if self._error is not None:
            raise ProtocolError(f"decoder failed earlier: {self._error}")
        buf = self._buf
        buf += data
        out: list[Pdu] = []
        pos = 0
        try:
            while not self._paused and len(buf) - pos >= COMMON_HEADER_LEN:
                header = self._check_header(bytes(buf[pos : pos + COMMON_HEADER_LEN]))
                if len(buf) - pos < header.plen:
                    break
                with memoryview(buf) as view:
                    raw = bytes(view[pos : pos + header.plen])
                pos += header.plen
                pdu = self._decode(raw, header)
                out.append(pdu)
                if isinstance(pdu, ICReq | ICResp) and not self._configured:
                    self._paused = True
            if self._paused and len(buf) - pos > self._max:
                raise ProtocolError(
                    f"{len(buf) - pos} bytes received before the IC exchange completed"
                )
        except ProtocolError as exc:
            self._error = exc
            buf.clear()
            raise
        del buf[:pos]
        return out

    def _check_header(self, head: bytes) -> _Header:
        raw_type, flags, hlen, pdo, plen = struct.unpack("<BBBBI", head)
        try:
            ptype = PduType(raw_type)
        except ValueError:
            raise ProtocolError(f"unknown PDU type 0x{raw_type:02x}") from None
        name = _NAMES[ptype]
        if hlen != _HLEN[ptype]:
            raise ProtocolError(f"HLEN {hlen} wrong for {name} (expected {_HLEN[ptype]})")
        if plen < hlen:
            raise ProtocolError(f"PLEN {plen} of {name} is smaller than HLEN {hlen}")
        if plen > self._max:
            raise ProtocolError(f"PLEN {plen} of {name} exceeds the maximum PDU size {self._max}")
        if ptype in _NO_DIGEST_TYPES:
            if ptype in (PduType.IC_REQ, PduType.IC_RESP) and plen != IC_PDU_LEN:
                raise ProtocolError(f"PLEN {plen} wrong for {name} (expected {IC_PDU_LEN})")
            if plen > TERM_REQ_HLEN + TERM_REQ_MAX_HEADER:
                raise ProtocolError(f"PLEN {plen} of {name} outside {TERM_REQ_HLEN}..152")
            if flags & (FLAG_HDGST | FLAG_DDGST):
                raise ProtocolError(f"flags inconsistent: digest flag set in {name}")
            return _Header(ptype, flags, hlen, hlen, plen, 0, 0)
        return self._check_digest_header(ptype, name, flags, hlen, pdo, plen)

    def _check_digest_header(
        self, ptype: PduType, name: str, flags: int, hlen: int, pdo: int, plen: int
    ) -> _Header:
        if bool(flags & FLAG_HDGST) != self._hdgst:
            state = "set" if flags & FLAG_HDGST else "missing"
            neg = "negotiated" if self._hdgst else "not negotiated"
            raise ProtocolError(
                f"flags inconsistent: HDGSTF {state} in {name}, header digest {neg}"
            )
        hd = 4 if self._hdgst else 0
        has_data = plen > hlen + hd
        ddgstf = bool(flags & FLAG_DDGST)
        if ptype not in _DATA_TYPES:
            if plen != hlen + hd:
                raise ProtocolError(f"PLEN {plen} wrong for {name} (expected {hlen + hd})")
        elif ptype is not PduType.CAPSULE_CMD and not has_data:
            raise ProtocolError(f"{name} carries no data (PLEN {plen})")
        if ddgstf and not (self._ddgst and has_data):
            why = "data digest not negotiated" if not self._ddgst else "PDU has no data"
            raise ProtocolError(f"flags inconsistent: DDGSTF set in {name} but {why}")
        if has_data and self._ddgst and not ddgstf:
            raise ProtocolError(f"flags inconsistent: DDGSTF missing in {name}, data digest on")
        if ptype is PduType.C2H_DATA and flags & FLAG_SUCCESS and not flags & FLAG_LAST_PDU:
            raise ProtocolError("flags inconsistent: C2HData SUCCESS without LAST_PDU")
        dd = 4 if ddgstf else 0
        if not has_data:
            return _Header(ptype, flags, hlen, plen, plen, hd, 0)
        pad = pdo - hlen - hd
        if pad < 0 or pad >= 128 or pdo % 4 or pdo + dd >= plen:
            raise ProtocolError(f"PDO {pdo} inconsistent for {name} (HLEN {hlen}, PLEN {plen})")
        return _Header(ptype, flags, hlen, pdo, plen, hd, dd)

    def _decode(self, raw: bytes, h: _Header) -> Pdu:
        name = _NAMES[h.ptype]
        if h.hd:
            _check_digest(raw, 0, h.hlen, f"header digest mismatch in {name}")
        if h.dd:
            _check_digest(raw, h.pdo, h.plen - 4, f"data digest mismatch in {name}")
        data = raw[h.pdo : h.plen - h.dd]
        ptype = h.ptype
        if ptype in (PduType.IC_REQ, PduType.IC_RESP):
            pfv, pda, dgst, limit = struct.unpack_from("<HBBI", raw, 8)
            if pda > 31:
                field = "HPDA" if ptype is PduType.IC_REQ else "CPDA"
                raise ProtocolError(f"{field} {pda} in {name} out of range 0..31")
            cls = ICReq if ptype is PduType.IC_REQ else ICResp
            return cls(pfv, pda, bool(dgst & 1), bool(dgst & 2), limit)
        if ptype in (PduType.H2C_TERM_REQ, PduType.C2H_TERM_REQ):
            fes, fei = struct.unpack_from("<HI", raw, 8)
            term = H2CTermReq if ptype is PduType.H2C_TERM_REQ else C2HTermReq
            return term(fes, fei, raw[TERM_REQ_HLEN:])
        if ptype is PduType.CAPSULE_CMD:
            return CapsuleCmd(raw[8 : 8 + SQE_LEN], data)
        if ptype is PduType.CAPSULE_RESP:
            return CapsuleResp(raw[8 : 8 + CQE_LEN])
        cccid, ttag, offset, length = struct.unpack_from("<HHII", raw, 8)
        if ptype is PduType.R2T:
            return R2T(cccid, ttag, offset, length)
        if length != len(data):
            raise ProtocolError(f"DATAL {length} of {name} does not match its {len(data)} bytes")
        last = bool(h.flags & FLAG_LAST_PDU)
        if ptype is PduType.H2C_DATA:
            return H2CData(cccid, ttag, offset, data, last)
        return C2HData(cccid, offset, data, last, bool(h.flags & FLAG_SUCCESS))


def _check_digest(raw: bytes, start: int, end: int, what: str) -> None:
    with memoryview(raw) as view:
        computed = crc32c(view[start:end])
    (received,) = struct.unpack_from("<I", raw, end)
    if received != computed:
        raise ProtocolError(f"{what}: received 0x{received:08x}, computed 0x{computed:08x}")
