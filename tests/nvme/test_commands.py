"""Byte-exact tests for the NVMe admin / Fabrics command encodings."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stas.nvme import commands as c
from stas.nvme.errors import ProtocolError
from tests.helpers.wire import patched, u16, u32, u64, uint

sqes = st.builds(
    c.Sqe,
    opcode=uint(8),
    flags=uint(8),
    cid=uint(16),
    nsid=uint(32),
    cdw2=uint(32),
    cdw3=uint(32),
    mptr=uint(64),
    dptr=st.binary(min_size=16, max_size=16),
    cdw10=uint(32),
    cdw11=uint(32),
    cdw12=uint(32),
    cdw13=uint(32),
    cdw14=uint(32),
    cdw15=uint(32),
)
cqes = st.builds(
    c.Cqe,
    dw0=uint(32),
    dw1=uint(32),
    sqhd=uint(16),
    sqid=uint(16),
    cid=uint(16),
    status=uint(15),
)
nqns = st.text(alphabet=st.characters(min_codepoint=1, max_codepoint=127), min_size=0, max_size=223)


# --- constants ----------------------------------------------------------------------------


def test_enum_values_match_the_spec() -> None:
    assert [int(x) for x in c.AdminOpcode] == [0x02, 0x06, 0x09, 0x0A, 0x0C, 0x18, 0x21, 0x7F]
    assert [int(x) for x in c.FabricsType] == [0x00, 0x01, 0x04, 0x05, 0x06, 0x08]
    assert (c.FeatureId.ASYNC_EVENT_CONFIG, c.FeatureId.KEEP_ALIVE_TIMER) == (0x0B, 0x0F)
    assert c.AEC_DISCOVERY_LOG_CHANGE == 0x80000000
    assert (c.LogPageId.SUPPORTED_LOG_PAGES, c.LogPageId.DISCOVERY) == (0x00, 0x70)
    assert c.LogPageId.HOST_DISCOVERY == 0x71
    assert (c.LSP_EXTDLPE, c.LSP_PLEO, c.LSP_ALLSUBE) == (1, 2, 4)
    assert (c.DimTas.REGISTER, c.DimTas.DEREGISTER, c.DimTas.UPDATE) == (0, 1, 2)


# --- SQE / CQE ----------------------------------------------------------------------------


def test_sqe_field_offsets() -> None:
    sqe = c.Sqe(
        opcode=0x7F,
        flags=0x40,
        cid=0x1234,
        nsid=0xAABBCC01,
        cdw2=0x22222222,
        cdw3=0x33333333,
        mptr=0x1122334455667788,
        dptr=bytes(range(16)),
        cdw10=0xA0A0A0A0,
        cdw11=0xA1A1A1A1,
        cdw12=0xA2A2A2A2,
        cdw13=0xA3A3A3A3,
        cdw14=0xA4A4A4A4,
        cdw15=0xA5A5A5A5,
    )
    b = sqe.encode()
    assert len(b) == 64
    assert (b[0], b[1], u16(b, 2), u32(b, 4)) == (0x7F, 0x40, 0x1234, 0xAABBCC01)
    assert sqe.fctype == 0x01 == b[4]
    assert (u32(b, 8), u32(b, 12), u64(b, 16)) == (0x22222222, 0x33333333, 0x1122334455667788)
    assert b[24:40] == bytes(range(16))
    assert [u32(b, off) for off in range(40, 64, 4)] == [
        0xA0A0A0A0,
        0xA1A1A1A1,
        0xA2A2A2A2,
        0xA3A3A3A3,
        0xA4A4A4A4,
        0xA5A5A5A5,
    ]
    assert sqe.sgl_address == 0x0706050403020100
    assert sqe.sgl_length == 0x0B0A0908
    assert sqe.sgl_type == 0x0F


def test_sqe_defaults_and_with_cid() -> None:
    sqe = c.Sqe(opcode=0x18)
    assert sqe.encode() == b"\x18" + bytes(63)
    assert sqe.with_cid(7).encode()[2:4] == b"\x07\x00"


@pytest.mark.parametrize(
    ("field", "value"), [("opcode", 256), ("cid", -1), ("cdw10", 1 << 32), ("mptr", 1 << 64)]
)
def test_sqe_rejects_values_that_do_not_fit(field: str, value: int) -> None:
    kwargs = {"opcode": 0, field: value}
    with pytest.raises(ValueError, match=field):
        c.Sqe(**kwargs)


def test_sqe_rejects_short_dptr() -> None:
    with pytest.raises(ValueError, match="dptr must be exactly 16 bytes"):
        c.Sqe(opcode=0, dptr=b"\0" * 15)


@given(sqes)
def test_sqe_round_trip(sqe: c.Sqe) -> None:
    assert c.Sqe.decode(sqe.encode()) == sqe


@given(st.binary(max_size=80))
def test_sqe_decode_arbitrary_bytes(buf: bytes) -> None:
    try:
        sqe = c.Sqe.decode(buf)
    except ProtocolError as exc:
        assert len(buf) != 64
        assert "SQE must be 64 bytes" in str(exc)
    else:
        assert sqe.encode() == buf


def test_cqe_field_offsets_and_status_bits() -> None:
    status = c.make_status(1, 0x82, dnr=True)
    assert status == 0x4182
    cqe = c.Cqe(dw0=0x11223344, dw1=0x55667788, sqhd=3, sqid=0, cid=0xBEEF, status=status)
    b = cqe.encode()
    assert len(b) == 16
    assert (u32(b, 0), u32(b, 4), u16(b, 8), u16(b, 10), u16(b, 12)) == (
        0x11223344,
        0x55667788,
        3,
        0,
        0xBEEF,
    )
    assert u16(b, 14) == 0x4182 << 1  # phase bit 0
    assert (cqe.sc, cqe.sct, cqe.dnr, cqe.ok) == (0x82, 1, True, False)
    assert cqe.status_name == "Connect Invalid Parameters"


def test_cqe_decode_drops_phase_and_reads_crd_more() -> None:
    word = (1 << 15) | (1 << 14) | (0b10 << 12) | (0 << 9) | (0x06 << 1) | 1
    cqe = c.Cqe.decode(bytes(14) + struct.pack("<H", word))
    assert cqe.status == word >> 1
    assert (cqe.sc, cqe.sct, cqe.crd, cqe.more, cqe.dnr) == (0x06, 0, 2, True, True)
    assert cqe.status_name == "Internal Error"


def test_cqe_success() -> None:
    cqe = c.Cqe.decode(bytes(16))
    assert cqe.ok and cqe.status_name == "Success" and not cqe.dnr


def test_cqe_ok_ignores_more_and_crd() -> None:
    assert c.Cqe(status=1 << 13).ok
    assert not c.Cqe(status=c.make_status(0, 1)).ok
    assert not c.Cqe(status=c.make_status(3, 0)).ok


@given(cqes)
def test_cqe_round_trip(cqe: c.Cqe) -> None:
    assert c.Cqe.decode(cqe.encode()) == cqe


@given(st.binary(max_size=24))
def test_cqe_decode_arbitrary_bytes(buf: bytes) -> None:
    try:
        cqe = c.Cqe.decode(buf)
    except ProtocolError as exc:
        assert "CQE must be 16 bytes" in str(exc)
    else:
        assert cqe.encode() == buf[:14] + struct.pack("<H", u16(buf, 14) & 0xFFFE)


@pytest.mark.parametrize(("sct", "sc"), [(8, 0), (0, 256), (-1, 0)])
def test_make_status_range_checked(sct: int, sc: int) -> None:
    with pytest.raises(ValueError):
        c.make_status(sct, sc)


# --- builders -----------------------------------------------------------------------------


def assert_common(b: bytes, opcode: int, *, sgl_type: int, sgl_len: int) -> None:
    assert len(b) == 64
    assert b[0] == opcode
    assert b[1] == 0x40  # PSDT = 01b (SGL)
    assert u16(b, 2) == 0  # CID left to the transport
    assert u64(b, 24) == 0  # SGL address / offset
    assert u32(b, 32) == sgl_len
    assert b[36:39] == bytes(3)
    assert b[39] == sgl_type


def test_connect_bytes() -> None:
    b = c.connect(kato_ms=30000).encode()
    assert_common(b, 0x7F, sgl_type=0x01, sgl_len=1024)
    assert b[4] == 0x01  # FCTYPE Connect
    assert b[5:24] == bytes(19)
    assert u16(b, 40) == 0  # RECFMT
    assert u16(b, 42) == 0  # QID admin
    assert u16(b, 44) == 31  # SQSIZE
    assert b[46] == 0  # CATTR
    assert u32(b, 48) == 30000  # KATO ms
    assert b[52:] == bytes(12)


def test_connect_options() -> None:
    b = c.connect(kato_ms=0, sqsize=127, qid=3, cattr=0x04).encode()
    assert (u16(b, 42), u16(b, 44), b[46], u32(b, 48)) == (3, 127, 0x04, 0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kato_ms": -1}, "kato_ms"),
        ({"kato_ms": 0, "sqsize": 0}, "sqsize=0"),
        ({"kato_ms": 0, "sqsize": 1 << 16}, "sqsize"),
        ({"kato_ms": 0, "cattr": 256}, "cattr"),
    ],
)
def test_connect_rejects_bad_arguments(kwargs: dict[str, int], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        c.connect(**kwargs)


def test_property_get_bytes() -> None:
    b = c.property_get(c.REG_CAP, eight_bytes=True).encode()
    assert_common(b, 0x7F, sgl_type=0x5A, sgl_len=0)
    assert (b[4], b[40], u32(b, 44)) == (0x04, 1, 0x00)
    b = c.property_get(c.REG_CSTS, eight_bytes=False).encode()
    assert (b[4], b[40], u32(b, 44)) == (0x04, 0, 0x1C)
    assert b[48:] == bytes(16)


def test_property_set_bytes() -> None:
    b = c.property_set(c.REG_CC, c.CC_ENABLE).encode()
    assert_common(b, 0x7F, sgl_type=0x5A, sgl_len=0)
    assert (b[4], b[40], u32(b, 44), u64(b, 48)) == (0x00, 0, 0x14, 0x00460001)
    b = c.property_set(0x40, 0x1122334455667788, eight_bytes=True).encode()
    assert (b[40], u32(b, 44), u64(b, 48)) == (1, 0x40, 0x1122334455667788)


def test_property_set_four_bytes_rejects_wide_value() -> None:
    with pytest.raises(ValueError, match="value=4294967296 is not an unsigned 32-bit"):
        c.property_set(c.REG_CC, 1 << 32)


def test_identify_controller_bytes() -> None:
    b = c.identify_controller().encode()
    assert_common(b, 0x06, sgl_type=0x5A, sgl_len=4096)
    assert u32(b, 4) == 0  # NSID
    assert u32(b, 40) == 0x01  # CNS controller
    assert b[44:] == bytes(20)


def test_get_log_page_bytes_small() -> None:
    b = c.get_log_page(0x70, offset=0, length=20).encode()
    assert_common(b, 0x02, sgl_type=0x5A, sgl_len=20)
    assert b[40] == 0x70  # LID
    assert b[41] == 0  # LSP 6:0 | RAE bit 7
    assert u16(b, 42) == 4  # NUMDL: 5 dwords, 0's based
    assert u16(b, 44) == 0  # NUMDU
    assert u16(b, 46) == 0  # LSI
    assert (u32(b, 48), u32(b, 52)) == (0, 0)  # LPOL, LPOU
    assert b[56:] == bytes(8)


def test_get_log_page_bytes_numdu_lpou_lsp_rae() -> None:
    length = (0x12345 + 1) * 4
    sqe = c.get_log_page(
        0x70, offset=0x1_0000_0400, length=length, lsp=c.LSP_EXTDLPE | c.LSP_ALLSUBE, rae=True
    )
    b = sqe.encode()
    assert b[40] == 0x70
    assert b[41] == 0x05 | 0x80
    assert u16(b, 42) == 0x2345  # NUMDL
    assert u16(b, 44) == 0x0001  # NUMDU
    assert u32(b, 48) == 0x400  # LPOL
    assert u32(b, 52) == 0x1  # LPOU
    assert sqe.sgl_length == length


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"offset": 0, "length": 0}, "length=0"),
        ({"offset": 0, "length": 6}, "length=6"),
        ({"offset": 0, "length": -4}, "length=-4"),
        ({"offset": 0, "length": 1 << 32}, "length="),
        ({"offset": 2, "length": 4}, "offset=2"),
        ({"offset": 0, "length": 4, "lsp": 0x80}, "lsp=128"),
    ],
)
def test_get_log_page_rejects_bad_arguments(kwargs: dict[str, int], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        c.get_log_page(0x70, **kwargs)


def test_set_and_get_features_bytes() -> None:
    b = c.set_features(c.FeatureId.ASYNC_EVENT_CONFIG, c.AEC_DISCOVERY_LOG_CHANGE).encode()
    assert_common(b, 0x09, sgl_type=0x5A, sgl_len=0)
    assert (u32(b, 40), u32(b, 44)) == (0x0B, 0x80000000)
    b = c.set_features(c.FeatureId.KEEP_ALIVE_TIMER, 30000).encode()
    assert (u32(b, 40), u32(b, 44)) == (0x0F, 30000)
    b = c.get_features(c.FeatureId.KEEP_ALIVE_TIMER).encode()
    assert_common(b, 0x0A, sgl_type=0x5A, sgl_len=0)
    assert (u32(b, 40), u32(b, 44)) == (0x0F, 0)


def test_keep_alive_and_aer_bytes() -> None:
    for sqe, opcode in ((c.keep_alive(), 0x18), (c.async_event_request(), 0x0C)):
        b = sqe.encode()
        assert_common(b, opcode, sgl_type=0x5A, sgl_len=0)
        assert b[4:24] == bytes(20) and b[40:] == bytes(24)


def test_dim_bytes() -> None:
    b = c.dim(c.DimTas.DEREGISTER).encode()
    assert_common(b, 0x21, sgl_type=0x5A, sgl_len=0)
    assert u32(b, 40) == 1
    b = c.dim(c.DimTas.REGISTER, data_length=2112).encode()
    assert_common(b, 0x21, sgl_type=0x01, sgl_len=2112)
    assert u32(b, 40) == 0
    assert u32(c.dim(c.DimTas.UPDATE).encode(), 40) == 2


# --- decoders (controller side) ------------------------------------------------------------


@given(
    lid=uint(8),
    dwords=st.integers(1, 0x3FFFFFFF),
    offset_dw=st.integers(0, (1 << 62) - 1),
    lsp=uint(7),
    rae=st.booleans(),
)
def test_get_log_page_decode_round_trip(
    lid: int, dwords: int, offset_dw: int, lsp: int, rae: bool
) -> None:
    sqe = c.Sqe.decode(
        c.get_log_page(lid, offset=offset_dw * 4, length=dwords * 4, lsp=lsp, rae=rae).encode()
    )
    assert c.decode_get_log_page(sqe) == c.GetLogPageArgs(lid, lsp, rae, offset_dw * 4, dwords * 4)


@given(offset=uint(32), value=uint(64), eight=st.booleans())
def test_property_decode_round_trip(offset: int, value: int, eight: bool) -> None:
    if not eight:
        value &= 0xFFFFFFFF
    got = c.decode_property(c.property_set(offset, value, eight_bytes=eight))
    assert got == c.PropertyArgs(offset, eight, value)
    assert c.decode_property(c.property_get(offset, eight_bytes=eight)) == c.PropertyArgs(
        offset, eight, None
    )


def test_property_decode_four_byte_set_ignores_cdw13() -> None:
    sqe = c.Sqe(opcode=0x7F, nsid=0, cdw10=0, cdw11=0x14, cdw12=0x460001, cdw13=0xFFFF)
    assert c.decode_property(sqe).value == 0x460001


@given(kato=uint(32), sqsize=st.integers(1, 0xFFFF), qid=uint(16), cattr=uint(8))
def test_connect_decode_round_trip(kato: int, sqsize: int, qid: int, cattr: int) -> None:
    sqe = c.connect(kato_ms=kato, sqsize=sqsize, qid=qid, cattr=cattr)
    assert c.decode_connect(sqe) == c.ConnectArgs(0, qid, sqsize, cattr, kato)


def test_decoders_reject_other_commands() -> None:
    with pytest.raises(ProtocolError, match=r"expected Get Log Page .* opcode 0x06"):
        c.decode_get_log_page(c.identify_controller())
    with pytest.raises(
        ProtocolError, match="expected Fabrics CONNECT, got opcode 0x7f fctype 0x04"
    ):
        c.decode_connect(c.property_get(0, eight_bytes=False))
    with pytest.raises(ProtocolError, match="PROPERTY_GET/PROPERTY_SET"):
        c.decode_property(c.connect(kato_ms=0))


@given(sqes)
def test_decoders_on_arbitrary_sqe_give_value_or_protocol_error(sqe: c.Sqe) -> None:
    for decoder in (c.decode_get_log_page, c.decode_property, c.decode_connect):
        try:
            args = decoder(sqe)
        except ProtocolError:
            continue
        assert args is not None
    if sqe.opcode == 0x02:
        assert c.decode_get_log_page(sqe).length % 4 == 0


# --- Connect data and result ----------------------------------------------------------------

HOSTID = bytes.fromhex("0123456789abcdef0123456789abcdef")
HOSTNQN = "nqn.2014-08.org.nvmexpress:uuid:01234567-89ab-cdef-0123-456789abcdef"
DISC_NQN = "nqn.2014-08.org.nvmexpress.discovery"


def test_connect_data_layout() -> None:
    b = c.ConnectData(HOSTID, 0xFFFF, DISC_NQN, HOSTNQN).encode()
    assert len(b) == 1024
    assert b[0:16] == HOSTID
    assert u16(b, 16) == 0xFFFF
    assert b[18:256] == bytes(238)
    assert b[256:512] == DISC_NQN.encode().ljust(256, b"\0")
    assert b[512:768] == HOSTNQN.encode().ljust(256, b"\0")
    assert b[768:] == bytes(256)


@given(st.binary(min_size=16, max_size=16), uint(16), nqns, nqns)
def test_connect_data_round_trip(hostid: bytes, cntlid: int, subnqn: str, hostnqn: str) -> None:
    data = c.ConnectData(hostid, cntlid, subnqn, hostnqn)
    assert c.ConnectData.decode(data.encode()) == data


def test_connect_data_nqn_length_limit() -> None:
    ok = "n" * 223
    assert c.ConnectData.decode(c.ConnectData(HOSTID, 1, ok, ok).encode()).subnqn == ok
    with pytest.raises(ValueError, match=r"hostnqn 'nnn.* is 224 bytes, more than 223"):
        c.ConnectData(HOSTID, 1, ok, ok + "n").encode()


@pytest.mark.parametrize(("nqn", "match"), [("nqn.é", "not ASCII"), ("a\0b", "NUL")])
def test_connect_data_encode_rejects_bad_nqn(nqn: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        c.ConnectData(HOSTID, 1, nqn, HOSTNQN).encode()


def test_connect_data_decode_rejects_bad_input() -> None:
    good = bytearray(c.ConnectData(HOSTID, 1, DISC_NQN, HOSTNQN).encode())
    with pytest.raises(ProtocolError, match="1024 bytes, got 1023"):
        c.ConnectData.decode(bytes(good[:-1]))
    bad = bytearray(good)
    bad[520] = 0xC3
    with pytest.raises(ProtocolError, match=r"hostnqn .* is not ASCII"):
        c.ConnectData.decode(bytes(bad))
    bad = bytearray(good)
    bad[256:512] = b"x" * 256
    with pytest.raises(ProtocolError, match="subnqn is not a NUL-terminated"):
        c.ConnectData.decode(bytes(bad))


@given(
    patched(c.ConnectData(HOSTID, 0xFFFF, DISC_NQN, HOSTNQN).encode(), 300)
    | st.binary(max_size=1100)
)
def test_connect_data_decode_arbitrary_bytes(buf: bytes) -> None:
    try:
        data = c.ConnectData.decode(buf)
    except ProtocolError as exc:
        assert "subnqn" in str(exc) or "hostnqn" in str(exc) or "1024 bytes" in str(exc)
        return
    assert data.hostid == buf[:16]
    assert data.cntlid == buf[16] | (buf[17] << 8)
    assert buf[256 + len(data.subnqn)] == 0
    assert buf[512 : 512 + len(data.hostnqn)] == data.hostnqn.encode()


def test_connect_result_bits() -> None:
    assert c.connect_result(0x0001) == c.ConnectResult(1, False, False)
    assert c.connect_result(0x10005) == c.ConnectResult(5, False, False)  # bit 16 is not ATR
    assert c.connect_result(0x20005) == c.ConnectResult(5, True, False)
    assert c.connect_result(0x4FFFF) == c.ConnectResult(0xFFFF, False, True)
    assert c.ConnectResult(7, authreq_atr=True, ascr=True).encode() == 0x60007


# --- registers and AEN ------------------------------------------------------------------------


def test_register_offsets_and_cc_values() -> None:
    assert (c.REG_CAP, c.REG_VS, c.REG_CC, c.REG_CSTS) == (0x00, 0x08, 0x14, 0x1C)
    assert c.Cc.decode(c.CC_ENABLE) == c.Cc(en=True, iosqes=6, iocqes=4)
    assert c.Cc.decode(c.CC_SHUTDOWN_NORMAL) == c.Cc(en=True, shn=1, iosqes=6, iocqes=4)
    assert c.Cc(en=True, iosqes=6, iocqes=4).encode() == c.CC_ENABLE


def test_cap_decode_linux_nvmet_value() -> None:
    cap = c.Cap.decode((1 << 37) | (1 << 43) | (15 << 24) | 127)
    assert (cap.mqes, cap.cqr, cap.to, cap.css) == (127, False, 15, 0x41)
    assert cap.timeout_s == 7.5
    assert cap.mpsmin_bytes == 4096
    assert c.Cap(mqes=31, cqr=True, to=2).encode() == 31 | (1 << 16) | (2 << 24) | (1 << 37)


def test_csts_decode() -> None:
    assert c.Csts.decode(0b1001) == c.Csts(rdy=True, cfs=False, shst=c.CSTS_SHST_COMPLETE)
    assert c.Csts.decode(0b0010) == c.Csts(rdy=False, cfs=True, shst=0)
    assert c.Csts(rdy=True, shst=2).encode() == 0b1001


def test_bitfield_values_are_range_checked() -> None:
    with pytest.raises(ValueError, match="to=256"):
        c.Cap(mqes=1, to=256)
    with pytest.raises(ValueError, match="event_type=8"):
        c.AenInfo(8, 0, 0)


@given(uint(64))
def test_register_decode_any_value(value: int) -> None:
    cap = c.Cap.decode(value)
    assert c.Cap.decode(cap.encode()) == cap
    assert cap.encode() == value & (
        (0xFFFF | (1 << 16) | (0xFF << 24)) | (0xFF << 37) | (0xFF << 48)
    )
    cc = c.Cc.decode(value & 0xFFFFFFFF)
    assert c.Cc.decode(cc.encode()) == cc
    csts = c.Csts.decode(value & 0xFFFFFFFF)
    assert csts.encode() == value & 0xF


def test_aen_discovery_log_change() -> None:
    aen = c.AenInfo.decode(0x0070F002)
    assert aen == c.AenInfo(event_type=2, event_info=0xF0, log_page=0x70)
    assert aen.is_discovery_log_change
    assert aen.describe() == "notice: discovery log page changed (log 0x70)"
    assert aen.encode() == c.AEN_DISCOVERY_LOG_CHANGED


def test_aen_other_events() -> None:
    ns = c.AenInfo.decode(0x00040002)
    assert not ns.is_discovery_log_change
    assert ns.describe() == "notice: namespace attribute changed (log 0x04)"
    odd = c.AenInfo.decode(0x00AB3405)
    assert odd.describe() == "type 5: info 0x34 (log 0xab)"
    assert c.AenInfo.decode(0x0071F002).is_discovery_log_change is False


@given(uint(3), uint(8), uint(8))
def test_aen_round_trip(event_type: int, info: int, log_page: int) -> None:
    aen = c.AenInfo(event_type, info, log_page)
    assert c.AenInfo.decode(aen.encode()) == aen
    assert aen.describe().endswith(f"(log 0x{log_page:02x})")


@given(uint(32))
def test_aen_decode_any_dword(dw0: int) -> None:
    assert c.AenInfo.decode(dw0).encode() == dw0 & 0x00FFFF07
