"""Host and controller NVMe/TCP state machines, talking to each other in memory."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stas.nvme.connection import (
    CommandReceived,
    Completion,
    ConnectionStateError,
    ControllerConnection,
    Established,
    HostConnection,
    Terminated,
)
from stas.nvme.errors import ProtocolError
from stas.nvme.pdu import (
    R2T,
    C2HData,
    C2HTermReq,
    CapsuleCmd,
    CapsuleResp,
    H2CTermReq,
    ICReq,
    ICResp,
    encode_pdu,
)
from stas.nvme.pdu_decoder import PduDecoder

IDENTIFY = bytes([0x06]) + bytes(63)
CONNECT = bytes([0x7F, 0x00, 0xAA, 0xBB, 0x01]) + bytes(59)
CQE_OK = bytes(16)


def _pair(
    hdgst: bool = False, ddgst: bool = False, *, allow_h: bool = True, allow_d: bool = True
) -> tuple[HostConnection, ControllerConnection]:
    host = HostConnection(hdgst=hdgst, ddgst=ddgst)
    ctrl = ControllerConnection()
    assert ctrl.receive(host.start()) == [Established(ICReq(hdgst=hdgst, ddgst=ddgst))]
    events = host.receive(ctrl.accept(hdgst=allow_h, ddgst=allow_d))
    assert events == [Established(ICResp(hdgst=hdgst and allow_h, ddgst=ddgst and allow_d))]
    assert host.established and ctrl.established
    return host, ctrl


def _feed_in_pieces(host: HostConnection, wire: bytes, size: int) -> list[object]:
    events: list[object] = []
    for start in range(0, len(wire), size):
        events += host.receive(wire[start : start + size])
    return events


DIGESTS = [(False, False), (True, False), (False, True), (True, True)]


@pytest.mark.parametrize(("hdgst", "ddgst"), DIGESTS)
def test_read_command_split_across_c2h_data(hdgst: bool, ddgst: bool) -> None:
    host, ctrl = _pair(hdgst, ddgst)
    cid, wire = host.send_command(IDENTIFY, read_len=10240)
    assert host.outstanding == frozenset({cid})
    [received] = ctrl.receive(wire)
    assert isinstance(received, CommandReceived)
    assert received.cid == cid and received.data == b""
    sqe = received.sqe
    assert sqe[0] == 0x06 and sqe[1] == 0x40
    assert int.from_bytes(sqe[2:4], "little") == cid
    assert struct.unpack_from("<QI3xB", sqe, 24) == (0, 10240, 0x5A)

    payload = bytes(i % 251 for i in range(10240))
    out = ctrl.complete(cid, bytes(range(16)), payload, chunk=4096)
    decoder = PduDecoder()
    decoder.set_digests(hdgst, ddgst)
    pdus = decoder.feed(out)
    assert [(p.datao, len(p.data), p.last) for p in pdus[:3]] == [  # type: ignore[union-attr]
        (0, 4096, False),
        (4096, 4096, False),
        (8192, 2048, True),
    ]
    assert isinstance(pdus[3], CapsuleResp)
    assert out[1] & 0x01 == (1 if hdgst else 0)
    assert out[1] & 0x02 == (2 if ddgst else 0)

    cqe = bytes(range(12)) + cid.to_bytes(2, "little") + bytes([14, 15])
    assert _feed_in_pieces(host, out, 7) == [Completion(cid, cqe, payload)]
    assert host.outstanding == frozenset()
    assert ctrl.outstanding == frozenset()


@pytest.mark.parametrize(("hdgst", "ddgst"), DIGESTS)
def test_in_capsule_data_command(hdgst: bool, ddgst: bool) -> None:
    host, ctrl = _pair(hdgst, ddgst)
    data = bytes(range(256)) * 4
    cid, wire = host.send_command(CONNECT, data=data)
    assert wire[1] & 0x02 == (2 if ddgst else 0)
    [received] = ctrl.receive(wire)
    assert received == CommandReceived(cid, received.sqe, data)  # type: ignore[union-attr]
    sqe = received.sqe  # type: ignore[union-attr]
    assert sqe[4] == 0x01  # FCTYPE untouched
    assert struct.unpack_from("<QI3xB", sqe, 24) == (0, 1024, 0x01)
    events = host.receive(ctrl.complete(cid, CQE_OK))
    assert events == [Completion(cid, bytes(12) + struct.pack("<HH", cid, 0), b"")]


def test_digest_negotiation_is_requested_and_allowed() -> None:
    host, ctrl = _pair(True, True, allow_h=False, allow_d=True)
    assert host.params == ICResp(hdgst=False, ddgst=True)
    _cid, wire = host.send_command(CONNECT, data=b"x" * 8)
    assert wire[1] == 0x02  # data digest only
    assert len(ctrl.receive(wire)) == 1


def test_cpda_pads_in_capsule_data() -> None:
    host = HostConnection()
    ctrl = ControllerConnection()
    ctrl.receive(host.start())
    host.receive(ctrl.accept(hdgst=False, ddgst=False, cpda=7))  # 32-byte alignment
    _cid, wire = host.send_command(CONNECT, data=b"abc")
    assert wire[3] == 96  # HLEN 72 rounded up to 32 bytes
    [received] = ctrl.receive(wire)
    assert received.data == b"abc"  # type: ignore[union-attr]


def test_hpda_pads_c2h_data() -> None:
    host = HostConnection()
    ctrl = ControllerConnection()
    icreq = bytearray(host.start())
    icreq[10] = 3  # host asks for 16-byte alignment
    ctrl.receive(bytes(icreq))
    host.receive(ctrl.accept(hdgst=False, ddgst=False))
    cid, wire = host.send_command(IDENTIFY, read_len=10)
    ctrl.receive(wire)
    out = ctrl.complete(cid, CQE_OK, b"0123456789")
    assert out[3] == 32
    assert host.receive(out)[0].data == b"0123456789"  # type: ignore[union-attr]


def test_success_flag_completes_without_capsule_resp() -> None:
    host, ctrl = _pair()
    cid, wire = host.send_command(IDENTIFY, read_len=4096)
    ctrl.receive(wire)
    out = ctrl.complete(cid, CQE_OK, b"\x01" * 4096, chunk=1000, success=True)
    decoder = PduDecoder()
    decoder.set_digests(False, False)
    pdus = decoder.feed(out)
    assert len(pdus) == 5 and all(isinstance(p, C2HData) for p in pdus)
    assert pdus[-1].success and not pdus[0].success  # type: ignore[union-attr]
    cqe = bytes(12) + struct.pack("<HH", cid, 0)
    assert host.receive(out) == [Completion(cid, cqe, b"\x01" * 4096)]


def test_icresp_and_following_pdu_in_one_chunk_use_new_digests() -> None:
    host = HostConnection(hdgst=True)
    ctrl = ControllerConnection()
    ctrl.receive(host.start())
    both = ctrl.accept(hdgst=True, ddgst=False) + ctrl.terminate(2, 0)
    events = host.receive(both)
    assert events[0] == Established(ICResp(hdgst=True))
    assert events[1] == Terminated(2, 0, "PDU sequence error")
    assert host.closed


def test_command_sent_before_icresp_waits_for_accept() -> None:
    host = HostConnection()
    ctrl = ControllerConnection()
    early = encode_pdu(CapsuleCmd(IDENTIFY))
    assert ctrl.receive(host.start() + early) == [Established(ICReq())]
    ctrl.accept(hdgst=False, ddgst=False)
    assert ctrl.receive(b"") == [CommandReceived(0, IDENTIFY, b"")]


# --- CIDs ----------------------------------------------------------------------------------------


def test_cid_allocation_sequential_and_wraps_skipping_outstanding() -> None:
    host, _ctrl = _pair()
    cids = [host.send_command(IDENTIFY)[0] for _ in range(1 << 16)]
    assert cids == list(range(1 << 16))
    with pytest.raises(ConnectionStateError, match="all 65536 command identifiers"):
        host.send_command(IDENTIFY)
    for cid in (3, 1):
        cqe = bytes(12) + struct.pack("<HH", cid, 0)
        assert host.receive(encode_pdu(CapsuleResp(cqe))) == [Completion(cid, cqe, b"")]
    assert host.send_command(IDENTIFY)[0] == 1
    assert host.send_command(IDENTIFY)[0] == 3
    assert len(host.outstanding) == 1 << 16


# --- host errors ---------------------------------------------------------------------------------


def _started_host(**kwargs: bool) -> HostConnection:
    host = HostConnection(**kwargs)
    host.start()
    return host


@pytest.mark.parametrize(
    ("first", "message"),
    [
        (encode_pdu(CapsuleResp(CQE_OK)), "expected ICResp, got CapsuleResp"),
        (encode_pdu(ICResp(pfv=1)), "ICResp PFV 1 unsupported"),
        (encode_pdu(ICResp(maxh2cdata=1024)), "MAXH2CDATA 1024 below 4096"),
        (encode_pdu(ICResp(hdgst=True)), "enables a header digest that was not requested"),
        (encode_pdu(ICResp(ddgst=True)), "enables a data digest that was not requested"),
    ],
)
def test_host_rejects_bad_icresp(first: bytes, message: str) -> None:
    host = _started_host()
    with pytest.raises(ProtocolError, match=message):
        host.receive(first)
    assert host.closed
    with pytest.raises(ProtocolError, match="already failed"):
        host.receive(b"")
    assert encode_pdu(H2CTermReq(6)) == host.terminate(6)


def test_host_reports_termreq_instead_of_icresp() -> None:
    host = _started_host()
    events = host.receive(encode_pdu(C2HTermReq(6, 12, b"x")))
    assert events == [Terminated(6, 12, "unsupported parameter (FEI 0xc)")]
    with pytest.raises(ConnectionStateError, match="closed"):
        host.receive(b"")
    with pytest.raises(ConnectionStateError, match="cannot send a command: connection is closed"):
        host.send_command(IDENTIFY)


def _host_with_read(read_len: int = 100) -> tuple[HostConnection, int]:
    host, _ctrl = _pair()
    cid, _wire = host.send_command(IDENTIFY, read_len=read_len)
    return host, cid


@pytest.mark.parametrize(
    ("pdus", "message"),
    [
        ([C2HData(99, 0, b"a")], "C2HData for unknown CID 99"),
        ([C2HData(0, 4, b"a")], "C2HData DATAO 4 for CID 0, expected 0"),
        ([C2HData(0, 0, b"a" * 101)], "exceeds the 100 bytes expected"),
        ([C2HData(0, 0, b"a"), C2HData(0, 1, b"b")], "after its LAST_PDU"),
        ([CapsuleResp(bytes(12) + b"\x07\x00\x00\x00")], "CapsuleResp for unknown CID 7"),
        ([R2T(0, 0, 0, 10)], "unexpected R2T from the controller"),
        ([ICResp()], "unexpected ICResp"),
    ],
)
def test_host_rejects_bad_data_phase(pdus: list[object], message: str) -> None:
    host, _cid = _host_with_read()
    with pytest.raises(ProtocolError, match=message):
        host.receive(b"".join(encode_pdu(p) for p in pdus))  # type: ignore[arg-type]


def test_host_state_errors() -> None:
    host = HostConnection()
    with pytest.raises(ConnectionStateError, match="cannot send a command: connection is idle"):
        host.send_command(IDENTIFY)
    assert isinstance(ConnectionStateError("x"), RuntimeError)
    with pytest.raises(ProtocolError, match="before the ICReq"):
        HostConnection().receive(b"\x01")
    host.start()
    with pytest.raises(ConnectionStateError, match="start"):
        host.start()
    with pytest.raises(ConnectionStateError, match="IC exchange in progress"):
        host.send_command(IDENTIFY)


def test_send_command_argument_checks() -> None:
    host, _ctrl = _pair()
    with pytest.raises(ValueError, match="exceeds 8192"):
        host.send_command(CONNECT, data=bytes(8193))
    with pytest.raises(ValueError, match="SQE must be 64 bytes"):
        host.send_command(b"short")
    with pytest.raises(ValueError, match="read_len -1 out of range"):
        host.send_command(IDENTIFY, read_len=-1)
    with pytest.raises(ValueError, match="both send and receive"):
        host.send_command(CONNECT, data=b"x", read_len=4)
    assert host.outstanding == frozenset()
    cid, wire = host.send_command(CONNECT, data=bytes(8192))
    assert len(wire) == 72 + 8192 and cid == 0


def test_host_terminate_closes() -> None:
    host, ctrl = _pair()
    wire = host.terminate(4, 8)
    assert wire == encode_pdu(H2CTermReq(4, 8))
    assert host.closed
    with pytest.raises(ConnectionStateError):
        host.send_command(IDENTIFY)
    with pytest.raises(ConnectionStateError):
        host.terminate(4)
    assert ctrl.receive(wire) == [Terminated(4, 8, "data transfer out of range (FEI 0x8)")]
    assert ctrl.closed


# --- controller errors ---------------------------------------------------------------------------


def _accepted_ctrl() -> ControllerConnection:
    ctrl = ControllerConnection()
    ctrl.receive(encode_pdu(ICReq()))
    ctrl.accept(hdgst=False, ddgst=False)
    return ctrl


def _sqe(cid: int, length: int, sgl_type: int) -> bytes:
    sqe = bytearray(CONNECT)
    sqe[2:4] = cid.to_bytes(2, "little")
    sqe[24:40] = struct.pack("<QI3xB", 0, length, sgl_type)
    return bytes(sqe)


def test_controller_command_checks() -> None:
    ctrl = _accepted_ctrl()
    with pytest.raises(ProtocolError, match="SGL type is 0x5a"):
        ctrl.receive(encode_pdu(CapsuleCmd(_sqe(1, 4, 0x5A), b"abcd")))
    ctrl = _accepted_ctrl()
    with pytest.raises(ProtocolError, match="SGL length 8 but 4 in-capsule bytes"):
        ctrl.receive(encode_pdu(CapsuleCmd(_sqe(1, 8, 0x01), b"abcd")))
    ctrl = _accepted_ctrl()
    ok = encode_pdu(CapsuleCmd(_sqe(1, 4, 0x01), b"abcd"))
    assert ctrl.receive(ok) == [CommandReceived(1, _sqe(1, 4, 0x01), b"abcd")]
    with pytest.raises(ProtocolError, match="reuses outstanding CID 1"):
        ctrl.receive(ok)


def test_controller_state_errors() -> None:
    ctrl = ControllerConnection()
    with pytest.raises(ConnectionStateError, match="cannot accept"):
        ctrl.accept(hdgst=False, ddgst=False)
    with pytest.raises(ProtocolError, match="expected ICReq, got CapsuleCmd"):
        ctrl.receive(encode_pdu(CapsuleCmd(IDENTIFY)))
    assert ctrl.terminate(2) == encode_pdu(C2HTermReq(2))
    ctrl = ControllerConnection()
    ctrl.receive(encode_pdu(ICReq()))
    with pytest.raises(ValueError, match="maxh2cdata 512 below 4096"):
        ctrl.accept(hdgst=False, ddgst=False, maxh2cdata=512)
    ctrl = ControllerConnection()
    with pytest.raises(ProtocolError, match="ICReq PFV 3 unsupported"):
        ctrl.receive(encode_pdu(ICReq(pfv=3)))
    ctrl = _accepted_ctrl()
    with pytest.raises(ValueError, match="CID 5 is not an outstanding command"):
        ctrl.complete(5, CQE_OK)
    with pytest.raises(ProtocolError, match="unexpected ICReq from the host"):
        ctrl.receive(encode_pdu(ICReq()))


def test_controller_complete_argument_checks() -> None:
    ctrl = _accepted_ctrl()
    ctrl.receive(encode_pdu(CapsuleCmd(_sqe(2, 0, 0x5A))))
    with pytest.raises(ValueError, match="CQE must be 16"):
        ctrl.complete(2, b"x")
    with pytest.raises(ValueError, match="chunk must be positive"):
        ctrl.complete(2, CQE_OK, b"abc", chunk=0)
    with pytest.raises(ValueError, match="SUCCESS completion needs data"):
        ctrl.complete(2, CQE_OK, success=True)
    assert ctrl.outstanding == frozenset({2})


# --- fuzz ----------------------------------------------------------------------------------------


@given(st.binary(max_size=300), st.booleans())
def test_host_arbitrary_bytes_give_events_or_protocol_error(data: bytes, digests: bool) -> None:
    host, _ctrl = _pair(digests, digests)
    host.send_command(IDENTIFY, read_len=64)
    try:
        events = host.receive(data)
    except ProtocolError as exc:
        assert str(exc) and host.closed
    else:
        assert all(isinstance(e, Completion | Terminated) for e in events)


@given(st.binary(max_size=300))
def test_controller_arbitrary_bytes_give_events_or_protocol_error(data: bytes) -> None:
    ctrl = _accepted_ctrl()
    try:
        events = ctrl.receive(data)
    except ProtocolError as exc:
        assert str(exc) and ctrl.closed
    else:
        assert all(isinstance(e, CommandReceived | Terminated) for e in events)
