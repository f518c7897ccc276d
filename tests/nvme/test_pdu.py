"""NVMe/TCP PDU encoding (exact bytes, section 2.7) and the incremental decoder."""

from __future__ import annotations

import os
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stas.nvme.crc32c import crc32c
from stas.nvme.errors import ProtocolError
from stas.nvme.pdu import (
    R2T,
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
    TermReqFes,
    describe_fes,
    encode_pdu,
)
from stas.nvme.pdu_decoder import PduDecoder

SQE = bytes(range(64))
CQE = bytes(range(100, 116))


def _decode_all(wire: bytes, *, hdgst: bool = False, ddgst: bool = False) -> list[Pdu]:
    decoder = PduDecoder()
    decoder.set_digests(hdgst, ddgst)
    pdus = decoder.feed(wire)
    assert decoder.buffered == 0
    return pdus


# --- exact bytes -------------------------------------------------------------------------------


def test_pdu_type_values() -> None:
    assert [int(t) for t in PduType] == [0, 1, 2, 3, 4, 5, 6, 7, 9]


def test_icreq_bytes() -> None:
    wire = encode_pdu(ICReq(pfv=0, hpda=2, hdgst=True, ddgst=True, maxr2t=0x01020304))
    assert len(wire) == 128
    assert wire[:8] == bytes([0x00, 0x00, 128, 0x00]) + struct.pack("<I", 128)
    assert wire[8:10] == b"\x00\x00"  # PFV
    assert wire[10] == 2  # HPDA
    assert wire[11] == 0x03  # DGST: header bit0, data bit1
    assert wire[12:16] == bytes([4, 3, 2, 1])  # MAXR2T
    assert wire[16:] == bytes(112)


def test_icresp_bytes_and_never_digested() -> None:
    pdu = ICResp(cpda=1, hdgst=True, ddgst=False, maxh2cdata=131072)
    wire = encode_pdu(pdu, hdgst=True, ddgst=True, pda=5)
    assert len(wire) == 128
    assert wire[:4] == bytes([0x01, 0x00, 128, 0x00])
    assert wire[10:12] == bytes([1, 0x01])
    assert struct.unpack_from("<I", wire, 12)[0] == 131072


def test_termreq_bytes() -> None:
    wire = encode_pdu(C2HTermReq(fes=2, fei=0x11223344, header=b"ABCD"), hdgst=True)
    assert wire[:8] == bytes([0x03, 0x00, 24, 0x00]) + struct.pack("<I", 28)
    assert wire[8:10] == b"\x02\x00"
    assert wire[10:14] == bytes([0x44, 0x33, 0x22, 0x11])
    assert wire[14:24] == bytes(10)
    assert wire[24:] == b"ABCD"
    assert encode_pdu(H2CTermReq(fes=1))[:8] == bytes([0x02, 0, 24, 0, 24, 0, 0, 0])


def test_capsule_cmd_without_data_bytes() -> None:
    wire = encode_pdu(CapsuleCmd(SQE), ddgst=True)
    assert wire == bytes([0x04, 0x00, 72, 0x00, 72, 0, 0, 0]) + SQE


def test_capsule_cmd_with_data_and_digests() -> None:
    wire = encode_pdu(CapsuleCmd(SQE, b"DATA"), hdgst=True, ddgst=True)
    # HLEN 72, HDGST 4 -> PDO 76, 4 data bytes, DDGST 4 -> PLEN 84
    assert wire[:8] == bytes([0x04, 0x03, 72, 76]) + struct.pack("<I", 84)
    assert wire[8:72] == SQE
    assert struct.unpack_from("<I", wire, 72)[0] == crc32c(wire[:72])
    assert wire[76:80] == b"DATA"
    assert struct.unpack_from("<I", wire, 80)[0] == crc32c(b"DATA")
    assert len(wire) == 84


def test_capsule_resp_bytes_with_header_digest() -> None:
    wire = encode_pdu(CapsuleResp(CQE), hdgst=True, ddgst=True)
    assert wire[:8] == bytes([0x05, 0x01, 24, 0x00, 28, 0, 0, 0])
    assert wire[8:24] == CQE
    assert wire[24:] == struct.pack("<I", crc32c(wire[:24]))


def test_h2c_data_bytes() -> None:
    wire = encode_pdu(H2CData(cccid=0x0102, ttag=0x0304, datao=0x10, data=b"xyz", last=True))
    assert wire[:8] == bytes([0x06, 0x04, 24, 24]) + struct.pack("<I", 27)
    assert wire[8:24] == struct.pack("<HHII", 0x0102, 0x0304, 0x10, 3) + bytes(4)
    assert wire[24:] == b"xyz"


def test_c2h_data_bytes_with_padding() -> None:
    pdu = C2HData(cccid=7, datao=4096, data=b"\xaa" * 5, last=True, success=True)
    wire = encode_pdu(pdu, pda=3)  # 16-byte alignment: 24 -> PDO 32
    assert wire[:8] == bytes([0x07, 0x0C, 24, 32]) + struct.pack("<I", 37)
    assert wire[8:10] == b"\x07\x00"
    assert wire[10:12] == b"\x00\x00"
    assert struct.unpack_from("<II", wire, 12) == (4096, 5)
    assert wire[24:32] == bytes(8)
    assert wire[32:] == b"\xaa" * 5
    not_last = encode_pdu(C2HData(7, 0, b"a", last=False))
    assert not_last[1] == 0x00


def test_r2t_bytes_never_data_digest() -> None:
    wire = encode_pdu(R2T(cccid=1, ttag=2, r2to=3, r2tl=4), ddgst=True)
    assert wire == bytes([0x09, 0x00, 24, 0x00, 24, 0, 0, 0]) + struct.pack("<HHII4x", 1, 2, 3, 4)


def test_value_validation() -> None:
    with pytest.raises(ValueError, match="sqe must be 64 bytes"):
        CapsuleCmd(b"short")
    with pytest.raises(ValueError, match="cqe must be 16 bytes"):
        CapsuleResp(bytes(15))
    with pytest.raises(ValueError, match="SUCCESS requires LAST_PDU"):
        C2HData(1, 0, b"x", last=False, success=True)
    with pytest.raises(ValueError, match="cccid 65536 out of range"):
        R2T(65536, 0, 0, 0)
    with pytest.raises(ValueError, match="header must be at most 128"):
        H2CTermReq(1, 0, bytes(129))
    with pytest.raises(ValueError, match="data must not be empty"):
        H2CData(1, 0, 0, b"")
    with pytest.raises(TypeError):
        CapsuleCmd(SQE, 5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not a PDU: str"):
        encode_pdu("nope")  # type: ignore[arg-type]
    assert CapsuleCmd(bytearray(SQE), memoryview(b"ab")) == CapsuleCmd(SQE, b"ab")
    with pytest.raises(ValueError, match="PDA 32"):
        encode_pdu(CapsuleResp(CQE), pda=32)


def test_describe() -> None:
    assert TermReqFes(3) is TermReqFes.HEADER_DIGEST_ERROR
    assert C2HTermReq(fes=1, fei=10).describe() == "invalid PDU header field at byte offset 10"
    assert H2CTermReq(fes=2).describe() == "PDU sequence error"
    assert describe_fes(5, 7) == "R2T / data transfer limit exceeded (FEI 0x7)"
    assert describe_fes(99) == "unknown fatal error status 99 (FEI 0x0)"


# --- decoder behaviour -------------------------------------------------------------------------


def test_decoder_pauses_after_ic_until_digests_set() -> None:
    follow = encode_pdu(CapsuleResp(CQE), hdgst=True)
    decoder = PduDecoder()
    assert decoder.feed(encode_pdu(ICResp(hdgst=True)) + follow) == [ICResp(hdgst=True)]
    assert decoder.awaiting_digests
    assert decoder.buffered == len(follow)
    assert decoder.feed(b"") == []
    decoder.set_digests(True, False)
    assert decoder.feed(b"") == [CapsuleResp(CQE)]
    assert decoder.buffered == 0


def test_decoder_limits_bytes_while_paused() -> None:
    decoder = PduDecoder(max_pdu_size=200)
    with pytest.raises(ProtocolError, match="before the IC exchange completed"):
        decoder.feed(encode_pdu(ICReq()) + bytes(201))


def test_header_digest_mismatch_named() -> None:
    wire = bytearray(encode_pdu(CapsuleResp(CQE), hdgst=True))
    wire[10] ^= 0xFF
    with pytest.raises(ProtocolError, match="header digest mismatch in CapsuleResp"):
        _decode_all(bytes(wire), hdgst=True)


def test_data_digest_mismatch_named() -> None:
    wire = bytearray(encode_pdu(C2HData(1, 0, b"payload"), ddgst=True))
    wire[26] ^= 0x01
    with pytest.raises(ProtocolError, match="data digest mismatch in C2HData"):
        _decode_all(bytes(wire), ddgst=True)


def _header(ptype: int, flags: int, hlen: int, pdo: int, plen: int) -> bytes:
    return struct.pack("<BBBBI", ptype, flags, hlen, pdo, plen)


@pytest.mark.parametrize(
    ("head", "message"),
    [
        (_header(8, 0, 24, 0, 24), "unknown PDU type 0x08"),
        (_header(0xFF, 0, 24, 0, 24), "unknown PDU type 0xff"),
        (_header(5, 0, 30, 0, 30), "HLEN 30 wrong for CapsuleResp"),
        (_header(7, 0, 24, 24, 10), "PLEN 10 of C2HData is smaller than HLEN 24"),
        (_header(7, 0, 24, 24, 1 << 24), "exceeds the maximum PDU size"),
        (_header(0, 0, 128, 0, 132), "PLEN 132 wrong for ICReq"),
        (_header(3, 0, 24, 0, 153), "PLEN 153 of C2HTermReq outside 24..152"),
        (_header(0, 1, 128, 0, 128), "digest flag set in ICReq"),
        (_header(5, 1, 24, 0, 28), "HDGSTF set in CapsuleResp, header digest not negotiated"),
        (_header(7, 2, 24, 24, 30), "DDGSTF set in C2HData but data digest not negotiated"),
        (_header(5, 0, 24, 0, 28), "PLEN 28 wrong for CapsuleResp"),
        (_header(7, 0, 24, 24, 24), "C2HData carries no data"),
        (_header(7, 8, 24, 24, 30), "SUCCESS without LAST_PDU"),
        (_header(7, 0, 24, 0, 30), "PDO 0 inconsistent for C2HData"),
        (_header(7, 0, 24, 26, 30), "PDO 26 inconsistent"),
        (_header(7, 0, 24, 32, 30), "PDO 32 inconsistent"),
        (_header(4, 0, 72, 200, 300), "PDO 200 inconsistent"),
    ],
)
def test_header_errors_detected_from_eight_bytes(head: bytes, message: str) -> None:
    decoder = PduDecoder()
    decoder.set_digests(False, False)
    with pytest.raises(ProtocolError, match=message):
        decoder.feed(head)


def test_digest_flags_missing_when_negotiated() -> None:
    decoder = PduDecoder()
    decoder.set_digests(True, True)
    with pytest.raises(ProtocolError, match="HDGSTF missing in CapsuleResp"):
        decoder.feed(encode_pdu(CapsuleResp(CQE)))
    decoder = PduDecoder()
    decoder.set_digests(False, True)
    with pytest.raises(ProtocolError, match="DDGSTF missing in H2CData"):
        decoder.feed(encode_pdu(H2CData(1, 1, 0, b"abc")))
    decoder = PduDecoder()
    decoder.set_digests(False, True)
    with pytest.raises(ProtocolError, match="DDGSTF set in CapsuleCmd but PDU has no data"):
        decoder.feed(_header(4, 2, 72, 0, 72))


def test_body_errors() -> None:
    wire = bytearray(encode_pdu(H2CData(1, 2, 0, b"abcd")))
    wire[16] = 9  # DATAL
    with pytest.raises(ProtocolError, match="DATAL 9 of H2CData does not match its 4 bytes"):
        _decode_all(bytes(wire))
    wire = bytearray(encode_pdu(ICResp()))
    wire[10] = 40
    with pytest.raises(ProtocolError, match="CPDA 40 in ICResp out of range"):
        PduDecoder().feed(bytes(wire))


def test_decoder_is_dead_after_error() -> None:
    decoder = PduDecoder()
    decoder.set_digests(False, False)
    with pytest.raises(ProtocolError):
        decoder.feed(_header(8, 0, 24, 0, 24))
    assert decoder.buffered == 0
    with pytest.raises(ProtocolError, match="decoder failed earlier: unknown PDU type"):
        decoder.feed(encode_pdu(CapsuleResp(CQE)))


def test_termreq_ignores_reserved_pdo() -> None:
    wire = bytearray(encode_pdu(H2CTermReq(6, 0, b"hdr")))
    wire[3] = 99
    assert _decode_all(bytes(wire)) == [H2CTermReq(6, 0, b"hdr")]


def test_capsule_without_data_ignores_reserved_pdo() -> None:
    wire = bytearray(encode_pdu(CapsuleCmd(SQE)))
    wire[3] = 72
    assert _decode_all(bytes(wire)) == [CapsuleCmd(SQE)]


def test_large_stream_in_small_chunks() -> None:
    payload = os.urandom(1 << 20)
    decoder = PduDecoder(max_pdu_size=(1 << 20) + 64)
    decoder.set_digests(True, True)
    wire = encode_pdu(C2HData(3, 0, payload), hdgst=True, ddgst=True)
    got: list[Pdu] = []
    for start in range(0, len(wire), 1024):
        got += decoder.feed(wire[start : start + 1024])
        assert decoder.buffered == (start + len(wire[start : start + 1024])) % len(wire)
    assert got == [C2HData(3, 0, payload)]


def test_max_pdu_size_must_fit_ic() -> None:
    with pytest.raises(ValueError, match="cannot hold"):
        PduDecoder(max_pdu_size=100)


# --- properties --------------------------------------------------------------------------------

_U16 = st.integers(0, 0xFFFF)
_U32 = st.integers(0, 0xFFFFFFFF)
_DATA = st.binary(min_size=1, max_size=300)


@st.composite
def _c2h(draw: st.DrawFn) -> C2HData:
    last = draw(st.booleans())
    success = last and draw(st.booleans())
    return C2HData(draw(_U16), draw(_U32), draw(_DATA), last, success)


DIGESTED_PDUS = st.one_of(
    st.builds(CapsuleCmd, st.binary(min_size=64, max_size=64), st.binary(max_size=300)),
    st.builds(CapsuleResp, st.binary(min_size=16, max_size=16)),
    st.builds(H2CData, _U16, _U16, _U32, _DATA, st.booleans()),
    _c2h(),
    st.builds(R2T, _U16, _U16, _U32, _U32),
    st.builds(H2CTermReq, _U16, _U32, st.binary(max_size=128)),
    st.builds(C2HTermReq, _U16, _U32, st.binary(max_size=128)),
)
IC_PDUS = st.one_of(
    st.builds(ICReq, _U16, st.integers(0, 31), st.booleans(), st.booleans(), _U32),
    st.builds(ICResp, _U16, st.integers(0, 31), st.booleans(), st.booleans(), _U32),
)


@given(IC_PDUS)
def test_ic_round_trip(pdu: ICReq | ICResp) -> None:
    assert PduDecoder().feed(encode_pdu(pdu)) == [pdu]


@given(
    st.lists(DIGESTED_PDUS, max_size=8),
    st.booleans(),
    st.booleans(),
    st.integers(0, 31),
    st.lists(st.integers(0, 5000), max_size=12),
)
@settings(max_examples=150)
def test_chunked_stream_round_trip(
    pdus: list[Pdu], hdgst: bool, ddgst: bool, pda: int, cuts: list[int]
) -> None:
    wire = b"".join(encode_pdu(p, hdgst=hdgst, ddgst=ddgst, pda=pda) for p in pdus)
    decoder = PduDecoder()
    decoder.set_digests(hdgst, ddgst)
    got: list[Pdu] = []
    last = 0
    for cut in [*sorted({c % (len(wire) + 1) for c in cuts}), len(wire)]:
        got += decoder.feed(wire[last:cut])
        last = cut
    assert got == pdus
    assert decoder.buffered == 0


@given(st.binary(max_size=400), st.booleans(), st.booleans(), st.integers(1, 64))
def test_arbitrary_bytes_give_pdus_or_protocol_error(
    data: bytes, hdgst: bool, ddgst: bool, step: int
) -> None:
    decoder = PduDecoder(max_pdu_size=512)
    decoder.set_digests(hdgst, ddgst)
    try:
        for start in range(0, len(data), step):
            for pdu in decoder.feed(data[start : start + step]):
                assert encode_pdu(pdu, hdgst=hdgst, ddgst=ddgst)  # decoded values re-encode
    except ProtocolError as exc:
        assert str(exc)


@given(
    st.lists(DIGESTED_PDUS, min_size=1, max_size=4),
    st.booleans(),
    st.booleans(),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(1, 255)), min_size=1, max_size=4),
)
def test_corrupted_streams_give_pdus_or_protocol_error(
    pdus: list[Pdu], hdgst: bool, ddgst: bool, flips: list[tuple[int, int]]
) -> None:
    wire = bytearray(b"".join(encode_pdu(p, hdgst=hdgst, ddgst=ddgst) for p in pdus))
    for where, mask in flips:
        wire[where % len(wire)] ^= mask
    decoder = PduDecoder()
    decoder.set_digests(hdgst, ddgst)
    try:
        got = decoder.feed(bytes(wire))
    except ProtocolError as exc:
        assert str(exc)
    else:
        assert all(isinstance(p, Pdu) for p in got)  # type: ignore[arg-type]
