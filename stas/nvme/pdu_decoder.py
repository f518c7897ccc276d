"""Stream decoder for NVMe/TCP PDUs: bytes in any chunking in, PDUs out (sans-IO).

Split from pdu.py (which re-exports it) so the PDU types and their encoder stay one module
and the stateful decoder another.
"""

from __future__ import annotations

import struct

import attrs

from stas.nvme.crc32c import crc32c
from stas.nvme.errors import ProtocolError
from stas.nvme.pdu import (
    _DATA_TYPES,
    _HLEN,
    _NAMES,
    _NO_DIGEST_TYPES,
    COMMON_HEADER_LEN,
    CQE_LEN,
    FLAG_DDGST,
    FLAG_HDGST,
    FLAG_LAST_PDU,
    FLAG_SUCCESS,
    IC_PDU_LEN,
    R2T,
    SQE_LEN,
    TERM_REQ_HLEN,
    TERM_REQ_MAX_HEADER,
    C2HData,
    C2HTermReq,
    CapsuleCmd,
    CapsuleResp,
    H2CData,
    H2CTermReq,
    ICReq,
    ICResp,
    Pdu,
    PduType,
)


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
