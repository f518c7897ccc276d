"""TP8010 DIM data codec: libnvme's registration bytes and hostile input."""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stas.nvme.dim import (
    DimData,
    DimEntityType,
    DimEntryFormat,
    DimHostEntry,
    check_symname,
    host_registration,
    read_symname,
)
from stas.nvme.errors import ProtocolError
from stas.nvme.logpage import AdrFam, TrType
from tests.helpers.wire import printable, u16, u32, u64

HOSTNQN = "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-0000-0000-000000000001"
HOSTID = bytes(range(16))


def registration(symname: str | None = None, **kw: object) -> DimData:
    args: dict[str, object] = dict(
        hostnqn=HOSTNQN, hostid=HOSTID, hostname="host1", os_version="Linux 6.1.0 Debian 12",
        symname=symname, adrfam=AdrFam.IPV6,
    )  # fmt: skip
    args.update(kw)
    return host_registration(**args)  # type: ignore[arg-type]


def test_host_registration_layout_matches_libnvme() -> None:
    raw = registration().encode()
    tel = 1032 + 4 + 16
    assert len(raw) == 1024 + tel == 2076
    assert u32(raw, 0) == 2076  # TDL
    assert raw[4:8] == bytes(4)
    assert u64(raw, 8) == 1  # NUMENT
    assert u16(raw, 16) == 2  # ENTFMT extended
    assert u16(raw, 18) == 1  # ETYPE host
    assert raw[20] == 0 and raw[21] == 0  # PORTLCL, reserved
    assert u16(raw, 22) == 0x5F  # EKTYPE
    assert raw[24 : 24 + len(HOSTNQN)] == HOSTNQN.encode() and raw[24 + len(HOSTNQN)] == 0
    assert raw[280:286] == b"host1\0"
    assert raw[536:557] == b"Linux 6.1.0 Debian 12" and raw[557:600] == bytes(43)
    assert raw[600:1024] == bytes(424)
    die = raw[1024:]
    assert (die[0], die[1]) == (TrType.TCP, AdrFam.IPV6)
    assert die[2:256] == bytes(254)  # no TRSVCID, reserved, ...
    assert die[256 : 256 + len(HOSTNQN)] == HOSTNQN.encode()
    assert die[512:1024] == bytes(512)  # TRADDR empty: "take my socket's source address"
    assert (u32(die, 1024), u16(die, 1028), u16(die, 1030)) == (tel, 1, 0)
    assert (u16(die, 1032), u16(die, 1034)) == (1, 16)  # Host ID
    assert die[1036:1052] == HOSTID


def test_symbolic_name_is_space_padded() -> None:
    raw = registration("abcde").encode()
    tel = 1032 + (4 + 16) + (4 + 8)
    assert u32(raw, 0) == 1024 + tel
    die = raw[1024:]
    assert (u32(die, 1024), u16(die, 1028)) == (tel, 2)
    assert (u16(die, 1052), u16(die, 1054)) == (2, 8)
    assert die[1056:1064] == b"abcde   "
    back = DimData.decode(raw)
    assert back.entries[0].symname == "abcde"
    assert back == registration("abcde")


def test_empty_symname_sends_no_attribute() -> None:
    data = registration("")
    assert data.entries[0].symname is None
    assert data.encode() == registration(None).encode()


def test_round_trip_and_fields() -> None:
    data = registration("my-host")
    back = DimData.decode(data.encode())
    assert back == data
    assert (back.entity_type, back.entry_format, back.portlcl, back.ektype) == (
        DimEntityType.HOST, DimEntryFormat.EXTENDED, 0, 0x5F,
    )  # fmt: skip
    assert (back.eid, back.ename, back.ever) == (HOSTNQN, "host1", "Linux 6.1.0 Debian 12")
    assert back.entries[0] == DimHostEntry(
        trtype=3, adrfam=2, hostnqn=HOSTNQN, traddr="", hostid=HOSTID, symname="my-host"
    )


def test_host_facts_are_made_to_fit() -> None:
    data = registration(hostname="h\u00f6st\tname", os_version="Linux " + "9" * 100)
    assert data.ename == "h?st?name"
    assert data.ever == "Linux " + "9" * 58 and len(data.ever) == 64
    assert DimData.decode(data.encode()) == data


def test_invalid_host_identity_is_refused() -> None:
    with pytest.raises(ValueError, match="hostid must be 16 bytes, got 4"):
        registration(hostid=b"abcd")
    with pytest.raises(ValueError, match=r"hostnqn 'n+' is 224 bytes, more than 223"):
        registration(hostnqn="n" * 224)
    with pytest.raises(ValueError, match=r"symname 'x\\n': contains a non-printable character"):
        registration("x\n")
    with pytest.raises(ValueError, match=r"symname 'é+': longer than 256 bytes"):
        registration("é" * 129)  # 129 characters, 258 bytes of UTF-8


@given(st.text(max_size=140) | st.text(st.sampled_from("aé\u20ac\U0001f600"), max_size=140))
def test_sys_conf_and_dim_take_the_same_symnames(name: str) -> None:
    """One rule: what sys.conf (and so stasadm) accepts as a symname is what DIM sends."""
    from stas.config.checks import BadValue, to_symname

    def accepted(check: Callable[[str], object]) -> bool:
        try:
            check(name)
        except ValueError:
            return False
        return True

    assert issubclass(BadValue, ValueError)
    assert accepted(to_symname) == accepted(check_symname)


def test_a_non_ascii_symname_is_sent_as_utf8() -> None:
    """sys.conf and stasadm take any printable symname, and libnvme sends its UTF-8 bytes:
    the DIM codec did too little (ASCII only), and the DC actor crashed on 'café-host'."""
    data = registration("café-host")
    raw = data.encode()
    assert "café-host".encode() + b"  " in raw  # 10 bytes, space-padded to 12
    assert DimData.decode(raw).entries[0].symname == "café-host"


def test_a_symname_that_is_not_utf8_is_a_protocol_error() -> None:
    raw = bytearray(registration("abcd").encode())
    at = raw.index(b"abcd")
    raw[at : at + 4] = b"\xff\xfeab"
    with pytest.raises(ProtocolError, match=r"symbolic name is not UTF-8 \(byte 0\)"):
        DimData.decode(bytes(raw))


def test_basic_format() -> None:
    entry = DimHostEntry(trtype=3, adrfam=1, hostnqn="nqn.h", traddr="10.0.0.2", trsvcid="4420")
    data = DimData(1, "nqn.h", "h", "v", (entry, entry), entry_format=DimEntryFormat.BASIC)
    raw = data.encode()
    assert len(raw) == u32(raw, 0) == 1024 + 2 * 1024
    assert raw[1024 + 512 : 1024 + 520] == b"10.0.0.2"
    assert DimData.decode(raw) == data
    with pytest.raises(ValueError, match="basic DIM entry cannot carry a Host ID"):
        DimData(1, "e", "n", "v", (registration().entries[0],), entry_format=1).encode()


def tamper(raw: bytes, offset: int, fmt: str, value: int) -> bytes:
    buf = bytearray(raw)
    struct.pack_into(fmt, buf, offset, value)
    return bytes(buf)


GOOD = registration("abcde").encode()
DIE = 1024


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (GOOD[:1000], "DIM data truncated: header needs 1024 bytes, got 1000"),
        (GOOD + bytes(4), "TDL=2088 does not match the 2092 bytes received"),
        (tamper(GOOD, 8, "<Q", 17), "NUMENT=17 exceeds the limit of 16"),
        (tamper(GOOD, 8, "<Q", 2**63), "NUMENT=9223372036854775808 exceeds the limit"),
        (tamper(GOOD, 16, "<H", 3), "ENTFMT=3 is neither 1 \\(basic\\) nor 2"),
        (tamper(GOOD, 280, "<B", 0xFF), "DIM data: ENAME contains non-printable byte 0xff"),
        (tamper(GOOD, DIE + 1024, "<I", 1030), "DIM entry 0: TEL=1030 is invalid"),
        (tamper(GOOD, DIE + 1024, "<I", 4096), "TEL=4096 at offset 1024 runs past TDL=2088"),
        (
            tamper(tamper(GOOD, DIE + 1024, "<I", 1052), DIE + 1028, "<H", 1),
            "TDL=2088 but the entries end at 2076",
        ),
        (tamper(GOOD, DIE + 1028, "<H", 17), "NUMEXAT=17 exceeds the limit of 16"),
        (tamper(GOOD, DIE + 1028, "<H", 3), "attribute 2 header runs past TEL"),
        (
            tamper(tamper(GOOD, DIE + 1034, "<H", 12), DIE + 1028, "<H", 1),
            "Host ID attribute is 12 bytes, expected 16",
        ),
        (tamper(GOOD, DIE + 1052, "<H", 1), "attribute 1 repeats type 1"),
        (tamper(GOOD, DIE + 1032, "<H", 9), "the Host ID attribute is missing"),
        (tamper(GOOD, DIE + 1056, "<B", 0), "DIM entry 0: symbolic name"),
        (
            tamper(GOOD, DIE + 1056, "<B", 7),
            r"DIM entry 0: symbolic name '\\x07bcde': contains a non-printable character",
        ),
        (tamper(GOOD, 8, "<Q", 2), "DIM entry 1: truncated, needs 1032 bytes at offset 2088"),
    ],
)
def test_decode_rejects_inconsistent_data(data: bytes, message: str) -> None:
    if message == "DIM entry 0: symbolic name":  # a NUL-led name is simply empty, not an error
        assert DimData.decode(data).entries[0].symname is None
        return
    with pytest.raises(ProtocolError, match=message):
        DimData.decode(data)


def test_unknown_attribute_types_are_skipped() -> None:
    raw = bytearray(GOOD)
    struct.pack_into("<H", raw, DIE + 1052, 0x99)  # the symname attribute becomes unknown
    back = DimData.decode(bytes(raw))
    assert back.entries[0].symname is None and back.entries[0].hostid == HOSTID


def _symname_bytes() -> st.SearchStrategy[bytes]:
    """Attribute values around the rule's edges: printable or not, one to four UTF-8 bytes a
    character, the 256-byte cap, NULs and trailing spaces, and plain noise."""
    chars = st.sampled_from(["a", " ", "é", "€", "😀", "\x07", "\u00a0", "\u200b", "\x00"])
    near_cap = st.integers(250, 262).map(lambda n: b"x" * n)
    return st.one_of(
        st.text(chars, max_size=80).map(lambda t: t.encode("utf-8")),
        st.tuples(near_cap, st.sampled_from([b"", b"\xc3\xa9", b" ", b"\0x"])).map(b"".join),
        st.binary(max_size=300),
    )


@given(_symname_bytes())
def test_decode_takes_exactly_the_symnames_the_one_rule_takes(raw: bytes) -> None:
    """read_symname refuses what symname_problem refuses (what we send is checked by it too),
    and that is what the decoder always refused: printable UTF-8 of at most 256 bytes."""
    value = raw.split(b"\0", 1)[0].rstrip(b" ")
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        with pytest.raises(ProtocolError, match="is not UTF-8"):
            read_symname(raw, "E")
        return
    before = text.isprintable() and len(value) <= 256  # the decoder's rule before the merge
    try:
        check_symname(text)
        one_rule = True
    except ValueError:
        one_rule = False
    assert before == one_rule
    if one_rule:
        assert read_symname(raw, "E") == text
    else:
        with pytest.raises(
            ProtocolError, match=r"^E: symbolic name .+: (contains a non|longer than 256)"
        ):
            read_symname(raw, "E")


# --- properties ---------------------------------------------------------------------------------


def text(max_size: int, min_size: int = 0) -> st.SearchStrategy[str]:
    return printable.map(lambda s: s.rstrip(" ")[:max_size]).filter(lambda s: len(s) >= min_size)


host_entries = st.builds(
    DimHostEntry,
    trtype=st.integers(0, 255),
    adrfam=st.integers(0, 255),
    hostnqn=text(223),
    traddr=text(255),
    hostid=st.binary(min_size=16, max_size=16),
    symname=st.none()
    | text(256, 1)
    | st.text(
        st.characters(codec="utf-8", categories=("L", "N", "P", "S")), min_size=1, max_size=64
    ),
    trsvcid=text(31),
    tsas=st.binary(min_size=256, max_size=256),
)


@settings(max_examples=60)
@given(
    st.integers(0, 0xFFFF), text(256), text(256), text(64),
    st.lists(host_entries, max_size=3), st.integers(0, 255), st.integers(0, 0xFFFF),
)  # fmt: skip
def test_round_trip(
    etype: int, eid: str, ename: str, ever: str, entries: list[DimHostEntry], portlcl: int, ek: int
) -> None:
    data = DimData(etype, eid, ename, ever, tuple(entries), 2, portlcl, ek)
    assert DimData.decode(data.encode()) == data


def decode_or_protocol_error(data: bytes) -> None:
    try:
        back = DimData.decode(data)
    except ProtocolError as exc:
        assert str(exc)
    else:
        assert len(back.entries) == u64(data, 8)


@settings(max_examples=150)
@given(st.binary(max_size=2500))
def test_arbitrary_bytes(data: bytes) -> None:
    decode_or_protocol_error(data)


@settings(max_examples=150)
@given(st.lists(st.tuples(st.integers(0, 2200), st.integers(0, 255)), min_size=1, max_size=8))
def test_mutated_registrations(flips: list[tuple[int, int]]) -> None:
    raw = bytearray(GOOD)
    for pos, value in flips:
        raw[pos % len(raw)] = value
    decode_or_protocol_error(bytes(raw))
