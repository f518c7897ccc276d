"""TP8009 TXT parsing and candidate building: RFC 6763 rules, hostile input, NQN safety."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stas.mdns_txt import (
    MAX_STRINGS,
    Rejected,
    TxtResult,
    encode_txt_rdata,
    nqn_problem,
    parse_txt,
    service_to_candidate,
    show,
    split_txt_rdata,
)
from stas.messages import WELL_KNOWN_DISC_NQN, Tid
from stas.nvme.errors import ProtocolError

SFSS_NQN = "nqn.1988-11.com.dell:SFSS:2:20220208134025e8"


def cand(records: list[bytes], **kw: object) -> Tid | Rejected:
    args: dict = {"address": "192.168.1.10", "port": 8009, "iface": "eth0"} | kw
    return service_to_candidate(parse_txt(records), **args)


# --- parse_txt ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("records", "expected"),
    [
        ([b"p=tcp"], {"p": b"tcp"}),
        ([b"P=TCP"], {"p": b"TCP"}),  # keys are case-insensitive, values are not touched
        ([b"NQN=" + SFSS_NQN.encode()], {"nqn": SFSS_NQN.encode()}),
        ([b"p=tcp", b"P=rdma", b"p=x"], {"p": b"tcp"}),  # first occurrence wins
        ([b"secure"], {"secure": None}),  # boolean attribute
        ([b"empty="], {"empty": b""}),  # present with an empty value
        ([b"k=a=b=c"], {"k": b"a=b=c"}),  # a value may contain '='
        ([b"=novalue", b"", b"p=tcp"], {"p": b"tcp"}),  # no key: ignored (RFC 6763 6.4)
        ([b"k\x00ey=1", b"k\xffy=2", b"p=tcp"], {"p": b"tcp"}),  # non-printable key ignored
        ([b"v=\x00\xff"], {"v": b"\x00\xff"}),  # values are opaque bytes
    ],
)
def test_parse_txt_rfc6763(records: list[bytes], expected: dict) -> None:
    result = parse_txt(records)
    assert result.problem is None
    assert dict(result.values) == expected


def test_parse_txt_counts_ignored_strings() -> None:
    assert parse_txt([b"=x", b"", b"p=tcp"]).ignored == 2


@pytest.mark.parametrize(
    ("records", "fragment"),
    [
        ([b"k=v"] * (MAX_STRINGS + 1), "strings (limit 256)"),
        ([b"k=" + b"v" * 300], "TXT string of 302 bytes"),
        ([b"k%d=" % i + b"v" * 240 for i in range(40)], "limit 8900"),
    ],
)
def test_parse_txt_rejects_oversized_records(records: list[bytes], fragment: str) -> None:
    result = parse_txt(records)
    assert result.values == {}
    assert fragment in (result.problem or "")
    assert isinstance(service_to_candidate(result, address="1.2.3.4", port=1, iface=""), Rejected)


# --- service_to_candidate ------------------------------------------------------------------------


def test_tcp_candidate_with_nqn_as_sfss_sends_it() -> None:
    assert cand([b"p=tcp", b"NQN=" + SFSS_NQN.encode()]) == Tid(
        transport="tcp",
        traddr="192.168.1.10",
        trsvcid="8009",
        subsysnqn=SFSS_NQN,
        host_iface="eth0",
    )


@pytest.mark.parametrize(
    ("p", "transport", "host_iface"),
    [(b"tcp", "tcp", "eth0"), (b"TCP", "tcp", "eth0"), (b"roce", "rdma", ""),
     (b"iWARP", "rdma", ""), (b"rdma", "rdma", ""), (b" tcp ", "tcp", "eth0")],
)  # fmt: skip
def test_protocol_mapping(p: bytes, transport: str, host_iface: str) -> None:
    tid = cand([b"p=" + p])
    assert isinstance(tid, Tid)
    assert (tid.transport, tid.host_iface, tid.subsysnqn) == (
        transport,
        host_iface,
        WELL_KNOWN_DISC_NQN,
    )


@pytest.mark.parametrize(
    ("records", "reason"),
    [
        ([b"nqn=" + SFSS_NQN.encode()], "TXT record has no 'p=' (protocol) key"),
        ([b"p"], "TXT key 'p' has no value"),
        ([b"p=walmart"], "unsupported protocol p='walmart' (expected tcp, roce, iwarp or rdma)"),
        ([b"p=fc"], "unsupported protocol p='fc' (expected tcp, roce, iwarp or rdma)"),
        ([b"p=tc\x00p\n"],
         "unsupported protocol p='tc\\x00p\\x0a' (expected tcp, roce, iwarp or rdma)"),
    ],
)  # fmt: skip
def test_bad_protocol_is_rejected_with_the_value(records: list[bytes], reason: str) -> None:
    assert cand(records) == Rejected(reason)


@pytest.mark.parametrize(
    ("nqn", "fragment"),
    [
        (b"nqn.2014-08.org.example:a=b", "contains '='"),
        (b"nqn.2014-08.org.example:a,hostnqn=evil", "contains ','"),
        (b"nqn.2014-08.org.example:a;b", "contains ';'"),
        (b"nqn.2014-08.org.example:a b", "space or non-ASCII byte (0x20)"),
        (b"nqn.2014-08.org.example:a\nctrl_loss_tmo=0", "(0x0a)"),
        (b"nqn.2014-08.org.example:\xc3\xa9", "(0xc3)"),
        (b"iqn.2014-08.org.example", "does not start with 'nqn.'"),
        (b"nqn." + b"a" * 220, "nqn of 224 bytes exceeds 223"),
    ],
)
def test_unsafe_nqn_is_rejected(nqn: bytes, fragment: str) -> None:
    result = cand([b"p=tcp", b"nqn=" + nqn])
    assert isinstance(result, Rejected)
    assert fragment in result.reason
    assert "\n" not in result.reason


def test_nqn_of_223_bytes_is_accepted() -> None:
    nqn = b"nqn." + b"a" * 219
    assert nqn_problem(nqn) is None
    tid = cand([b"p=tcp", b"nqn=" + nqn])
    assert isinstance(tid, Tid)
    assert tid.subsysnqn == nqn.decode()


@pytest.mark.parametrize("records", [[b"p=tcp", b"nqn="], [b"p=tcp", b"nqn"]])
def test_empty_or_boolean_nqn_means_well_known(records: list[bytes]) -> None:
    tid = cand(records)
    assert isinstance(tid, Tid)
    assert tid.subsysnqn == WELL_KNOWN_DISC_NQN


def test_nqn_ignored_without_tp8013() -> None:
    tid = cand([b"p=tcp", b"nqn=" + SFSS_NQN.encode()], kernel_supports_tp8013=False)
    assert isinstance(tid, Tid)
    assert tid.subsysnqn == WELL_KNOWN_DISC_NQN
    # not even a hostile one matters when it is not used
    tid = cand([b"p=tcp", b"nqn=nqn.x,y=z"], kernel_supports_tp8013=False)
    assert isinstance(tid, Tid)


@pytest.mark.parametrize(
    ("address", "iface", "traddr", "host_iface"),
    [
        ("::ffff:10.0.0.5", "eth0", "10.0.0.5", "eth0"),  # IPv4-mapped -> IPv4
        ("fe80::1%eth1", "eth1", "fe80::1", "eth1"),  # zone dropped, iface kept
        ("FE80::0:1", "eth1", "fe80::1", "eth1"),  # canonical form
        ("2001:db8::7", "", "2001:db8::7", ""),  # routed: no interface known
        (" 10.0.0.1 ", "eth0", "10.0.0.1", "eth0"),  # stripped like upstream
    ],
)
def test_addresses(address: str, iface: str, traddr: str, host_iface: str) -> None:
    tid = cand([b"p=tcp"], address=address, iface=iface)
    assert isinstance(tid, Tid)
    assert (tid.traddr, tid.host_iface) == (traddr, host_iface)


@pytest.mark.parametrize(
    ("address", "port", "fragment"),
    [
        ("not-an-ip", 8009, "address 'not-an-ip' is not an IP address"),
        ("0.0.0.0", 8009, "address 0.0.0.0 cannot be"),
        ("::", 8009, "address :: cannot be"),
        ("224.0.0.251", 8009, "cannot be a discovery controller"),
        ("fe80::1", 8009, "link-local address fe80::1 without a known interface"),
        ("10.0.0.1", 0, "port 0 is outside 1..65535"),
        ("10.0.0.1", 65536, "port 65536 is outside 1..65535"),
    ],
)
def test_bad_address_or_port(address: str, port: int, fragment: str) -> None:
    result = cand([b"p=tcp"], address=address, port=port, iface="")
    assert isinstance(result, Rejected)
    assert fragment in result.reason


def test_show_escapes_and_truncates() -> None:
    assert show(b"a\nb'\\") == "'a\\x0ab\\x27\\x5c'"
    assert show(b"x" * 50, limit=4) == "'xxxx'..."


# --- TXT RDATA framing ---------------------------------------------------------------------------


def test_split_txt_rdata() -> None:
    assert split_txt_rdata(b"\x05p=tcp\x00\x03a=b") == [b"p=tcp", b"", b"a=b"]
    assert split_txt_rdata(b"") == []
    with pytest.raises(ProtocolError, match="claims 9 bytes, 2 remain"):
        split_txt_rdata(b"\x09ab")


@given(st.lists(st.binary(max_size=255), max_size=40))
def test_rdata_round_trip(records: list[bytes]) -> None:
    assert split_txt_rdata(encode_txt_rdata(records)) == records


@given(st.binary(max_size=2000))
def test_arbitrary_rdata_is_a_list_or_protocol_error(data: bytes) -> None:
    try:
        records = split_txt_rdata(data)
    except ProtocolError:
        return
    assert encode_txt_rdata(records) == data


@given(
    st.lists(st.binary(max_size=300), max_size=300),
    st.text(max_size=60),
    st.integers(min_value=-5, max_value=70000),
    st.booleans(),
)
def test_arbitrary_records_never_raise(
    records: list[bytes], address: str, port: int, tp8013: bool
) -> None:
    txt = parse_txt(records)
    assert isinstance(txt, TxtResult)
    assert all(k == k.lower() and "=" not in k for k in txt.values)
    result = service_to_candidate(
        txt, address=address, port=port, iface="eth0", kernel_supports_tp8013=tp8013
    )
    assert isinstance(result, Tid | Rejected)
    if isinstance(result, Tid):
        for value in (result.traddr, result.subsysnqn):
            assert not any(c in value for c in ",=; \n\x00")


@given(
    st.dictionaries(
        st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="="),
                min_size=1, max_size=9),
        st.one_of(st.none(), st.binary(max_size=40)),
        max_size=20,
    )
)  # fmt: skip
def test_parse_txt_round_trip(values: dict[str, bytes | None]) -> None:
    records, expected = [], {}
    for key, value in values.items():
        records.append(key.encode() if value is None else key.encode() + b"=" + value)
        expected.setdefault(key.lower(), value)
    assert dict(parse_txt(records).values) == expected
