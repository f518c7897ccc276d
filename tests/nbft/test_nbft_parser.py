"""stas.nbft against tables built by the independent encoder nvmet-harness/nbft_gen.py.

Known answers (every field round-trips), each validation rule with the message it gives,
and property tests: any bytes, and any corruption of a valid table, give a parsed table or
an NbftError, never another exception.
"""

from __future__ import annotations

import struct

import nbft_gen as gen
import pytest
from hypothesis import given
from hypothesis import strategies as st

from stas.nbft import WELL_KNOWN_DISC_NQN, Nbft, NbftError, parse_nbft, parse_uri, read_tables

HOSTNQN = "nqn.2014-08.org.nvmexpress:uuid:4c4c4544-0035-5910-804b-b5c04f444d33"
HOSTID = "4c4c4544-0035-5910-804b-b5c04f444d33"


def full_table() -> gen.Table:
    """Two HFIs (IPv4 with DHCP, IPv6), two DCs, two boot subsystems, one security profile."""
    return gen.Table(
        hostnqn=HOSTNQN,
        hostid=HOSTID,
        host_flags=0x01 | 0x04 | 0x10,  # valid, host NQN configured, primary admin selected
        driver_sig="ipxe",
        hfis=[
            gen.Hfi(
                mac="52:54:00:AB:cd:01",
                ip="192.168.10.5",
                prefix=24,
                gateway="192.168.10.1",
                vlan=42,
                route_metric=100,
                primary_dns="192.168.10.53",
                dhcp_server="192.168.10.2",
                host_name="bootbox",
                default_route=True,
                pci_sbdf=0x0300,
                ip_origin=3,
            ),
            gen.Hfi(
                mac="52:54:00:ab:cd:02", ip="fd00:10::5", prefix=64, secondary_dns="fd00:10::53"
            ),
        ],
        securities=[
            gen.Security(
                flags=0x1 | 0x4 | 0x400,
                dh_groups=b"\x01\x02",
                hash_funcs=b"\x01",
                keypath="redfish://host/keys/1",
            )
        ],
        discoveries=[
            gen.Discovery(
                uri="nvme+tcp://192.168.10.20:8009/",
                hfi=1,
                nqn="nqn.1988-11.com.dell:SFSS:2:20220208134025e8",
            ),
            gen.Discovery(uri="nvme+tcp://[fd00:10::20]/", hfi=2, sec=1),
        ],
        subsystems=[
            gen.Subsys(
                traddr="192.168.10.30",
                trsvcid="4420",
                nqn="nqn.2014-08.org.x:boot",
                hfi=1,
                secondary_hfis=(2,),
                disc=1,
                nsid=7,
                hdr_digest=True,
                cntlid=5,
                asqsz=32,
                port_id=3,
            ),
            gen.Subsys(
                traddr="fd00:10::30",
                trsvcid="4421",
                nqn="nqn.2014-08.org.x:data",
                hfi=2,
                disc=2,
                sec=1,
                data_digest=True,
                nidt=2,
                flags_extra=0x02 | 0x40 | 0x100,
            ),
        ],
    )


def raw(t: gen.Table | None = None) -> bytes:
    return gen.build(t or full_table())


def fix_checksum(data: bytes | bytearray) -> bytes:
    body = bytearray(data)
    body[9] = 0
    body[9] = (-sum(body[: struct.unpack_from("<I", body, 4)[0]])) & 0xFF
    return bytes(body)


def test_known_answer_every_field() -> None:
    t = parse_nbft(raw())
    assert (t.major, t.minor, t.oem_id, t.oem_table_id, t.driver_signature) == (
        1,
        0,
        "STAS",
        "NBFTGEN",
        "ipxe",
    )
    assert t.problems == ()
    h = t.host
    assert h is not None
    assert (h.nqn, h.hostid, h.hostid_configured, h.hostnqn_configured, h.primary_admin) == (
        HOSTNQN,
        HOSTID,
        False,
        True,
        "selected",
    )
    a, b = t.hfis
    assert (a.index, a.transport, a.mac, a.vlan, a.ip, a.prefix, a.gateway) == (
        1,
        "tcp",
        "52:54:00:ab:cd:01",
        42,
        "192.168.10.5",
        24,
        "192.168.10.1",
    )
    assert (a.route_metric, a.primary_dns, a.secondary_dns, a.dhcp_override, a.dhcp_server) == (
        100,
        "192.168.10.53",
        "",
        True,
        "192.168.10.2",
    )
    assert (a.host_name, a.default_route, a.pci_sbdf, a.ip_origin) == ("bootbox", True, 0x300, 3)
    assert (b.ip, b.prefix, b.gateway, b.secondary_dns, b.dhcp_override, b.dhcp_server) == (
        "fd00:10::5",
        64,
        "",
        "fd00:10::53",
        False,
        "",
    )
    d1, d2 = t.discoveries
    assert (d1.transport, d1.traddr, d1.trsvcid, d1.nqn, d1.hfi_index) == (
        "tcp",
        "192.168.10.20",
        "8009",
        "nqn.1988-11.com.dell:SFSS:2:20220208134025e8",
        1,
    )
    assert (d2.traddr, d2.trsvcid, d2.nqn, d2.hfi_index, d2.security_index) == (
        "fd00:10::20",
        "",
        WELL_KNOWN_DISC_NQN,
        2,
        1,
    )
    s1, s2 = t.subsystems
    assert (s1.traddr, s1.trsvcid, s1.nqn, s1.hfi_indexes, s1.discovery_index, s1.nsid) == (
        "192.168.10.30",
        "4420",
        "nqn.2014-08.org.x:boot",
        (1, 2),
        1,
        7,
    )
    assert (s1.hdr_digest, s1.data_digest, s1.controller_id, s1.asqsz, s1.port_id) == (
        True,
        False,
        5,
        32,
        3,
    )
    assert (s1.nid_type, s1.nid, s1.bootable, s1.discovered, s1.availability) == (
        3,
        bytes(range(16)),
        True,
        False,
        "not indicated",
    )
    assert (s2.traddr, s2.trsvcid, s2.hfi_indexes, s2.security_index, s2.data_digest) == (
        "fd00:10::30",
        "4421",
        (2,),
        1,
        True,
    )
    assert (s2.bootable, s2.discovered, s2.availability, s2.nid_type) == (
        False,
        True,
        "unavailable",
        2,
    )
    (sec,) = t.securities
    assert (sec.index, sec.dh_groups, sec.hash_functions, sec.keypath) == (
        1,
        (1, 2),
        (1,),
        "redfish://host/keys/1",
    )


def test_empty_table_and_invalid_control() -> None:
    t = parse_nbft(raw(gen.Table()))
    assert t.host is not None and (t.hfis, t.subsystems, t.discoveries) == ((), (), ())
    body = bytearray(raw())
    body[64 + 6] = 0  # control flags: Valid cleared -> a table with nothing in it
    t = parse_nbft(fix_checksum(body))
    assert t.host is None and t.subsystems == ()


def test_invalid_descriptors_are_skipped_silently() -> None:
    t = full_table()
    t.hfis[1].valid = False
    t.discoveries[1].valid = False
    t.subsystems[0].valid = False
    t.subsystems[1].hfi = 1  # its HFI 2 is now invalid
    p = parse_nbft(raw(t))
    assert [h.index for h in p.hfis] == [1]
    assert [d.index for d in p.discoveries] == [1]
    assert [s.index for s in p.subsystems] == [2]
    assert p.problems == ()


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b[:100], "shorter than its header"),
        (lambda b: b"NBFX" + b[4:], "signature b'NBFX'"),
        (lambda b: b[:4] + struct.pack("<I", len(b) + 1) + b[8:], "does not fit"),
        (lambda b: b[:8] + bytes([2]) + b[9:], "major revision 2"),
        (lambda b: b[:64] + bytes([9]) + b[65:], "control descriptor: structure ID 9"),
        (lambda b: b[:128] + bytes([7]) + b[129:], "host descriptor: structure ID 7"),
        (lambda b: b[:129] + bytes([0]) + b[130:], "host descriptor: Valid flag not set"),
        (lambda b: b[:36] + struct.pack("<I", 1 << 20) + b[40:], "heap at"),
        (lambda b: b[:80] + struct.pack("<I", 10_000) + b[84:], "hfi descriptor list"),
        (lambda b: b[:84] + struct.pack("<H", 4) + b[86:], "hfi descriptor length 4"),
    ],
)
def test_table_errors_name_the_field(mutate, message) -> None:
    with pytest.raises(NbftError, match=message.replace("(", r"\(")):
        parse_nbft(fix_checksum(mutate(raw())))


def test_checksum_is_checked() -> None:
    body = bytearray(raw())
    body[200] ^= 0x55
    with pytest.raises(NbftError, match="checksum"):
        parse_nbft(bytes(body))


def test_host_nqn_is_validated() -> None:
    with pytest.raises(NbftError, match="host NQN"):
        parse_nbft(raw(gen.Table(hostnqn="not-an-nqn")))
    with pytest.raises(NbftError, match="host NQN"):
        parse_nbft(raw(gen.Table(hostnqn="nqn.x,traddr=evil")))


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda t: setattr(t.subsystems[0], "trsvcid", "http"), "'http' is not a TCP port"),
        (lambda t: setattr(t.subsystems[0], "nqn", "nqn.x,y=z"), "SSNS descriptor 1: NQN"),
        (lambda t: setattr(t.subsystems[0], "hfi", 9), "primary HFI 9 is not in the table"),
        (lambda t: setattr(t.discoveries[0], "uri", "http://1.2.3.4/"), "scheme is not"),
        (lambda t: setattr(t.discoveries[0], "uri", "nvme+tcp://dc.example/"), "not an IP"),
        (lambda t: setattr(t.discoveries[0], "uri", "nvme+tcp://1.2.3.4:99999/"), "out of range"),
        (lambda t: setattr(t.discoveries[0], "uri", ""), "no URI"),
        (lambda t: setattr(t.hfis[0], "prefix", 33), "subnet prefix /33"),
        (lambda t: setattr(t.hfis[0], "mac", "0:0:0:0:0:0"), "MAC address is zero"),
        (lambda t: setattr(t.hfis[0], "host_name", "bad\x01name"), "not printable ASCII"),
    ],
)
def test_bad_descriptor_is_skipped_and_named(change, problem) -> None:
    t = full_table()
    change(t)
    p = parse_nbft(raw(t))
    assert any(problem in text for text in p.problems), p.problems
    total = len(p.hfis) + len(p.subsystems) + len(p.discoveries)
    assert total < 2 + 2 + 2  # exactly the bad one (and what needs it) went


def test_heap_reference_outside_the_heap_skips_the_descriptor() -> None:
    body = bytearray(raw())
    disco = struct.unpack_from("<I", body, 64 + 40)[0]
    struct.pack_into("<I", body, disco + 6, 70)  # URI "in" the control descriptor
    p = parse_nbft(fix_checksum(body))
    assert [d.index for d in p.discoveries] == [2]
    assert "discovery descriptor 1: URI: heap object at 70+" in p.problems[0]


def test_unknown_secondary_hfi_is_dropped_with_a_problem() -> None:
    t = full_table()
    t.subsystems[0].secondary_hfis = (2, 7, 0)
    p = parse_nbft(raw(t))
    assert p.subsystems[0].hfi_indexes == (1, 2)
    assert p.problems == ("SSNS descriptor 1: secondary HFI 7 is not in the table; ignored",)


@pytest.mark.parametrize(
    ("uri", "want"),
    [
        ("nvme+tcp://10.0.0.1:4420/", ("tcp", "10.0.0.1", "4420")),
        ("NVME+TCP://[FD00::1]:8009/", ("tcp", "fd00::1", "8009")),
        ("nvme+tcp://[::ffff:10.1.1.1]/", ("tcp", "10.1.1.1", "")),
        ("nvme+rdma://10.0.0.1", ("rdma", "10.0.0.1", "")),
    ],
)
def test_parse_uri(uri: str, want: tuple[str, str, str]) -> None:
    assert parse_uri(uri) == want


@pytest.mark.parametrize(
    "uri", ["nvme+fc://1.2.3.4/", "nvme://1.2.3.4/", "nvme+tcp://[::1/", "nvme+tcp://1.2.3.4:0/"]
)
def test_parse_uri_rejects(uri: str) -> None:
    with pytest.raises(NbftError, match="discovery URI"):
        parse_uri(uri)


def test_read_tables(tmp_path) -> None:
    (tmp_path / "NBFT").write_bytes(raw())
    (tmp_path / "NBFT1").write_bytes(b"NBFT" + bytes(10))
    (tmp_path / "DSDT").write_bytes(b"ignored")
    tables, errors = read_tables(tmp_path)
    assert list(tables) == [str(tmp_path / "NBFT")]
    assert errors == [
        f"{tmp_path / 'NBFT1'}: table is 14 bytes, shorter than its header "
        "and control descriptor (128)"
    ]
    assert read_tables(tmp_path / "missing") == ({}, [])


def _check(data: bytes) -> None:
    try:
        got = parse_nbft(data)
    except NbftError as exc:
        assert str(exc)
    else:
        assert isinstance(got, Nbft)


@given(st.binary(max_size=600))
def test_any_bytes(data: bytes) -> None:
    _check(data)
    _check(fix_checksum(b"NBFT" + data[4:]) if len(data) >= 10 else data)


VALID = raw()


@given(st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), max_size=12))
def test_any_corruption_of_a_valid_table(edits: list[tuple[int, int]]) -> None:
    body = bytearray(VALID)
    for pos, value in edits:
        body[pos] = value
    _check(bytes(body))
    _check(fix_checksum(body) if struct.unpack_from("<I", body, 4)[0] <= len(body) else body)


@given(st.integers(0, len(VALID)))
def test_any_truncation(n: int) -> None:
    _check(VALID[:n])
