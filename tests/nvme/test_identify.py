"""Identify Controller and Supported Log Pages encodings."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stas.nvme import commands as c
from stas.nvme import identify as i
from stas.nvme.errors import ProtocolError
from tests.helpers.wire import patched


def uint(nbytes: int) -> st.SearchStrategy[int]:
    return st.integers(0, (1 << (8 * nbytes)) - 1)


def text(size: int) -> st.SearchStrategy[str]:
    """ASCII without trailing space/NUL (those are padding and do not survive a round trip)."""
    chars = st.characters(min_codepoint=0, max_codepoint=127)
    return st.text(alphabet=chars, max_size=size).map(lambda s: s.rstrip(" \0"))


identifies = st.builds(
    i.IdentifyController,
    vid=uint(2),
    ssvid=uint(2),
    sn=text(20),
    mn=text(40),
    fr=text(8),
    rab=uint(1),
    ieee=uint(3),
    cmic=uint(1),
    mdts=uint(1),
    cntlid=uint(2),
    ver=uint(4),
    oaes=uint(4),
    ctratt=uint(4),
    cntrltype=uint(1),
    aerl=uint(1),
    lpa=uint(1),
    kas=uint(2),
    maxcmd=uint(2),
    sgls=uint(4),
    subnqn=st.text(alphabet=st.characters(min_codepoint=1, max_codepoint=127), max_size=255).map(
        lambda s: s.rstrip(" ")
    ),
    ioccsz=uint(4),
    iorcsz=uint(4),
    icdoff=uint(2),
    fcatt=uint(1),
    msdbd=uint(1),
    ofcs=uint(2),
    dctype=uint(1),
)

SAMPLE = i.IdentifyController(
    vid=0x1B36,
    ssvid=0x1AF4,
    sn="SN123",
    mn="Linux",
    fr="6.1.0",
    rab=6,
    ieee=0x123456,
    cmic=0x0B,
    mdts=5,
    cntlid=0x0042,
    ver=0x00020000,
    oaes=0x80000000,
    ctratt=0x00000080,
    cntrltype=i.CntrlType.DISCOVERY,
    aerl=3,
    lpa=0x04,
    kas=50,
    maxcmd=128,
    sgls=0x00100005,
    subnqn="nqn.2014-08.org.nvmexpress.discovery",
    ioccsz=4,
    iorcsz=1,
    icdoff=0,
    fcatt=0,
    msdbd=1,
    ofcs=0,
    dctype=i.DcType.CDC,
)


def test_field_offsets() -> None:
    b = SAMPLE.encode()
    assert len(b) == 4096
    u16 = lambda off: struct.unpack_from("<H", b, off)[0]  # noqa: E731
    u32 = lambda off: struct.unpack_from("<I", b, off)[0]  # noqa: E731
    assert (u16(0), u16(2)) == (0x1B36, 0x1AF4)
    assert b[4:24] == b"SN123" + b" " * 15
    assert b[24:64] == b"Linux" + b" " * 35
    assert b[64:72] == b"6.1.0   "
    assert (b[72], b[73:76], b[76], b[77]) == (6, b"\x56\x34\x12", 0x0B, 5)
    assert (u16(78), u32(80), u32(92), u32(96)) == (0x42, 0x00020000, 0x80000000, 0x80)
    assert b[111] == 2
    assert (b[259], b[261], u16(320), u16(514), u32(536)) == (3, 4, 50, 128, 0x00100005)
    assert b[768:1024] == SAMPLE.subnqn.encode().ljust(256, b"\0")
    assert (u32(1792), u32(1796), u16(1800), b[1802], b[1803], u16(1804), b[1806]) == (
        4,
        1,
        0,
        0,
        1,
        0,
        2,
    )
    # Everything not modelled stays zero.
    modelled = {*range(0, 84), *range(92, 100), 111, 259, 261, 320, 321, 514, 515}
    modelled |= {*range(536, 540), *range(768, 1024), *range(1792, 1807)}
    assert all(b[k] == 0 for k in range(4096) if k not in modelled)


def test_round_trip_sample() -> None:
    assert i.IdentifyController.decode(SAMPLE.encode()) == SAMPLE


@given(identifies)
def test_round_trip(ident: i.IdentifyController) -> None:
    assert i.IdentifyController.decode(ident.encode()) == ident


def test_decode_strips_nul_and_space_padding() -> None:
    b = bytearray(4096)
    b[4:24] = b"ABC\0\0 \0".ljust(20, b"\0")
    b[24:64] = b"Model".ljust(40, b" ")
    b[768:1024] = b"nqn.a\0garbage".ljust(256, b"\0")
    ident = i.IdentifyController.decode(bytes(b))
    assert (ident.sn, ident.mn, ident.fr, ident.subnqn) == ("ABC", "Model", "", "nqn.a")


def test_decode_unterminated_subnqn_takes_whole_field() -> None:
    b = bytearray(4096)
    b[768:1024] = b"q" * 256
    assert i.IdentifyController.decode(bytes(b)).subnqn == "q" * 256


def test_decode_rejects_wrong_size_and_non_ascii() -> None:
    with pytest.raises(ProtocolError, match="4096 bytes, got 4095"):
        i.IdentifyController.decode(bytes(4095))
    b = bytearray(4096)
    b[24] = 0xFF
    with pytest.raises(ProtocolError, match=r"Identify mn .* is not ASCII"):
        i.IdentifyController.decode(bytes(b))


@given(patched(SAMPLE.encode(), 600) | st.binary(max_size=5000))
def test_decode_arbitrary_bytes(buf: bytes) -> None:
    try:
        ident = i.IdentifyController.decode(buf)
    except ProtocolError as exc:
        assert "not ASCII" in str(exc) or "4096 bytes" in str(exc)
    else:
        assert ident.dctype == buf[1806]
        assert ident.cntlid == buf[78] | (buf[79] << 8)
        assert ident.sn == buf[4:24].rstrip(b" \0").decode()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"sn": "x" * 21}, "sn 'x+' is 21 bytes, the field holds 20"),
        ({"fr": "ü"}, "fr 'ü' is not ASCII"),
        ({"subnqn": "n" * 256}, "subnqn 'n+' is 256 bytes, the field holds 255"),
    ],
)
def test_encode_rejects_bad_strings(kwargs: dict[str, str], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        i.IdentifyController(**kwargs).encode()  # type: ignore[arg-type]


def test_constructor_rejects_out_of_range_numbers() -> None:
    with pytest.raises(ValueError, match="ieee=16777216 does not fit in 3 byte"):
        i.IdentifyController(ieee=1 << 24)
    with pytest.raises(ValueError, match="sn=5 is not a string"):
        i.IdentifyController(sn=5)  # type: ignore[arg-type]


def test_helpers() -> None:
    assert SAMPLE.supports_discovery_log_change_notices
    assert SAMPLE.is_registration_supported
    assert (SAMPLE.cntrltype_label, SAMPLE.dctype_label) == ("discovery", "cdc")
    plain = i.IdentifyController(oaes=0x7FFFFFFF, dctype=0, cntrltype=1)
    assert not plain.supports_discovery_log_change_notices
    assert not plain.is_registration_supported
    assert (plain.cntrltype_label, plain.dctype_label) == ("io", "none")
    assert i.IdentifyController(dctype=1).is_registration_supported
    assert not i.IdentifyController(dctype=3).is_registration_supported
    assert i.IdentifyController(dctype=3).dctype_label == "reserved"


def test_enum_labels() -> None:
    assert [t.label for t in i.DcType] == ["none", "ddc", "cdc"]
    assert [t.label for t in i.CntrlType] == ["reserved", "io", "discovery", "admin"]
    assert (i.CntrlType.IO, i.CntrlType.DISCOVERY, i.CntrlType.ADMIN) == (1, 2, 3)


def test_mdts_bytes() -> None:
    assert i.IdentifyController(mdts=0).mdts_bytes() is None
    assert i.IdentifyController(mdts=5).mdts_bytes() == 128 * 1024
    assert i.IdentifyController(mdts=1).mdts_bytes(cap_mpsmin_bytes=8192) == 16384


# --- Supported Log Pages ---------------------------------------------------------------------


def test_supported_log_pages_decode() -> None:
    dwords = [0] * 256
    dwords[0x00] = 1
    dwords[0x70] = 1 | (1 << 16) | (1 << 18)
    dwords[0x71] = 1 << 16  # not supported: bit 0 clear
    buf = struct.pack("<256I", *dwords)
    pages = i.decode_supported_log_pages(buf)
    assert pages == {0x00: 1, 0x70: 0x50001}
    support = i.DiscoveryLogSupport.from_dword(pages[c.LogPageId.DISCOVERY])
    assert support == i.DiscoveryLogSupport(extdlpes=True, pleos=False, allsubes=True)
    assert support.supported_lsp == c.LSP_EXTDLPE | c.LSP_ALLSUBE
    assert i.encode_supported_log_pages(pages)[0x70 * 4 : 0x70 * 4 + 4] == b"\x01\x00\x05\x00"


def test_discovery_log_support_to_dword() -> None:
    assert i.DiscoveryLogSupport(pleos=True).to_dword() == 0x20001
    assert i.DiscoveryLogSupport().supported_lsp == 0
    assert i.DiscoveryLogSupport.from_dword(0x70001).supported_lsp == 0x7


@given(st.dictionaries(st.integers(0, 255), st.integers(0, 0x7FFFFFFF).map(lambda d: d * 2 + 1)))
def test_supported_log_pages_round_trip(pages: dict[int, int]) -> None:
    buf = i.encode_supported_log_pages(pages)
    assert len(buf) == 1024
    assert i.decode_supported_log_pages(buf) == pages


@given(st.binary(max_size=1100))
def test_supported_log_pages_decode_arbitrary_bytes(buf: bytes) -> None:
    try:
        pages = i.decode_supported_log_pages(buf)
    except ProtocolError as exc:
        assert len(buf) != 1024 and "1024 bytes" in str(exc)
    else:
        assert all(d & 1 for d in pages.values())


@given(uint(4))
def test_discovery_log_support_any_dword(dword: int) -> None:
    support = i.DiscoveryLogSupport.from_dword(dword)
    assert support.to_dword() == 1 | (dword & 0x70000)


@pytest.mark.parametrize(
    ("pages", "match"),
    [({256: 1}, "log page id 256"), ({0x70: 0x10000}, "needs bit 0"), ({1: 1 << 32}, "LSUPP")],
)
def test_encode_supported_log_pages_rejects_bad_input(pages: dict[int, int], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        i.encode_supported_log_pages(pages)
